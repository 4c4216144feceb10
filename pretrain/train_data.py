"""A run's data: the manifest checked against its shards, and the streams the trainer reads.

The train stream is one plain tf.data iterator per worker, split across the worker's replicas
inside the step: unlike a distributed iterator it can be checkpointed, so a resumed run continues
at the exact batch (and shuffle-buffer state) where it stopped. With one worker, or
data.worker_split="rows", every worker reads the same global batches and keeps its replicas' rows
(a "shared stream"); with "files", each worker reads its own files at its share of the batch.
The eval stream is one ordered pass at the global batch size, distributed.
"""

from typing import List, Tuple

import tensorflow as tf

from data_pipeline import loader
from data_pipeline.manifest import Manifest, ManifestError, Split
from pretrain import choices
from storage import fs

WORKER_SPLITS = choices.WORKER_SPLITS   # data.worker_split: "files" or "rows" (`shared_stream`)
# A message names at most this many bad shards (then "..."), and quotes at most this many
# characters of a read error: one line that says what to do, however much is wrong.
_LISTED = 10
_ERROR_CHARS = 200


class DataError(RuntimeError):
    """Data a run cannot use; the message says what to do."""


class TrainData:
    """The manifest a run trains on (bad shards left out with data.skip_bad_shards) and its
    train and eval streams for `strategy`, from a `run_config.PretrainConfig`."""

    def __init__(self, config, strategy, info, log):
        self.config, self.strategy, self.info, self._log = config, strategy, info, log
        try:
            self.manifest = Manifest.load(config.data.train_dir)
        except ManifestError as e:
            raise DataError(str(e))
        self.skipped_shards: List[str] = []

    @property
    def shared_stream(self):
        """True when every worker reads the same stream (one worker, or data.worker_split="rows")."""
        return self.info.num_workers == 1 or self.config.data.worker_split == "rows"

    # ------------------------------------------------------------------------------ shards

    def check_shards(self):
        """Shards that do not match the manifest stop the run (naming them) or, with
        data.skip_bad_shards, are left out of the manifest used here (`skipped_shards`)."""
        skip = self.config.data.skip_bad_shards
        bad = self.manifest.verify(checksums=skip)
        if not bad:
            return
        listing = "; ".join("%s: %s" % p for p in bad[:_LISTED]) + (" ..." if len(bad) > _LISTED else "")
        if not skip:
            raise DataError("%d shard(s) of %s do not match its manifest: %s. Rebuild the data (the "
                            "same build_data command with --overwrite), or train without them: "
                            "--config.data.skip_bad_shards=true."
                            % (len(bad), self.manifest.data_dir, listing))
        paths = {p for p, _ in bad}
        for name, split in self.manifest.splits.items():
            kept = [s for s, p in zip(split.shards, self.manifest.paths(name)) if p not in paths]
            if not kept and name == "train":
                raise DataError("every train shard of %s is bad (%s); rebuild the data."
                                % (self.manifest.data_dir, listing))
            self.manifest.splits[name] = Split(kept, sum(s.examples or 0 for s in kept) or None)
        self._log("Leaving out %d shard(s) that do not match the manifest (data.skip_bad_shards): %s"
                  % (len(bad), listing))
        self.skipped_shards = sorted(paths)

    def rebuilt(self):
        """Why the data directory no longer holds the build this run loaded (None: it still
        does). `build_data --overwrite` while a run trains replaces its shards and eval split."""
        built = self.manifest.fingerprint
        if not built:   # records described by hand (Manifest.google): nothing identifies them
            return None
        try:
            now = Manifest.load(self.manifest.data_dir).fingerprint
        except ManifestError:
            now = "none complete: it is being rebuilt"
        if now == built:
            return None
        return ("%s was rebuilt while this run trained on it (build %s; now %s). The run stopped "
                "without saving; to continue it, rebuild the original data there (its build_data "
                "commands are in %s), or train on the new build with a new --workdir."
                % (self.manifest.data_dir, built, now, fs.join(self.manifest.data_dir, "command.txt")))

    def read_error(self, split, error):
        """The message for a read error in the data: which shards differ from the manifest."""
        rebuilt = self.rebuilt()
        if rebuilt:
            return rebuilt
        bad: List[Tuple[str, str]] = self.manifest.verify([split], checksums=True)
        found = ("these shards differ from the manifest: %s. Leave them out with "
                 "--config.data.skip_bad_shards=true (logged and counted), or rebuild the data."
                 % "; ".join("%s: %s" % p for p in bad)) if bad else (
                 "no shard differs from the manifest's size and checksum (a transient read error, "
                 "or a corruption the builder recorded); re-run to resume from the last checkpoint.")
        first_line = str(error).strip().splitlines()[0][:_ERROR_CHARS]
        return "reading the %s data failed (%s): %s" % (split, first_line, found)

    # ----------------------------------------------------------------------------- streams

    def train_dataset(self, epoch=0):
        """This worker's train batches from `epoch` on (the global batch on a shared stream)."""
        c, info = self.config, self.info
        if self.shared_stream:
            return loader.make_dataset(self.manifest, batch_size=c.train.global_batch_size,
                                       split="train", seed=c.seed, epoch=epoch, training=True,
                                       shuffle_buffer=c.data.shuffle_buffer)
        ctx = tf.distribute.InputContext(num_input_pipelines=info.num_workers,
                                         input_pipeline_id=info.task_id if info.num_workers > 1 else 0,
                                         num_replicas_in_sync=self.strategy.num_replicas_in_sync)
        return loader.make_dataset(self.manifest, batch_size=c.train.global_batch_size // info.num_workers,
                                   split="train", seed=c.seed, epoch=epoch, training=True,
                                   input_context=ctx, shuffle_buffer=c.data.shuffle_buffer)

    def split_to_replicas(self, batch):
        """A worker's batch -> per-replica values (inside the step function)."""
        if self.strategy.num_replicas_in_sync == 1:
            return batch
        local = self.strategy.num_replicas_in_sync // self.info.num_workers
        rows = self.config.train.global_batch_size // self.strategy.num_replicas_in_sync

        def slice_for(ctx):
            i = ctx.replica_id_in_sync_group   # a shared stream's batch holds every replica's rows,
            if not self.shared_stream:         # a worker's own batch those of its local replicas
                i = i % local
            return {k: v[i * rows:(i + 1) * rows] for k, v in batch.items()}
        return self.strategy.experimental_distribute_values_from_function(slice_for)

    def eval_dataset(self, drop_remainder):
        """One ordered pass over the eval split at the global batch size, distributed (no state to
        checkpoint): every worker reads the split and keeps its replicas' share of each batch, so
        any number of eval files serves any number of workers. drop_remainder: SimBERT gathers
        equal-sized slices from every replica; a TPU compiles for one static batch shape."""
        c = self.config
        ds = loader.make_dataset(self.manifest, batch_size=c.train.global_batch_size, split="eval",
                                 seed=c.seed, training=False, drop_remainder=drop_remainder)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return self.strategy.experimental_distribute_dataset(ds.with_options(options))
