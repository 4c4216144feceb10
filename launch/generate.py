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

import json
import sys

from absl import app, flags, logging

from launch import common

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
flags.DEFINE_integer("batch_size", 16, "Inputs decoded together.")
flags.DEFINE_bool("jit_compile", False, "Compile the decoding loop with XLA (faster per token, seconds "
                  "of compilation per batch shape).")


def generate(records, path):
    """[(line, source)] -> the output records of --mode=generate."""
    from pretrain.generation import load_decoder, prefixes

    decoder, tokenizer = load_decoder(FLAGS.export, FLAGS.application, max_len=FLAGS.max_len,
                                      min_len=FLAGS.min_len, jit_compile=FLAGS.jit_compile)
    inputs = prefixes(tokenizer, records, FLAGS.application, FLAGS.max_len, decoder.max_positions,
                      FLAGS.max_source_len, path)
    results = decoder.generate(inputs, FLAGS.strategy, beam_size=FLAGS.beam_size,
                               num_samples=FLAGS.num_samples, top_k=FLAGS.top_k or None,
                               top_p=FLAGS.top_p if FLAGS.top_p < 1.0 else None,
                               temperature=FLAGS.temperature, min_ends=FLAGS.min_ends,
                               length_penalty=FLAGS.length_penalty, seed=FLAGS.seed,
                               batch_size=FLAGS.batch_size)
    out = []
    for (line, _), result in zip(records, results):
        ranked = sorted(result, key=lambda g: -g.score) if isinstance(result, list) else [result]
        items = [{"generated": tokenizer.decode(g.ids), "score": round(g.score, 5),
                  "finished": g.finished} for g in ranked]
        record = dict(line=line, **items[0])
        if len(items) > 1:
            record["samples"] = items
        out.append(record)
    return out


def synonyms(records):
    """[(line, text)] -> the output records of --mode=synonyms."""
    from pretrain.simbert import SimBERT

    sampled = FLAGS["top_k"].present or FLAGS["top_p"].present
    simbert = SimBERT.from_export(FLAGS.export, max_len=FLAGS.max_len, jit_compile=FLAGS.jit_compile)
    out = []
    for line, text in records:
        found = simbert.gen_synonyms(
            text, n=FLAGS.num_samples if FLAGS["num_samples"].present else 100, k=FLAGS.synonyms,
            top_k=(FLAGS.top_k or None) if sampled else 5, top_p=FLAGS.top_p if FLAGS.top_p < 1.0 else None,
            temperature=FLAGS.temperature, seed=FLAGS.seed, with_scores=True)
        out.append({"line": line, "text": text,
                    "synonyms": [{"text": t, "similarity": round(s, 5)} for t, s in found]})
    return out


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    missing = [f for f in ("export", "input", "output") if not getattr(FLAGS, f)]
    if missing:
        print("generate: error: give %s." % ", ".join("--" + f for f in missing), file=sys.stderr)
        return 2
    from storage import fs

    try:   # a bad input line fails here, before the model is loaded (CheckpointError is a ValueError)
        records = [(line, r[FLAGS.source_field])
                   for line, r in common.read_jsonl(FLAGS.input, (FLAGS.source_field,))]
        common.import_tensorflow(FLAGS.verbose)
        out = synonyms(records) if FLAGS.mode == "synonyms" else generate(records, FLAGS.input)
    except (ValueError, OSError) as e:
        print("generate: error: %s" % e, file=sys.stderr)
        return 2
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out)
    fs.write_bytes_atomic(FLAGS.output, text.encode("utf-8"))
    print("wrote %d results to %s" % (len(out), FLAGS.output), file=sys.stderr)
    return 0


if __name__ == "__main__":
    app.run(main)
