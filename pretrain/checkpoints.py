"""A run's checkpoints: where each worker saves, and restoring the newest one that reads.

The chief saves into the run directory; the other workers must take part in a synchronous save
too, so they save into a local temporary directory (distribute.checkpoint_dir). When workers read
their own files (data.worker_split="files"), each also keeps its own data position beside the
chief's checkpoints, saved with the same step number.

Restoring tries the newest checkpoint first. One that cannot be read (a truncated data file, a
torn write) is skipped with a line saying which and why, and the next older one is tried; the
unreadable files are never deleted: when the run saves that step again, they are moved aside to
`ckpt-<step>.unreadable-<time>.*` first. A non-finite model is never saved.
"""

import time

import tensorflow as tf

from pretrain import distribute
from storage import fs

_READ_ERRORS = (tf.errors.OpError, IndexError, ValueError, KeyError, AssertionError)


class RunCheckpointError(RuntimeError):
    """A checkpoint of the run's own (its checkpoints/ directory) that cannot be restored, does
    not fit this run's layout, or cannot be saved. A bad Google-layout checkpoint (an export,
    an init_checkpoint) is a `google_checkpoint.CheckpointError` instead."""


class Checkpoints:
    """The checkpoints of one run, for one worker: it owns the `tf.train.Checkpoint` of the
    training state (`objects`: model, optimizer, counters, EMA and the data position), its
    `CheckpointManager` (the chief's in the run directory, another worker's in a temporary
    directory), this worker's own data positions (data.worker_split="files"), and the steps found
    unreadable at restore.

    Lifecycle: built once the state exists (`Trainer`), before any step; `restore()` once, at
    the start of training; `save(step, weights)` at each checkpoint step and when the run stops;
    `close()` at the end, which removes a non-chief worker's temporary directory.
    """

    def __init__(self, rundir, objects: dict, iterator, info, shared_stream: bool, keep: int, log):
        self.rundir, self.info, self.log = rundir, info, log
        self.objects = objects                      # what a checkpoint holds, data position included
        self.checkpoint = tf.train.Checkpoint(**objects)
        directory, self.temporary = distribute.checkpoint_dir(rundir.checkpoints, info)
        self.manager = tf.train.CheckpointManager(self.checkpoint, directory, max_to_keep=keep)
        self.data_manager = None
        if not shared_stream:   # one more kept: the one matching the chief's latest survives a torn save
            self.data_manager = tf.train.CheckpointManager(
                tf.train.Checkpoint(data=iterator),
                rundir.data_positions(info.task_id, info.num_workers), max_to_keep=keep + 1)
        self.unreadable = {}    # step -> why it could not be restored

    @property
    def directory(self):
        return self.manager.directory

    # ------------------------------------------------------------------------------ restore

    def restore(self, with_data: bool = True):
        """Restores the newest readable checkpoint; returns its step, or None when there is none.
        `with_data=False` leaves the data position out (the file list changed)."""
        steps = self.rundir.checkpoint_steps()
        for step in reversed(steps):
            path = self.rundir.checkpoint(step)
            self.check_data_layout(path, with_data)
            try:
                if with_data:
                    self.checkpoint.restore(path).assert_existing_objects_matched()
                    if self.data_manager:
                        self.data_manager.checkpoint.restore(self._own_data_path(path)).assert_consumed()
                else:
                    objects = {k: v for k, v in self.objects.items() if k != "data"}
                    tf.train.Checkpoint(**objects).restore(path).expect_partial() \
                        .assert_existing_objects_matched()
            except _READ_ERRORS as e:
                self.unreadable[step] = _first_line(e)
                self.log("Checkpoint %s cannot be read (%s); skipping it (its files are kept) and "
                         "trying the one before." % (path, self.unreadable[step]))
                continue
            return step
        if steps:
            raise RunCheckpointError(
                "None of the checkpoints in %s can be read (%s). Their files are kept; move the "
                "checkpoints directory aside to start over." % (self.rundir.checkpoints, "; ".join(
                    "ckpt-%d: %s" % (s, self.unreadable[s]) for s in sorted(self.unreadable))))
        return None

    def _own_data_path(self, path):
        return fs.join(self.data_manager.directory, path.rsplit("/", 1)[-1])

    def check_data_layout(self, path, with_data=True):
        """The data position in `path` must fit this run's stream layout (before restoring it)."""
        name = path.rsplit("/", 1)[-1]
        saved_by = sorted(p.split("/")[-2] for p in fs.glob(fs.join(
            self.rundir.data_positions("*", "*"), name + ".index")))
        if not with_data:
            return
        if self.data_manager and not fs.exists(self._own_data_path(path) + ".index"):
            raise RunCheckpointError(
                "%s has no data position for worker %d of %d (found: %s). With "
                "data.worker_split='files' each worker saves its own, so a run resumes with the "
                "number of workers that wrote it; data.worker_split='rows' resumes with any number."
                % (path, self.info.task_id, self.info.num_workers, ", ".join(saved_by) or
                   "one shared stream: the run was written by one worker or with worker_split='rows'"))
        if not self.data_manager and saved_by:
            raise RunCheckpointError("%s was written by workers reading their own files (%s, "
                                   "data.worker_split='files'): resume it with that many workers."
                                   % (path, ", ".join(saved_by)))

    # --------------------------------------------------------------------------------- save

    def save(self, step: int, weights):
        """Saves the state at `step` (once per step); refuses a model with non-finite weights."""
        finite = all(bool(tf.reduce_all(tf.math.is_finite(v.value))) for v in weights)
        if not finite:
            raise RunCheckpointError("The model has non-finite weights at step %d; not checkpointing "
                                   "it. The last finite checkpoint is in %s." % (step, self.directory))
        latest = self.manager.latest_checkpoint
        if latest and latest.endswith("-%d" % step) and step not in self.unreadable:
            return latest
        if step in self.unreadable and self.info.is_chief:
            self._move_aside(step)
        try:
            if self.data_manager:
                self.data_manager.save(checkpoint_number=step)
            return self.manager.save(checkpoint_number=step)
        except (tf.errors.OpError, OSError) as e:
            self._remove_partial(step)   # a full disk must not stay full of half a checkpoint
            before = [s for s in self.rundir.checkpoint_steps() if s < step]
            raise RunCheckpointError(
                "cannot save the checkpoint of step %d in %s (%s); its partial files were removed. "
                "Free space (or fix the permissions) and re-run the same command: it resumes from %s."
                % (step, self.directory, _first_line(e),
                   "step %d" % before[-1] if before else "the start"))

    def _remove_partial(self, step):
        """Removes what a failed save of `step` wrote: its files and TensorFlow's ckpt-<step>_temp
        directories, in the checkpoint directory and in this worker's data positions."""
        directories = [self.directory] + ([self.data_manager.directory] if self.data_manager else [])
        for directory in directories:
            prefix = fs.join(directory, "ckpt-%d" % step)
            for path in tf.io.gfile.glob(prefix + "_temp*") + tf.io.gfile.glob(prefix + ".*"):
                if ".unreadable-" in path:
                    continue
                try:
                    if tf.io.gfile.isdir(path):
                        tf.io.gfile.rmtree(path)
                    else:
                        tf.io.gfile.remove(path)
                except (tf.errors.OpError, OSError) as e:
                    self.log("warning: could not remove %s (%s)." % (path, _first_line(e)))

    def _move_aside(self, step):
        prefix = self.rundir.checkpoint(step)
        suffix = ".unreadable-%d" % int(time.time())
        for path in fs.glob(prefix + ".*"):
            if ".unreadable-" not in path:
                fs.rename(path, prefix + suffix + path[len(prefix):])
        self.log("Moved the unreadable checkpoint %s aside to %s.* before saving step %d again."
                 % (prefix, prefix + suffix, step))
        del self.unreadable[step]

    def close(self):
        if self.temporary:
            import shutil
            shutil.rmtree(self.temporary, ignore_errors=True)


def _first_line(e, limit=300):
    """The first line of an error's message, cut at `limit` characters so that a long one does
    not swamp the one-line message it goes into."""
    text = (getattr(e, "message", None) or str(e)).strip()
    return (text.splitlines()[0] if text else type(e).__name__)[:limit]
