r"""Exports a pretraining run as a Google BERT checkpoint directory for fine-tuning.

    python -m launch.export --workdir=workspace/runs/base --output=workspace/exports/base/100000
    python -m launch.export --workdir=gs://b/runs/base --output=gs://b/exports/base/ema --ema

Writes bert_config.json, bert_model.ckpt.{index,data-00000-of-00001} (Google's variable names),
the vocabulary and export_manifest.json; the latest checkpoint unless --step is given. Load it with
`pretrain.build_transformer_model(config, checkpoint)`, bert4keras, HF transformers' TF loader or
google-research/bert's run_classifier.py. Re-running the same command does nothing; an output
holding another export is refused. gs:// paths are checked first (`pretrain.gcs.preflight`).
"""

import sys

from absl import app, flags, logging

from launch import common

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The pretraining run (local or gs://).")
flags.DEFINE_string("output", None, "Export directory (local or gs://): new, empty, or holding this export.")
flags.DEFINE_integer("step", None, "Checkpoint step to export (default: the latest).")
flags.DEFINE_bool("ema", False, "Export the run's exponential moving average of the weights.")
flags.DEFINE_string("vocab", None, "The vocabulary file, when the path recorded in the data manifest "
                    "is not readable here (checked against the manifest's sha256).")
flags.mark_flags_as_required(["workdir", "output"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    import tensorflow as tf

    from pretrain import export, gcs
    from pretrain.google_checkpoint import CheckpointError

    def log(text):
        print(text, file=sys.stderr, flush=True)

    try:
        gcs.preflight(read=[FLAGS.workdir], write=[FLAGS.output])
        manifest = export.export(FLAGS.workdir, FLAGS.output, step=FLAGS.step, ema=FLAGS.ema,
                                 vocab=FLAGS.vocab, log=log)
    except (export.ExportError, gcs.GcsError, CheckpointError) as e:
        print("export: error: %s" % e, file=sys.stderr)
        return 2
    try:   # the run's log of what was done with it; the export is complete either way
        common.record_command(FLAGS.workdir, "launch.export")
    except (OSError, tf.errors.OpError) as e:
        print("export: note: could not record the command in %s (%s)" % (FLAGS.workdir, e), file=sys.stderr)
    for name, info in manifest["files"].items():
        print("  %-40s %12d bytes  sha256 %s" % (name, info["bytes"], info["sha256"][:16]))
    return 0


if __name__ == "__main__":
    app.run(main)
