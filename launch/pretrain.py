r"""Pretrains a BERT-family model on shards built by `launch.build_data`.

    python -m launch.pretrain --config=configs/quickstart.py --workdir=workspace/runs/quick
    python -m launch.pretrain --config=configs/bert_base.py --config.data.train_dir=gs://b/data \
        --config.distribute.name=tpu --config.distribute.tpu=local --workdir=gs://b/runs/base

Any config field can be overridden with --config.a.b=value; every field is checked (names, types,
ranges) before TensorFlow loads. Re-running the same command resumes from the last checkpoint
(model, optimizer, step and data position). SIGTERM checkpoints and exits 0; Ctrl-C checkpoints
and exits 130 (a second Ctrl-C exits at once). Exit 2: bad config, data or workdir (e.g. another
run holds it); the message says which.
"""

import json
import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from launch import common
from storage import fs

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Experiment config file (configs/*.py).")
flags.DEFINE_string("workdir", None, "Run directory (local or gs://): checkpoints, metrics, TensorBoard.")
flags.DEFINE_bool("allow_config_change", False, "Continue a run in --workdir even though its "
                  "task/model/data/seed config differs.")
flags.DEFINE_bool("progress", True, "Print progress lines and a final summary.")
flags.DEFINE_bool("preflight", True, "Before building anything, check that gs:// buckets exist, "
                  "the data and init checkpoint can be read and the workdir written (seconds).")
flags.DEFINE_multi_string("probe", [], "A downstream probe, added to config.probes (repeatable): "
                          "NAME=TRAIN.csv,EVAL.csv[,KEY=VALUE...], KEY one of text, text_b, label, "
                          "max_len; e.g. sentiment=train.csv,eval.csv,text=review,max_len=96.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines drown the progress output
    # Everything that can be checked without TensorFlow is, first: a typo fails in a second.
    from pretrain import run_config
    try:
        if FLAGS.probe:
            FLAGS.config.probes = list(FLAGS.config.probes) + [run_config.probe_from_flag(p)
                                                                 for p in FLAGS.probe]
        config = run_config.parse(FLAGS.config)
    except (run_config.ConfigError, ValueError) as e:
        print("pretrain: error: %s" % e, file=sys.stderr)
        return 2
    from data_pipeline.manifest import Manifest, ManifestError
    if not config.data.train_dir:
        print("pretrain: error: config.data.train_dir is empty: pass "
              "--config.data.train_dir=<a directory built by launch.build_data>.", file=sys.stderr)
        return 2
    if not fs.is_remote(config.data.train_dir):
        try:
            Manifest.load(config.data.train_dir)
        except ManifestError as e:
            print("pretrain: error: %s" % e, file=sys.stderr)
            return 2
    if FLAGS.preflight:
        from storage import gcs
        try:
            gcs.preflight(read=[p for p in (config.data.train_dir, config.init_checkpoint) if p],
                          write=[FLAGS.workdir])
        except gcs.GcsError as e:
            print("pretrain: error: %s" % e, file=sys.stderr)
            return 2
    # The workdir's lock, before anything is built or written there: a second run on it is
    # refused in a second (not after its model is built), and leaves the holder's files alone.
    from storage.lock import DirectoryLock, LockError
    lock = None
    if _is_chief():
        try:
            lock = DirectoryLock(FLAGS.workdir, "launch.pretrain", log=_log).acquire()
        except LockError as e:
            print("pretrain: error: %s" % e, file=sys.stderr)
            return 2
        except OSError as e:
            print("pretrain: error: cannot write to --workdir=%s: %s" % (FLAGS.workdir, e.strerror or e),
                  file=sys.stderr)
            return 2
    try:
        return _train(config, lock)
    finally:
        if lock is not None:
            lock.release()


def _train(config, lock):
    if config.distribute.name == "tpu" and config.distribute.tpu not in ("", "local"):
        # A pod slice, driven from worker 0: this client must not take the local chips, which the
        # host's TPU runtime serves to the whole slice. TensorFlow reads this when it loads libtpu.
        os.environ.setdefault("TPU_LOAD_LIBRARY", "0")
    common.import_tensorflow(FLAGS.verbose)
    from data_pipeline.manifest import ManifestError
    from pretrain import distribute
    from pretrain.trainer import TrainError, Trainer

    try:
        trainer = Trainer(config, FLAGS.workdir, allow_config_change=FLAGS.allow_config_change,
                          progress=FLAGS.progress, lock=lock)
        if trainer.info.is_chief:
            common.record_command(FLAGS.workdir, "launch.pretrain")
        result = trainer.train()
    except (TrainError, ManifestError, distribute.StrategyError) as e:
        print("pretrain: error: %s" % e, file=sys.stderr)
        return 2
    except KeyboardInterrupt:   # Ctrl-C before the training loop: nothing to save yet
        print("pretrain: stopped by Ctrl-C; the run resumes from its last checkpoint.",
              file=sys.stderr)
        return 130
    return {"finished": 0, "preempted": 0, "interrupted": 130}.get(result.status, 1)


def _log(text):
    if FLAGS.progress:
        print(text, file=sys.stderr, flush=True)


def _is_chief():
    """Whether this process writes the workdir, read from TF_CONFIG before TensorFlow loads (as
    `distribute.WorkerInfo.is_chief`): the task "chief", or worker 0 when there is none. Only
    MultiWorkerMirrored runs have other workers; a TF_CONFIG that does not parse is reported by
    the strategy, and the trainer then takes the lock itself."""
    try:
        tf_config = json.loads(os.environ.get("TF_CONFIG") or "{}")
        task, cluster = tf_config.get("task") or {}, tf_config.get("cluster") or {}
        kind, index = task.get("type"), int(task.get("index", 0))
    except (ValueError, TypeError, AttributeError):
        return False
    return kind in (None, "chief") or (kind == "worker" and index == 0 and "chief" not in cluster)


if __name__ == "__main__":
    from pretrain.run_config import RENAMED
    app.run(main, flags_parser=common.parse_flags("pretrain", RENAMED))
