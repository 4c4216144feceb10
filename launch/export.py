r"""Exports a pretraining run as a Google BERT checkpoint directory for fine-tuning.

    python -m launch.export --workdir=workspace/runs/base --output=workspace/exports/base/100000
    python -m launch.export --workdir=gs://b/runs/base --output=gs://b/exports/base/ema --ema
    python -m launch.export --workdir=workspace/runs/base --output=workspace/exports/base/4 \
        --format=google,hf
    python -m launch.export --workdir=workspace/runs/cased --output=workspace/exports/cased/4 \
        --format=keras_hub

Writes bert_config.json, bert_model.ckpt.{index,data-00000-of-00001} (Google's variable names),
the vocabulary and export_manifest.json; the latest checkpoint unless --step is given. Load it with
`downstream.build_transformer_model(config, checkpoint)`, bert4keras, HF transformers' TF loader or
google-research/bert's run_classifier.py. --format=google,hf (or --format=hf: the Google layout
is always written) adds OUTPUT/hf/, a directory transformers 5 loads (`from_pretrained`); a model
it cannot hold (factorized embeddings) is refused before anything is written. --format=keras_hub
adds OUTPUT/keras_hub/, a preset that `keras_hub.models.BertBackbone.from_preset`, `BertMaskedLM`
and `BertTokenizer` load (keras-hub 0.32); KerasHub's BERT holds only hidden_act=gelu_new models
with a cased WordPiece vocabulary, not causal-LM runs, and refuses the rest the same way. Re-running
the same command does nothing; an output holding another export is refused, and so is a second
export to an output while one writes it (a lock file .<output name>.lock beside it). gs:// paths
are checked first (`storage.gcs.preflight`).
"""

import sys

from absl import app, flags, logging

from launch import common

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "The pretraining run (local or gs://).")
flags.DEFINE_string("output", None, "Export directory (local or gs://): new, empty, or holding this export.")
flags.DEFINE_integer("step", None, "Checkpoint step to export (default: the latest).")
flags.DEFINE_bool("ema", False, "Export the run's exponential moving average of the weights.")
flags.DEFINE_string("vocab", None, "The vocabulary file, for runs from before the vocabulary was "
                    "copied into the run directory, when the one their data manifest names is not "
                    "readable here (checked against its sha256).")
flags.DEFINE_string("format", "google", "Comma-separated formats: google (always written, at the top "
                    "of --output), hf (a transformers directory in OUTPUT/hf/), sentence_transformers "
                    "(OUTPUT/hf/ loads as a SentenceTransformer too: SimBERT's vectors), keras_hub (a "
                    "KerasHub preset in OUTPUT/keras_hub/: hidden_act=gelu_new, cased WordPiece).")
flags.mark_flags_as_required(["workdir", "output"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from pretrain.rundir import RunDir
    from storage import fs

    if not fs.is_remote(FLAGS.workdir) and not fs.exists(RunDir(FLAGS.workdir).config):
        print("export: error: %s has no config.json: is it a pretraining run directory (the "
              "--workdir of `python -m launch.pretrain`)?" % FLAGS.workdir, file=sys.stderr)
        return 2
    tf = common.import_tensorflow(FLAGS.verbose)
    from pretrain import export
    from pretrain.google_checkpoint import CheckpointError
    from storage import gcs
    from storage.lock import LockError

    def log(text):
        print(text, file=sys.stderr, flush=True)

    try:
        gcs.preflight(read=[FLAGS.workdir], write=[FLAGS.output])
        with _output_lock(FLAGS.output):
            manifest = export.export(FLAGS.workdir, FLAGS.output, step=FLAGS.step, ema=FLAGS.ema,
                                     vocab=FLAGS.vocab, log=log, formats=FLAGS.format)
    except (export.ExportError, gcs.GcsError, CheckpointError, LockError) as e:
        print("export: error: %s" % e, file=sys.stderr)
        return 2
    try:   # the run's log of what was done with it; the export is complete either way
        common.record_command(FLAGS.workdir, "launch.export")
    except (OSError, tf.errors.OpError) as e:
        print("export: note: could not record the command in %s (%s)" % (FLAGS.workdir, e), file=sys.stderr)
    for name, info in manifest.files.items():
        print("  %-40s %12d bytes  sha256 %s" % (name, info["bytes"], info["sha256"][:16]))
    return 0


def _output_lock(output):
    """The lock of --output while exporting to it: two exports to one output would both write
    and race to publish. It is a file beside the output (the output itself stays empty until the
    export is renamed into place)."""
    from storage import fs
    from storage.lock import DirectoryLock

    output = output.rstrip("/")
    parent, name = output.rsplit("/", 1) if "/" in output else (".", output)
    return DirectoryLock(output, "launch.export", path=fs.join(parent, ".%s.lock" % name))


if __name__ == "__main__":
    app.run(main, flags_parser=common.parse_flags("export"))
