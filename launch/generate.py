r"""Generates text from a UniLM or LM export for every line of a JSON-lines file (or, from a SimBERT
export, paraphrases ranked by similarity).

    python -m launch.generate --export=workspace/exports/titles/1 --application=unilm \
        --input=articles.jsonl --source_field=text --output=titles.jsonl --strategy=beam --beam_size=4
    python -m launch.generate --export=DIR --application=lm --input=prompts.jsonl --output=out.jsonl \
        --strategy=sample --top_p=0.9 --temperature=0.8 --num_samples=5 --seed=1
    python -m launch.generate --export=workspace/exports/simbert/1 --mode=synonyms \
        --input=questions.jsonl --output=paraphrases.jsonl --num_samples=100 --synonyms=20

Output: one JSON line per input record, in input order: {"line": input line number, "generated":
text, "score": sum of token log-probs (beam: divided by length ** --length_penalty), "finished":
ended with [SEP] (else cut at --max_len)}, plus "samples" (every sample, best first) when
--num_samples > 1. --mode=synonyms writes {"line", "text", "synonyms": [{"text", "similarity"}]}.

UniLM prefixes are `[CLS] source [SEP]`; LM prefixes are `[SEP] source` (a document start in the LM
training stream) and generation continues the text. Both stop at [SEP] or --max_len new tokens.
A line that is not JSON or lacks --source_field, a source longer than the model's positions allow
(unless --max_source_len cuts it), an export without the MLM head: an error naming the line, and no
output is written.
"""

import contextlib
import json
import sys
import time

from absl import app, flags, logging

from launch import common
from pretrain import run_config
from storage import fs

FLAGS = flags.FLAGS
flags.DEFINE_string("export", None, "Export directory (bert_config.json, bert_model.ckpt, vocabulary).")
flags.DEFINE_enum("application", "unilm", ["unilm", "lm"], "unilm: seq2seq from the source; lm: continue it.")
flags.DEFINE_enum("mode", "generate", ["generate", "synonyms"], "synonyms: SimBERT paraphrases.")
flags.DEFINE_string("input", None, "JSON lines, one source text per line.")
flags.DEFINE_string("source_field", "text", "The JSON field holding the source text.")
flags.DEFINE_string("output", None, "Where to write the JSON-lines results.")
flags.DEFINE_enum("strategy", "greedy", ["greedy", "beam", "sample"], "Decoding strategy.")
flags.DEFINE_integer("beam_size", 4, "Beams per input (--strategy=beam).")
flags.DEFINE_integer("top_k", 0, "Sample from the k most probable tokens only; 0: all (synonyms: 5).")
flags.DEFINE_float("top_p", 1.0, "Sample from the smallest set of tokens holding this mass; 1: all.")
flags.DEFINE_float("temperature", 1.0, "Logits are divided by it before softmax.")
flags.DEFINE_integer("num_samples", 1, "Samples per input (--strategy=sample; synonyms: 100).")
flags.DEFINE_integer("synonyms", 20, "Paraphrases kept per input (--mode=synonyms).")
flags.DEFINE_integer("max_len", 32, "The most tokens generated per input.")
flags.DEFINE_integer("min_len", 0, "[SEP] cannot end a sequence before this many tokens.")
flags.DEFINE_integer("min_ends", 1, "[SEP]s a finished sequence holds (e.g. 2: question [SEP] answer [SEP]).")
flags.DEFINE_float("length_penalty", 0.0, "Beam scores are divided by length ** this.")
flags.DEFINE_integer("max_source_len", 0, "Cut sources to this many tokens; 0: never cut (too long is an error).")
flags.DEFINE_integer("seed", 0, "Sampling seed.")
flags.DEFINE_integer("batch_size", 16, "Inputs decoded together (beam: each of --beam_size rows); "
                     "sampling and synonyms: (input, sample) rows, so that memory does not grow with "
                     "--num_samples.")
flags.DEFINE_bool("jit_compile", False, "Compile the decoding loop with XLA (faster per token, seconds "
                  "of compilation per batch shape).")


# Every numeric flag, checked before anything is loaded (a --top_p of 1.5 or 0 is a mistake, not 1).
RULES = {"beam_size": run_config._int(1), "top_k": run_config._int(0),
         "top_p": run_config._float(0.0, 1.0, low_open=True),
         "temperature": run_config._float(0.0, low_open=True), "num_samples": run_config._int(1),
         "synonyms": run_config._int(1), "max_len": run_config._int(1), "min_len": run_config._int(0),
         "min_ends": run_config._int(1), "max_source_len": run_config._int(0),
         "batch_size": run_config._int(1)}
# A progress line on stderr at most this often (a short job prints none).
PROGRESS_SECONDS = 30.0
# Sequences held before their records are written: bounds memory whatever the input count.
HELD = 1024


def check_export(manifest):
    """Refuses --mode=synonyms on an export that is not a SimBERT one with a trained pooler, and
    warns when --mode=generate is asked of an MLM-only export (`manifest`: its `ExportManifest`;
    None for a Google release, taken as it is)."""
    if manifest is None:
        return
    task, pooler = manifest.task, manifest.heads.get("pooler_trained")
    if FLAGS.mode == "synonyms" and (task != "simbert" or not pooler):
        raise ValueError("--mode=synonyms needs a SimBERT export with a trained pooler, but %s was "
                         "exported from a %s run (pooler trained: %s): its similarities would rank "
                         "paraphrases at random. Export a run of configs/simbert_base.py."
                         % (FLAGS.export, task, bool(pooler)))
    if FLAGS.mode == "generate" and task == "mlm":
        print("generate: warning: %s is an MLM-only export (task mlm), neither an LM nor a UniLM: "
              "it was never trained to continue text, so what it generates will babble. Fine-tune "
              "it with launch.finetune_seq2seq, or pretrain with task unilm or lm." % FLAGS.export,
              file=sys.stderr)


def generate(export, records, path):
    """[(line, source)] -> the output records of --mode=generate from `export` (an `ExportDir`),
    in input order, made HELD sequences at a time."""
    from downstream.generation import load_decoder, prefixes

    decoder, tokenizer = load_decoder(export, FLAGS.application, max_len=FLAGS.max_len,
                                      min_len=FLAGS.min_len, jit_compile=FLAGS.jit_compile)
    inputs = prefixes(tokenizer, records, FLAGS.application, FLAGS.max_len, decoder.max_positions,
                      FLAGS.max_source_len, path)
    group = {"greedy": 1, "beam": FLAGS.beam_size, "sample": FLAGS.num_samples}[FLAGS.strategy]
    per_slice = max(1, HELD // group)
    report = _progress(len(inputs) * group)
    for start in range(0, len(inputs), per_slice):
        results = decoder.generate(inputs[start:start + per_slice], FLAGS.strategy,
                                   beam_size=FLAGS.beam_size, num_samples=FLAGS.num_samples,
                                   top_k=FLAGS.top_k or None,
                                   top_p=FLAGS.top_p if FLAGS.top_p < 1.0 else None,
                                   temperature=FLAGS.temperature, min_ends=FLAGS.min_ends,
                                   length_penalty=FLAGS.length_penalty, seed=FLAGS.seed,
                                   batch_size=FLAGS.batch_size,
                                   progress=lambda done, _: report(start * group + done))
        for (line, _), result in zip(records[start:start + per_slice], results):
            ranked = sorted(result, key=lambda g: -g.score) if isinstance(result, list) else [result]
            items = [{"generated": tokenizer.decode(g.ids), "score": round(g.score, 5),
                      "finished": g.finished} for g in ranked]
            record = dict(line=line, **items[0])
            if len(items) > 1:
                record["samples"] = items
            yield record


def _progress(total):
    """progress(sequences done): a line on stderr every PROGRESS_SECONDS of a long job."""
    start = last = time.time()

    def report(done):
        nonlocal last
        now = time.time()
        if now - last >= PROGRESS_SECONDS:
            last = now
            print("generate: %d/%d sequences (%.0f%%), %.1f/s" % (done, total, 100.0 * done / total,
                                                                  done / (now - start)),
                  file=sys.stderr, flush=True)
    return report


def synonyms(export, records):
    """[(line, text)] -> the output records of --mode=synonyms from `export` (an `ExportDir`)."""
    from downstream.simbert import SimBERT

    sampled = FLAGS["top_k"].present or FLAGS["top_p"].present
    simbert = SimBERT.from_export(export, max_len=FLAGS.max_len, jit_compile=FLAGS.jit_compile)
    for line, text in records:
        found = simbert.gen_synonyms(
            text, n=FLAGS.num_samples if FLAGS["num_samples"].present else 100, k=FLAGS.synonyms,
            top_k=(FLAGS.top_k or None) if sampled else 5, top_p=FLAGS.top_p if FLAGS.top_p < 1.0 else None,
            temperature=FLAGS.temperature, seed=FLAGS.seed, with_scores=True, batch_size=FLAGS.batch_size)
        yield {"line": line, "text": text,
               "synonyms": [{"text": t, "similarity": round(s, 5)} for t, s in found]}


@contextlib.contextmanager
def output_file(path):
    """`fs.atomic_writer(path)`, opened now: a missing or unwritable directory is one ValueError
    before the model loads, and a failure later leaves neither the file nor a temporary one."""
    with contextlib.ExitStack() as stack:
        try:
            f = stack.enter_context(fs.atomic_writer(path))
        except OSError as e:
            raise ValueError("cannot write --output=%s: %s." % (path, e.strerror or e)) from None
        yield f


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    missing = [f for f in ("export", "input", "output") if not getattr(FLAGS, f)]
    problems = [common.flag_problems(RULES)]
    if FLAGS.min_len > FLAGS.max_len:
        problems.append("--min_len=%d exceeds --max_len=%d: no sequence could end."
                        % (FLAGS.min_len, FLAGS.max_len))
    problem = "; ".join(p for p in problems if p)   # every bad flag at once, in one line
    if missing or problem:
        print("generate: error: %s" % (problem or "give %s." % ", ".join("--" + f for f in missing)),
              file=sys.stderr)
        return 2
    count = 0
    try:   # a bad input line fails here, before the model is loaded (CheckpointError is a ValueError)
        records = [(line, r[FLAGS.source_field])
                   for line, r in common.read_jsonl(FLAGS.input, (FLAGS.source_field,))]
        with output_file(FLAGS.output) as out:
            common.import_tensorflow(FLAGS.verbose)
            from pretrain.export_dir import ExportDir

            export = ExportDir(FLAGS.export)
            check_export(export.manifest)
            results = (synonyms(export, records) if FLAGS.mode == "synonyms"
                       else generate(export, records, FLAGS.input))
            for record in results:
                out.write((json.dumps(record, ensure_ascii=False) + "\n").encode("utf-8"))
                count += 1
    except (ValueError, OSError) as e:
        print("generate: error: %s" % e, file=sys.stderr)
        return 2
    print("wrote %d results to %s" % (count, FLAGS.output), file=sys.stderr)
    return 0


if __name__ == "__main__":
    app.run(main)
