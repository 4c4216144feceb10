"""The pretraining loop: one code path for CPU, GPUs, several hosts and TPUs (`tf.distribute`).

A run, in phases: config checks (`run_config`) -> strategy -> data manifest and shard check ->
model, optimizer and counters (`train_step.TrainState`) -> lock the run directory, copy the
vocabulary -> restore -> loop -> final eval and summary. The loop runs `steps_per_loop` updates
per `tf.function` call (what TPUs need for throughput), each one `TrainState.replica_step` on
every replica, then reports, evaluates, checkpoints and checks for stop signals.

State (model, optimizer, step, loss scale, and the tf.data iterator position) is checkpointed
(`checkpoints.Checkpoints`), so a resumed run continues with exactly the batches and dropout
masks it would have seen; an unreadable newest checkpoint is skipped for the one before it.
SIGTERM (preemption) and Ctrl-C checkpoint at the next loop boundary (a second Ctrl-C quits at
once). With several workers (launch.run) the chief writes the checkpoints and every worker
restores them; with data.worker_split="files" each worker also keeps its own data position.
The run records the data build it trains on (the manifest's fingerprint) and refuses the data
directory once it holds another build (`build_data --overwrite`): at resume, and before each
checkpoint and evaluation. Every path of the run directory is `rundir.RunDir`'s; the data and
its streams are `train_data.TrainData`'s. A lock lets one process at a time train in a workdir
(launch.pretrain takes it before anything is built).
"""

import dataclasses
import os
import signal
import socket
import threading
import time
from typing import Optional

import numpy as np
import tensorflow as tf

from data_pipeline import loader
from data_pipeline.manifest import ManifestError
from pretrain import distribute, objectives, probes, run_config
from pretrain.checkpoints import Checkpoints, RunCheckpointError
from pretrain.modeling import BertConfig, attention_bias
from pretrain.reporting import Reporter, summarise
from pretrain.rundir import RunDir
from pretrain.train_data import DataError, TrainData
from pretrain.train_step import TrainState
from storage import fs
from storage.lock import READERS, DirectoryLock, LockError

_RUN_IDENTITY = ("task", "model", "data", "seed")   # config parts a resumed run may not change
_OPERATIONAL = ("skip_bad_shards",)                 # data fields that may change on resume


class TrainError(RuntimeError):
    """A run that cannot start or continue; the message says what to change."""


@dataclasses.dataclass
class Result:
    step: int
    status: str                       # finished | preempted (SIGTERM) | interrupted (Ctrl-C)
    metrics: dict
    eval_metrics: Optional[dict]
    seconds: float
    probe_metrics: Optional[dict] = None   # the last evaluation's probe/<name>/... (config.probes)


class Trainer:
    """One pretraining run in one workdir, on this process's share of a strategy.

    It owns the checked config (`config`, a `run_config.PretrainConfig`), the run directory
    (`rundir`), the strategy and this worker's place in it (`info`), the data (`data`, with its
    manifest), the training state (`state`: model, optimizer, counters), the train stream's
    iterator and the checkpoints of it all (`checkpoints`).

    Lifecycle: the constructor checks everything that can fail before a step (config, data,
    workdir, model and optimizer) and builds the state; `train()` then, once: takes the workdir's
    lock (unless the caller holds it), records the config and the data build, restores, runs the
    loop and the final evaluation, and releases what it took. `evaluate()` and `save()` may also
    be called on their own (tests, benchmarks).
    """

    def __init__(self, config, workdir: str, strategy=None, allow_config_change: bool = False,
                 progress: bool = True, lock: Optional[DirectoryLock] = None):
        """`config`: a ConfigDict from configs/*.py, or a `run_config.PretrainConfig`. `lock`:
        the lock on `workdir` this process already holds (launch.pretrain takes it before
        building anything, so that a second run is refused at once); without it, the chief takes
        the lock when training starts."""
        self._lock = lock
        try:
            self.config = run_config.parse(config)
        except run_config.ConfigError as e:
            raise TrainError(str(e))
        self.progress = progress
        self.rundir = RunDir(workdir)
        self.task = self.config.task
        self.strategy = strategy or distribute.make_strategy(**dataclasses.asdict(self.config.distribute))
        self.info = distribute.worker_info(self.strategy)
        try:
            self.data = TrainData(self.config, self.strategy, self.info, self._log)
            self.manifest = self.data.manifest
            self.model_config = self._model_config()
            self._check_startup(allow_config_change)
            self.data.check_shards()
        except DataError as e:
            raise TrainError(str(e))
        self.probes = self._load_probes()
        self.with_nsp = (self.task == "mlm" and self.config.train.with_nsp
                         and self.manifest.layout == "pairs")
        self.metric_names = objectives.metric_names(self.task, self.with_nsp)
        self._eval_fn = self._probe_fn = None  # traced on first use
        self._build_state()

    @property
    def workdir(self):
        return self.rundir.workdir

    # ------------------------------------------------------------------------------ startup

    def _model_config(self):
        d = dataclasses.asdict(self.config.model)
        d["embedding_size"] = d["embedding_size"] or None   # the config's 0: no factorization
        if not d["vocab_size"]:   # the config's 0: the data's vocabulary
            if not self.manifest.vocab:
                raise TrainError("config.model.vocab_size is not set and the data manifest has no "
                                 "vocabulary to take it from.")
            d["vocab_size"] = self.manifest.vocab.vocab_size
        try:
            return BertConfig.from_dict(d)
        except (TypeError, ValueError) as e:
            raise TrainError("config.model: %s" % e)

    def _check_startup(self, allow_config_change):
        c, m = self.config, self.manifest
        try:
            m.check(vocab_size=self.model_config.vocab_size, task=self.task)
        except ManifestError as e:
            raise TrainError(str(e))
        if m.seq_len > self.model_config.max_position_embeddings:
            raise TrainError("The data's seq_len %d exceeds model.max_position_embeddings %d."
                             % (m.seq_len, self.model_config.max_position_embeddings))
        replicas, k = self.strategy.num_replicas_in_sync, c.train.micro_batches
        if c.train.global_batch_size % (replicas * k):
            raise TrainError("train.global_batch_size=%d must be divisible by replicas (%d) x "
                             "micro_batches (%d) = %d." % (c.train.global_batch_size, replicas, k,
                                                           replicas * k))
        if self.task == "simbert":
            try:
                loader.check_pair_batching(c.train.global_batch_size, replicas, k)
            except ManifestError as e:
                raise TrainError(str(e))
        previous = self.rundir.read_run_config()
        if previous is not None:
            resolved = self.resolved_config()
            changed = [k for k in _RUN_IDENTITY if _identity(previous, k) != _identity(resolved, k)]
            if changed and not allow_config_change:
                raise TrainError("%s holds a run with a different config (%s differ). Use a new "
                                 "--workdir, or pass --allow_config_change to continue it anyway."
                                 % (self.workdir, ", ".join(changed)))
        recorded = self.rundir.data_build()
        if (recorded and m.fingerprint and recorded.get("fingerprint") != m.fingerprint
                and not allow_config_change):
            raise TrainError("%s holds another data build (%s) than the one this run trained on "
                             "(build %s of %s). Rebuild the original data there (its build_data "
                             "commands are in its command.txt), or train on this build with a new "
                             "--workdir (or pass --allow_config_change to continue this run on it)."
                             % (m.data_dir, m.fingerprint, recorded.get("fingerprint"),
                                recorded.get("train_dir")))

    def _load_probes(self):
        """config.probes read and tokenized with the data's vocabulary (pretrain/probes.py): a bad
        file fails here, before the first step."""
        if not self.config.probes:
            return []
        from data_pipeline.tokenizer import VocabError, count_unknown, load_tokenizer, unknown_warning

        vocab = self.manifest.vocab
        if vocab is None:
            raise TrainError("config.probes: the data manifest of %s records no vocabulary to "
                             "tokenize the probes' text with." % self.manifest.data_dir)
        try:
            tokenizer = load_tokenizer(vocab.path, vocab.lower_case)
            loaded = probes.load(self.config.probes, tokenizer, self.model_config.max_position_embeddings,
                                 self.manifest.seq_len)
        except (OSError, VocabError) as e:
            raise TrainError("config.probes: cannot open the data's vocabulary %s: %s" % (vocab.path, e))
        except probes.ProbeError as e:
            raise TrainError("config.probes: %s" % e)
        for p in loaded:   # a probe in a script the vocabulary lacks measures nothing: say so
            real = [row[row != vocab.special_ids.pad] for row in p.train_ids]
            warning = unknown_warning(*count_unknown(real, vocab.special_ids.unk),
                                      "probe %r's train rows" % p.name, vocab.path)
            if warning:
                self._log(warning)
        return loaded

    def resolved_config(self):
        """The config as the run trains with it (config.json): the model as built, the precision
        resolved. A run without probes has no "probes" key, as before probes existed."""
        d = run_config.as_dict(self.config)
        if not d["probes"]:
            del d["probes"]
        d["model"] = self.model_config.to_dict()
        d["train"]["precision"] = self.precision
        return d

    @property
    def precision(self):
        """train.precision, with "auto" resolved: bfloat16 on TPUs, float32 elsewhere."""
        if self.config.train.precision == "auto":
            return "bfloat16" if self.on_tpu else "float32"
        return self.config.train.precision

    @property
    def on_tpu(self):
        return isinstance(self.strategy, tf.distribute.TPUStrategy)

    # -------------------------------------------------------------------------------- state

    def _build_state(self):
        c = self.config
        try:
            self.state = TrainState(c, self.model_config, self.strategy, self.task, self.with_nsp,
                                    self.precision, self.on_tpu)
        except ValueError as e:
            raise TrainError("config.optimizer: %s" % e)
        self.iterator = iter(self.data.train_dataset())   # checkpointed with the state
        self.checkpoints = Checkpoints(self.rundir, dict(self.state.checkpoint_objects(), data=self.iterator),
                                       self.iterator, self.info, self.data.shared_stream,
                                       c.train.keep_checkpoints, self._log)
        self._train_loop = tf.function(self._loop)

    @property
    def model(self):
        return self.state.model

    @property
    def optimizer(self):
        return self.state.optimizer

    @property
    def step(self):
        return self.state.step

    @property
    def skipped_shards(self):
        """Shards left out because they do not match the manifest (data.skip_bad_shards)."""
        return self.data.skipped_shards

    def restore(self):
        """Restores the newest readable checkpoint, if any, or starts from `init_checkpoint`;
        returns the step."""
        with_data = not self.skipped_shards
        try:
            restored = self.checkpoints.restore(with_data=with_data)
        except RunCheckpointError as e:
            raise TrainError(str(e))
        if restored is not None:
            if not with_data:   # the file list changed: a fresh stream, at the next epoch
                epoch = 1 + restored * self.config.train.global_batch_size // max(
                    self.manifest.splits["train"].examples or 1, 1)
                self.iterator = iter(self.data.train_dataset(epoch))
                self._log("Shards were left out, so the data position of the checkpoint does not "
                          "apply: the stream restarts at epoch %d." % epoch)
            self._log("Resumed from %s (step %d)" % (self.rundir.checkpoint(restored),
                                                     int(self.step.numpy())))
        elif self.config.init_checkpoint:   # continued pretraining: released weights, fresh state
            from pretrain.google_checkpoint import CheckpointError
            from pretrain.init_checkpoint import init_from_checkpoint
            try:
                init_from_checkpoint(self.model, self.config.init_checkpoint, self.manifest.vocab,
                                     self.config.init_vocab_map, log=self._log)
            except CheckpointError as e:
                raise TrainError("config.init_checkpoint: %s" % e)
        return int(self.step.numpy())

    # ---------------------------------------------------------------------------- one update

    def _loop(self, iterator, steps):
        """`steps` updates; returns the summed metrics (cross-replica) and the last grad norm."""
        names = self.metric_names
        totals = [tf.constant(0.0) for _ in names]
        norm = tf.constant(0.0)
        for _ in tf.range(steps):
            batch = self.data.split_to_replicas(next(iterator))
            metrics, norms = self.strategy.run(self.state.step_fn, args=(batch,))
            norm = self.strategy.reduce(tf.distribute.ReduceOp.MEAN, norms, axis=None)  # equal
            totals = [t + self.strategy.reduce(tf.distribute.ReduceOp.SUM, metrics[n], axis=None)
                      for t, n in zip(totals, names)]
        return dict(zip(names, totals)), norm

    # ---------------------------------------------------------------------------------- eval

    def evaluate(self, max_steps: Optional[int] = None):
        if not self.manifest.has_examples("eval"):
            return None
        names = self.metric_names
        eval_step = self._eval_step()
        totals = {n: 0.0 for n in names}
        batches = 0
        try:
            for i, batch in enumerate(self.data.eval_dataset(
                    drop_remainder=self.task == "simbert" or self.on_tpu)):
                if max_steps and i >= max_steps:
                    break
                for n, v in eval_step(batch).items():
                    totals[n] += float(v)
                batches += 1
        except tf.errors.DataLossError as e:
            raise TrainError(self.data.read_error("eval", e))
        if not batches:
            self._log("eval: the eval split holds less than one batch; skipped.")
            return None
        return summarise(totals, self.task, self.with_nsp)

    def _eval_step(self):
        """The eval step, traced once per trainer (not once per evaluation)."""
        if self._eval_fn is None:
            names = self.metric_names

            def replica_eval(batch):
                ctx = tf.distribute.get_replica_context()
                counts = ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                                        objectives.target_counts(self.task, batch, self.with_nsp))
                _, metrics = objectives.loss_and_metrics(self.model, self.task, batch, counts,
                                                         seed=None, training=False,
                                                         with_nsp=self.with_nsp, replica_context=ctx)
                return metrics

            @tf.function
            def eval_step(batch):
                m = self.strategy.run(replica_eval, args=(batch,))
                return {n: self.strategy.reduce(tf.distribute.ReduceOp.SUM, m[n], axis=None)
                        for n in names}

            self._eval_fn = eval_step
        return self._eval_fn

    # -------------------------------------------------------------------------------- probes

    def probe_features(self, ids, segments):
        """The encoder's features of rows (int [N, L] ids and segments, padded with the pad id):
        [N, 2H] float32, [CLS] and the mean over the row's tokens, from the last layer. Computed
        by every replica on its slice of each global batch and gathered, so every worker of a
        run must call it (with the same rows)."""
        step = self._probe_step()
        batch = self.config.train.global_batch_size
        count = len(ids)
        pad = -count % batch      # whole global batches: one static shape (TPUs), equal slices
        ids = np.concatenate([ids, np.zeros((pad, ids.shape[1]), ids.dtype)])
        segments = np.concatenate([segments, np.zeros((pad, segments.shape[1]), segments.dtype)])
        mask = (ids != self.manifest.vocab.special_ids.pad).astype(np.int32)
        out = [step({"input_ids": ids[i:i + batch], "segment_ids": segments[i:i + batch],
                     "input_mask": mask[i:i + batch]}).numpy() for i in range(0, len(ids), batch)]
        return np.concatenate(out)[:count]

    def _probe_step(self):
        """The probes' forward pass, traced once per trainer."""
        if self._probe_fn is None:
            kind = objectives.MASK_KIND[self.task]
            replicas = self.strategy.num_replicas_in_sync

            def replica_features(batch):
                bias = attention_bias(batch["input_mask"], batch["segment_ids"], kind)
                hidden, _ = self.model(batch["input_ids"], batch["segment_ids"], bias, training=False)
                hidden = tf.cast(hidden, tf.float32)
                weights = tf.cast(batch["input_mask"], tf.float32)[:, :, None]
                mean = tf.reduce_sum(hidden * weights, 1) / tf.maximum(tf.reduce_sum(weights, 1), 1.0)
                return tf.concat([hidden[:, 0], mean], axis=1)

            @tf.function
            def probe_step(batch):
                if replicas > 1:
                    rows = self.config.train.global_batch_size // replicas

                    def slice_for(ctx):
                        i = ctx.replica_id_in_sync_group
                        return {k: v[i * rows:(i + 1) * rows] for k, v in batch.items()}
                    batch = self.strategy.experimental_distribute_values_from_function(slice_for)
                features = self.strategy.run(replica_features, args=(batch,))
                return self.strategy.gather(features, axis=0)

            self._probe_fn = probe_step
        return self._probe_fn

    def _probe_and_report(self, reporter, step):
        """Every probe scored at `step` (every worker computes; the chief reports)."""
        if not self.probes:
            return None
        started = time.time()
        metrics = probes.evaluate(self.probes, self.probe_features, self.config.seed)
        metrics["probe/seconds"] = time.time() - started
        reporter.report(metrics, "probe", step)
        return metrics

    # ----------------------------------------------------------------------------- the run

    def train(self) -> Result:
        lock = self._lock
        if self.info.is_chief and lock is None:
            try:
                lock = DirectoryLock(self.workdir, "launch.pretrain", log=self._log).acquire()
            except LockError as e:
                raise TrainError(str(e))
        reader = self._mark_data_read() if self.info.is_chief else None
        try:
            return self._train()
        finally:
            self.checkpoints.close()
            if reader is not None:
                reader.release()
            if lock is not None and lock is not self._lock:   # the caller releases its own
                lock.release()

    def _mark_data_read(self):
        """Marks the data directory as read by this run (a lock file of its own in its READERS
        folder), so that `build_data --overwrite` refuses it while the run trains. Data the run
        cannot write to (a read-only mount, a shared bucket) stays unmarked: the build checks
        before each checkpoint and evaluation still stop the run if it is rebuilt."""
        data_dir = self.manifest.data_dir
        path = fs.join(data_dir, READERS, "%s-%d.lock" % (socket.gethostname(), os.getpid()))
        try:
            return DirectoryLock(data_dir, "launch.pretrain into %s" % self.workdir, path=path,
                                 log=self._log).acquire()
        except Exception as e:   # noqa: BLE001 - any storage error: the mark is a courtesy
            self._log("note: cannot mark %s as read by this run (%s); a build_data --overwrite "
                      "there is not refused while it trains." % (data_dir, str(e).splitlines()[0]
                                                                  if str(e) else type(e).__name__))
            return None

    def _train(self) -> Result:
        c = self.config.train
        started = time.time()
        if self.info.is_chief:
            self.rundir.write_run_config(self.resolved_config())
            recorded = self.rundir.data_build()
            if recorded is None or recorded.get("fingerprint") != self.manifest.fingerprint:
                self.rundir.write_data_build(self.manifest)
            if self.manifest.vocab:
                try:
                    self.rundir.copy_vocab(self.manifest.vocab)
                except (OSError, ValueError) as e:
                    raise TrainError("cannot copy the vocabulary into %s: %s" % (self.workdir, e))
        step = self.restore()
        if self.info.is_chief:
            dropped = self.rundir.drop_metrics_after(step)
            if dropped:
                self._log("Dropped %d metrics row(s) after step %d from %s: the run stopped before "
                          "checkpointing them, and computes those steps again." % (dropped, step,
                                                                                   self.rundir.metrics))
        self._check_workers_agree(step)
        reporter = Reporter(self.rundir, c.steps, enabled=self.info.is_chief, progress=self.progress)
        reporter.start(step)
        metrics, eval_metrics, status = {}, None, "finished"
        probe_metrics = self._probe_and_report(reporter, step) if step == 0 else None  # the curve's start
        with _StopSignals() as stop:
            while step < c.steps:
                n = min(c.steps_per_loop, c.steps - step)
                t0 = time.time()
                try:
                    with self.strategy.scope():
                        totals, norm = self._train_loop(self.iterator, tf.constant(n, tf.int64))
                except tf.errors.DataLossError as e:
                    raise TrainError(self.data.read_error("train", e))
                totals = {k: float(v) for k, v in totals.items()}
                seconds = time.time() - t0
                step = int(self.step.numpy())
                metrics = summarise(totals, self.task, self.with_nsp)
                examples = n * c.global_batch_size
                metrics.update(lr=float(self.optimizer.learning_rate), grad_norm=float(norm),
                               examples_per_s=examples / seconds,
                               tokens_per_s=examples * self.manifest.seq_len / seconds,
                               loss_scale=float(self.state.loss_scale.numpy()),
                               nonfinite_updates=int(self.state.nonfinite_total.numpy()),
                               skipped_shards=len(self.skipped_shards))
                reporter.report(metrics, "train", step)
                if int(self.state.nonfinite_in_a_row.numpy()) >= c.max_nonfinite_in_a_row:
                    raise TrainError("%d updates in a row had non-finite gradients (step %d); "
                                     "stopping. The last finite checkpoint is kept. Lower the "
                                     "learning rate or enable clipping." % (c.max_nonfinite_in_a_row, step))
                if c.eval_every and step % c.eval_every == 0 and step < c.steps:
                    eval_metrics, probe_metrics = self._eval_and_report(reporter, step)
                if step % c.checkpoint_every == 0 or step >= c.steps:
                    self.save()
                if self._agree(stop.requested is not None):
                    self.save()
                    status = "interrupted" if stop.requested == signal.SIGINT else "preempted"
                    self._log("%s: checkpoint saved at step %d; re-run the same command to resume."
                              % ("Interrupted (Ctrl-C)" if status == "interrupted" else
                                 "Preempted (SIGTERM)", step))
                    break
            if status == "finished":
                eval_metrics, probe_metrics = self._eval_and_report(reporter, step)
        result = Result(step, status, metrics, eval_metrics, time.time() - started, probe_metrics)
        reporter.final(result, self.checkpoints.directory)
        return result

    def save(self):
        self._check_data_build()
        try:
            return self.checkpoints.save(int(self.step.numpy()), self.model.weights)
        except RunCheckpointError as e:
            raise TrainError(str(e))

    def _check_data_build(self):
        """Before a checkpoint or an evaluation: the data directory must still hold the build the
        run loaded (a checkpoint must not mix in another build, nor an eval score come from it)."""
        rebuilt = self.data.rebuilt()
        if self._agree(rebuilt is not None):
            raise TrainError(rebuilt or "another worker found %s rebuilt; the run stopped."
                             % self.manifest.data_dir)

    def _eval_and_report(self, reporter, step):
        """(eval metrics, probe metrics) at `step`, reported."""
        self._check_data_build()
        m = self.evaluate(self.config.train.eval_steps)
        if m is not None:
            reporter.report(m, "eval", step)
        return m, self._probe_and_report(reporter, step)

    def _agree(self, flag):
        """All workers stop together: any worker's stop signal stops every worker."""
        if self.info.num_workers == 1:
            return flag
        return bool(self._from_every_replica(1 if flag else 0).any())

    def _check_workers_agree(self, step):
        """Every worker must have resumed the chief's checkpoint: it needs the workdir's storage."""
        if self.info.num_workers == 1:
            return
        steps = self._from_every_replica(step)
        if (steps != step).any():
            raise TrainError("Workers resumed at different steps (%s, one per replica): every worker "
                             "reads the chief's checkpoints in %s, so the workdir must be storage that "
                             "all hosts share (gs:// or a network filesystem)."
                             % (", ".join(map(str, steps)), self.rundir.checkpoints))

    def _from_every_replica(self, value):
        return distribute.gather_int(self.strategy, value)

    def _log(self, text):
        if self.progress and self.info.is_chief:
            import sys
            print(text, file=sys.stderr, flush=True)


def _identity(config, key):
    """The part of a saved config (config.json) that identifies a run; the data section of a run
    from before an option has the option's default."""
    value = config.get(key)
    if key == "data" and isinstance(value, dict):
        value = {k: v for k, v in dict(run_config.as_dict(run_config.DataConfig()), **value).items()
                 if k not in _OPERATIONAL}
    return value


class _StopSignals:
    """SIGTERM and SIGINT (Ctrl-C) ask the run to checkpoint and stop at the next loop boundary;
    a second Ctrl-C ends the process at once (exit 130, no checkpoint). Python runs signal
    handlers only between bytecodes of the main thread, so two Ctrl-C while a loop runs inside
    TensorFlow would reach the handler as one, after the loop: every signal is also written to
    a wakeup socket (`signal.set_wakeup_fd`), which a thread reads as it arrives. Handlers only
    in the main thread."""

    def __init__(self):
        self.requested = None
        self._previous = {}
        self._sockets = None

    def _handle(self, signum, frame):
        if self.requested is None:
            self.requested = signum
            if signum == signal.SIGINT:
                print("Ctrl-C: saving a checkpoint at the end of this loop, then stopping (press "
                      "again to quit now).", flush=True)

    def _watch(self, read):
        interrupts = 0
        while True:
            try:
                data = read.recv(64)
            except OSError:
                return
            if not data:              # the run left the loop: __exit__ closed the other end
                return
            interrupts += data.count(bytes([signal.SIGINT]))
            if interrupts >= 2:
                os.write(2, b"Second Ctrl-C: stopped at once, without a checkpoint; re-run the "
                            b"same command to resume from the last one.\n")
                os._exit(130)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGTERM, signal.SIGINT):
                self._previous[signum] = signal.signal(signum, self._handle)
            self._sockets = socket.socketpair()
            self._sockets[1].setblocking(False)
            self._previous_fd = signal.set_wakeup_fd(self._sockets[1].fileno(),
                                                     warn_on_full_buffer=False)
            self._thread = threading.Thread(target=self._watch, args=(self._sockets[0],),
                                            daemon=True, name="second-ctrl-c")
            self._thread.start()
        return self

    def __exit__(self, *exc):
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._sockets is not None:
            signal.set_wakeup_fd(self._previous_fd)
            self._sockets[1].close()
            self._thread.join(timeout=5)
            self._sockets[0].close()
