r"""Fine-tunes a UniLM seq2seq model on JSON-lines pairs, saves it as an export and scores it.

    python -m launch.finetune_seq2seq --write_sample_data=workspace/pairs
    python -m launch.finetune_seq2seq --export=workspace/exports/quickstart/1500 \
        --train=workspace/pairs/train.jsonl --eval=workspace/pairs/eval.jsonl \
        --source_field=source --target_field=target --output=workspace/exports/titles/1 \
        --epochs=20 --learning_rate=1e-3

Each line of --train/--eval is a JSON object with the two fields (title generation: the article and
its title; seq2seq QA: passage and question in the source, the answer as target; question
generation: passage -> question). Rows are `[CLS] source [SEP] target [SEP]`; the loss covers the
target tokens only (`downstream.seq2seq`), with Adam, and --adversarial_epsilon adds FGM on the word
embeddings. The trained weights are saved in Google's layout at --output (what `launch.generate`
and `build_transformer_model` read), then the eval sources are decoded (--strategy) and scored
with ROUGE-1/2/L and BLEU (`downstream.text_metrics`: characters for Chinese, words for English)
next to the lead-N baseline (the source's first N units, N the mean target length).

The sample pairs (--write_sample_data) are real text from this project: the rest of each
document of the quickstart corpus -> its first sentence, a title-generation-like task.
"""

import json
import random
import sys

from absl import app, flags, logging

from data_pipeline import sample_corpus
from launch import common
from pretrain import run_config

FLAGS = flags.FLAGS
flags.DEFINE_string("export", None, "Export directory to start from (bert_config.json, bert_model.ckpt, vocab).")
flags.DEFINE_string("train", None, "Training pairs, JSON lines.")
flags.DEFINE_string("eval", None, "Held-out pairs, JSON lines: decoded and scored after training.")
flags.DEFINE_string("source_field", "source", "JSON field of the source text.")
flags.DEFINE_string("target_field", "target", "JSON field of the target text.")
flags.DEFINE_string("output", None, "Where to save the fine-tuned export (a new directory).")
flags.DEFINE_string("write_sample_data", None, "Write the project's sample pairs (train.jsonl, "
                    "eval.jsonl) to this directory first.")
flags.DEFINE_integer("max_source_len", 64, "Source tokens kept (without [CLS]/[SEP]).")
flags.DEFINE_integer("max_target_len", 32, "Target tokens kept (without [SEP]); also the most decoded.")
flags.DEFINE_integer("epochs", 3, "Passes over the training pairs.")
flags.DEFINE_integer("batch_size", 16, "Pairs per update.")
flags.DEFINE_float("learning_rate", 2e-5, "Adam learning rate (BERT-base: 1e-5 to 5e-5; tiny models more).")
flags.DEFINE_float("adversarial_epsilon", 0.0, "FGM perturbation norm on the word embeddings; 0: off.")
flags.DEFINE_enum("strategy", "greedy", ["greedy", "beam"], "How the eval targets are decoded.")
flags.DEFINE_integer("beam_size", 4, "Beams for --strategy=beam.")
flags.DEFINE_integer("seed", 0, "Seed of the new weights' dropout and the data order.")
flags.DEFINE_string("metrics_json", None, "Also write the results to this JSON file.")
# Every numeric flag, checked before TensorFlow loads: a bad one must not cost a training run.
RULES = {"max_source_len": run_config._int(1), "max_target_len": run_config._int(1),
         "epochs": run_config._int(1), "batch_size": run_config._int(1),
         "learning_rate": run_config._float(0.0, low_open=True),
         "adversarial_epsilon": run_config._float(0.0), "beam_size": run_config._int(1)}


def write_sample_data(directory, eval_fraction=0.1, seed=0):
    """train.jsonl / eval.jsonl of the project's sample pairs; returns their paths."""
    import os

    records = sample_corpus.seq2seq_records()
    random.Random(seed).shuffle(records)
    held = max(1, int(len(records) * eval_fraction))
    os.makedirs(directory, exist_ok=True)
    paths = [os.path.join(directory, name) for name in ("train.jsonl", "eval.jsonl")]
    sample_corpus.write_jsonl(paths[0], records[held:])
    sample_corpus.write_jsonl(paths[1], records[:held])
    return paths


def pairs_of(path, source_field, target_field):
    return [(r[source_field], r[target_field]) for _, r in common.read_jsonl(path, (source_field, target_field))]


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if FLAGS.write_sample_data:
        paths = write_sample_data(FLAGS.write_sample_data)
        print("wrote %s and %s" % tuple(paths), file=sys.stderr)
        if not FLAGS.export:
            return 0
    missing = [f for f in ("export", "train", "eval", "output") if not getattr(FLAGS, f)]
    problem = common.flag_problems(RULES) or (missing and "give %s." % ", ".join("--" + f for f in missing))
    if problem:
        print("finetune_seq2seq: error: %s" % problem, file=sys.stderr)
        return 2
    common.import_tensorflow(FLAGS.verbose)
    from downstream import seq2seq
    from pretrain.export import ExportError
    from pretrain.google_checkpoint import CheckpointError

    try:
        train = pairs_of(FLAGS.train, FLAGS.source_field, FLAGS.target_field)
        held = pairs_of(FLAGS.eval, FLAGS.source_field, FLAGS.target_field)
        result = seq2seq.finetune(FLAGS.export, train, held, FLAGS.output, FLAGS.max_source_len,
                          FLAGS.max_target_len, FLAGS.epochs, FLAGS.batch_size, FLAGS.learning_rate,
                          FLAGS.adversarial_epsilon, FLAGS.strategy, FLAGS.beam_size, FLAGS.seed,
                          command=" ".join([sys.executable, "-m", "launch.finetune_seq2seq"] + sys.argv[1:]),
                          log=lambda text: print(text, file=sys.stderr, flush=True))
    except (ValueError, CheckpointError, ExportError, OSError) as e:
        print("finetune_seq2seq: error: %s" % e, file=sys.stderr)
        return 2
    m, lead = result["model"], result["lead"]
    print("eval (%d pairs, %s): ROUGE-1 %.2f ROUGE-2 %.2f ROUGE-L %.2f BLEU %.2f | lead-%d baseline: "
          "ROUGE-1 %.2f ROUGE-2 %.2f ROUGE-L %.2f BLEU %.2f" % (
              result["eval_pairs"], result["strategy"], m["rouge1"], m["rouge2"], m["rougeL"], m["bleu"],
              result["lead_n"], lead["rouge1"], lead["rouge2"], lead["rougeL"], lead["bleu"]))
    print("saved to %s" % result["output"])
    if FLAGS.metrics_json:
        with open(FLAGS.metrics_json, "w") as f:
            json.dump(result, f, indent=2, ensure_ascii=False)
    return 0


if __name__ == "__main__":
    app.run(main)
