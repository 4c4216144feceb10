r"""Fine-tunes a text classifier on an exported checkpoint and reports its held-out accuracy.

    python -m launch.finetune_classifier --write_sample_csv=workspace/sources.csv
    python -m launch.finetune_classifier --export=workspace/exports/quickstart/1500 \
        --csv=workspace/sources.csv --learning_rate=2e-4 --epochs=5

The sample CSV is real text from this project: every sentence of the docstrings in data_pipeline/
and pretrain/, labelled with its package, so the task is to tell which part of the code a sentence
documents. Any CSV with a header row `text,label` works. Rows are split into train and held-out
sets by --eval_fraction (seeded), unless --eval_csv gives the held-out rows.

The model (`downstream.classifier.finetune_classifier`) is the export loaded by
`downstream.build_transformer_model(..., with_pool=True)`, dropout and a softmax layer, all
trained with Adam: the code a bert4keras user writes. The script prints held-out accuracy next to
the majority-class baseline; --from_scratch trains the same network from
random weights, which shows what the pretrained weights are worth. With an export of the
quickstart run (1500 steps) and the command above, expect about 0.8 held-out accuracy (0.76-0.86
over seeds 0-4) against 0.76 from random weights, and a majority baseline of 0.44-0.61 depending
on the split; each run takes about 10 s on a 2-core CPU. The defaults (lr 5e-5, 3 epochs) are the
usual ones for BERT-base-sized models, too gentle for the tiny quickstart model.
--adversarial_epsilon=0.5 adds FGM adversarial training on the word embeddings
(`downstream.adversarial`, bert4keras's one-liner): each step then costs about twice as much. The
value is the norm of the whole perturbation: bert4keras's 0.5-1 suit BERT-base; the tiny
quickstart model learns with 0.05 and stays at the majority baseline with 0.2.
To fine-tune with transformers 5 (PyTorch) instead, export with `launch.export --format=hf` and
load its hf/ directory with AutoModelForSequenceClassification (docs/downstream.md has the code).
"""

import json
import random
import sys

from absl import app, flags, logging

from downstream import classifier
from launch import common

FLAGS = flags.FLAGS
flags.DEFINE_string("export", None, "Export directory (bert_config.json, bert_model.ckpt, vocab).")
flags.DEFINE_string("csv", None, "Training CSV with a header row: text,label.")
flags.DEFINE_string("eval_csv", None, "Held-out CSV (default: --eval_fraction of --csv).")
flags.DEFINE_float("eval_fraction", 0.2, "Share of --csv rows held out when there is no --eval_csv.")
flags.DEFINE_string("write_sample_csv", None, "Write the project's sample CSV to this path first.")
flags.DEFINE_integer("max_len", 64, "Tokens per text, [CLS] and [SEP] included.")
flags.DEFINE_integer("epochs", 3, "Passes over the training rows.")
flags.DEFINE_integer("batch_size", 16, "Rows per update.")
flags.DEFINE_float("learning_rate", 5e-5, "Adam learning rate (BERT fine-tuning: 2e-5 to 5e-5).")
flags.DEFINE_float("dropout", 0.1, "Dropout before the classification layer.")
flags.DEFINE_integer("seed", 0, "Seed of the split, the new layer and dropout.")
flags.DEFINE_bool("from_scratch", False, "Random weights instead of the export's (a baseline).")
flags.DEFINE_string("metrics_json", None, "Also write the results to this JSON file.")
flags.DEFINE_float("adversarial_epsilon", 0.0, "FGM adversarial training on the word embeddings with "
                   "this perturbation norm (downstream.adversarial; bert4keras's examples: 0.5-1); 0: off.")



def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if FLAGS.write_sample_csv:
        rows = classifier.sample_rows()
        classifier.write_csv(FLAGS.write_sample_csv, rows)
        print("wrote %d rows to %s" % (len(rows), FLAGS.write_sample_csv), file=sys.stderr)
        if not FLAGS.export:
            return 0
    if not FLAGS.export or not (FLAGS.csv or FLAGS.write_sample_csv):
        print("finetune_classifier: error: give --export and --csv (or --write_sample_csv).", file=sys.stderr)
        return 2
    common.import_tensorflow(FLAGS.verbose)
    from pretrain.google_checkpoint import CheckpointError

    try:
        rows = classifier.read_csv(FLAGS.csv or FLAGS.write_sample_csv)
        if FLAGS.eval_csv:
            train_rows, eval_rows = rows, classifier.read_csv(FLAGS.eval_csv)
        else:
            random.Random(FLAGS.seed).shuffle(rows)
            held = max(1, int(len(rows) * FLAGS.eval_fraction))
            train_rows, eval_rows = rows[held:], rows[:held]
        result = classifier.finetune_classifier(
            FLAGS.export, train_rows, eval_rows, max_len=FLAGS.max_len, epochs=FLAGS.epochs,
            batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate, dropout=FLAGS.dropout,
            seed=FLAGS.seed, from_scratch=FLAGS.from_scratch,
            adversarial_epsilon=FLAGS.adversarial_epsilon,
            log=lambda text: print(text, file=sys.stderr, flush=True))
    except (ValueError, CheckpointError, OSError) as e:
        print("finetune_classifier: error: %s" % e, file=sys.stderr)
        return 2
    print("held-out accuracy %.3f on %d rows (majority-class baseline %.3f)"
          % (result["accuracy"], result["eval_rows"], result["baseline"]))
    if FLAGS.metrics_json:
        with open(FLAGS.metrics_json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    app.run(main)
