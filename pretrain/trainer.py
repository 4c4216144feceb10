"""The pretraining loop: one code path for CPU, GPUs, several hosts and TPUs (`tf.distribute`).

One update is `replica_step` on every replica (`strategy.run`); it is the whole of what a TPU
compiles with XLA, and it needs nothing from the host:
  1. the replica's batch of k * b rows is counted (targets per loss) and the counts are summed
     over replicas, so every loss is normalised by the global number of targets of the update;
  2. k micro-batches of b rows run forward/backward one after the other (a `tf.while_loop`, so only
     one micro-batch's activations live at a time); gradients are summed locally;
  3. ONE all-reduce of the summed gradients; float16 loss-scale unscaling; per-variable gradient
     transforms (config.optimizer.gradient_transforms); global-norm clipping;
  4. ONE optimizer update, guarded: a non-finite gradient skips the update and is counted (float16
     halves its loss scale instead); N in a row abort the run. Every replica applies the same
     reduced update to its own copy of the variables (replica-local assignments: no merge_call,
     no host round trip), and the EMA of the weights (optimizer.ema_decay) follows it.
`steps_per_loop` updates run inside one `tf.function` call (what TPUs need for throughput).
With `train.jit_compile`, a single-replica run compiles the whole `replica_step` with XLA, as
TPUStrategy does; multi-replica GPU/CPU runs compile the forward/backward pass (the collectives
stay outside XLA there).

State (model, optimizer, step, loss scale, and the tf.data iterator position) is checkpointed
with `tf.train.CheckpointManager`, so a resumed run continues with exactly the batches and
dropout masks it would have seen. SIGTERM (preemption) checkpoints at the next loop boundary.
With several workers (launch.run) the chief writes the checkpoints and every worker restores them;
with data.worker_split="files" each worker also keeps its own data position beside them.
"""

import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import time
from typing import Optional

import keras
import numpy as np
import tensorflow as tf

from data_pipeline import loader
from pretrain import distribute, objectives, optimizers
from pretrain.modeling import BertConfig, build_model, fold_in

CONFIG_FILE = "config.json"
_RUN_IDENTITY = ("task", "model", "data", "seed")   # config parts a resumed run may not change


class TrainError(RuntimeError):
    """A run that cannot start or continue; the message says what to change."""


@dataclasses.dataclass
class Result:
    step: int
    status: str                       # finished | preempted
    metrics: dict
    eval_metrics: Optional[dict]
    seconds: float


class Trainer:
    def __init__(self, config, workdir: str, strategy=None, allow_config_change: bool = False,
                 progress: bool = True):
        self.c, self.workdir, self.progress = config, workdir, progress
        self.task = config.task
        if self.task not in objectives.TASKS:
            raise TrainError("config.task must be one of %s, got %r" % (objectives.TASKS, self.task))
        self.strategy = strategy or distribute.make_strategy(**config.distribute.to_dict())
        self.info = distribute.worker_info(self.strategy)
        self.manifest = loader.load_manifest(config.data.train_dir)
        self.model_config = self._model_config()
        self._check_startup(allow_config_change)
        self.with_nsp = (self.task == "mlm" and config.train.with_nsp
                         and self.manifest.get("layout") == "pairs")
        self.metric_names = objectives.metric_names(self.task, self.with_nsp)
        self._eval_fn = None  # traced on first use
        self._build_state()

    # ------------------------------------------------------------------------------ startup

    def _model_config(self):
        d = dict(self.c.model.to_dict())
        d["embedding_size"] = d.get("embedding_size") or None
        vocab = self.manifest.get("vocab") or {}
        if not d.get("vocab_size"):
            if not vocab:
                raise TrainError("config.model.vocab_size is not set and the data manifest has no "
                                 "vocabulary to take it from.")
            d["vocab_size"] = vocab["vocab_size"]
        try:
            return BertConfig.from_dict(d)
        except (TypeError, ValueError) as e:
            raise TrainError("config.model: %s" % e)

    def _check_startup(self, allow_config_change):
        c, m = self.c, self.manifest
        try:
            loader.check_manifest(m, vocab_size=self.model_config.vocab_size, task=self.task)
        except loader.ManifestError as e:
            raise TrainError(str(e))
        if m["seq_len"] > self.model_config.max_position_embeddings:
            raise TrainError("The data's seq_len %d exceeds model.max_position_embeddings %d."
                             % (m["seq_len"], self.model_config.max_position_embeddings))
        replicas, k = self.strategy.num_replicas_in_sync, c.train.micro_batches
        if k < 1 or c.train.global_batch_size % (replicas * k):
            raise TrainError("train.global_batch_size=%d must be divisible by replicas (%d) x "
                             "micro_batches (%d) = %d." % (c.train.global_batch_size, replicas, k,
                                                           replicas * k))
        if self.task == "simbert":
            try:
                loader.check_pair_batching(c.train.global_batch_size, replicas, k)
            except loader.ManifestError as e:
                raise TrainError(str(e))
        if c.train.precision not in ("auto", "float32", "bfloat16", "float16"):
            raise TrainError("train.precision must be auto, float32, bfloat16 or float16, got %r"
                             % c.train.precision)
        if c.data.worker_split not in ("files", "rows"):
            raise TrainError("data.worker_split must be 'files' or 'rows', got %r"
                             % c.data.worker_split)
        path = os.path.join(self.workdir, CONFIG_FILE)
        resolved = self.resolved_config()
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                previous = json.load(f)
            previous.get("data", {}).setdefault("worker_split", "files")  # runs from before the option
            changed = [k for k in _RUN_IDENTITY if previous.get(k) != resolved.get(k)]
            if changed and not allow_config_change:
                raise TrainError("%s holds a run with a different config (%s differ). Use a new "
                                 "--workdir, or pass --allow_config_change to continue it anyway."
                                 % (self.workdir, ", ".join(changed)))

    def resolved_config(self):
        d = json.loads(self.c.to_json())
        d["model"] = self.model_config.to_dict()
        d["train"]["precision"] = self.precision
        return d

    @property
    def precision(self):
        """train.precision, with "auto" resolved: bfloat16 on TPUs, float32 elsewhere."""
        if self.c.train.precision == "auto":
            return "bfloat16" if self.on_tpu else "float32"
        return self.c.train.precision

    # -------------------------------------------------------------------------------- state

    def _build_state(self):
        c = self.c
        policy = {"float32": None, "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}
        self.fp16 = self.precision == "float16"
        keras.utils.set_random_seed(c.seed)  # same seed, same initial weights
        with self.strategy.scope():
            self.model = build_model(self.model_config, recompute=c.train.recompute,
                                     with_nsp=self.with_nsp,
                                     dtype_policy=policy[self.precision])
            # The pooler only learns from NSP/SOP or SimBERT's similarity loss; otherwise it has no
            # gradient and is left out of the updates (it keeps its initial values).
            pooler = {id(v) for v in self.model.pooler.weights}
            self.variables = [v for v in self.model.trainable_variables
                              if id(v) not in pooler or self.with_nsp or self.task == "simbert"]
            try:
                self.optimizer = optimizers.build_optimizer(
                    c.optimizer, c.train.steps, variables=self.variables,
                    num_layers=self.model_config.num_hidden_layers)
                self.optimizer.build(self.variables)
                self.grad_transforms = optimizers.build_gradient_transforms(
                    c.optimizer.get("gradient_transforms"), [v.path for v in self.variables])
                ema_decay = c.optimizer.get("ema_decay", 0.0)
                self.ema = (optimizers.WeightAverage(self.model.trainable_variables, ema_decay)
                            if ema_decay else None)
            except ValueError as e:
                raise TrainError("config.optimizer: %s" % e)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            self.loss_scale = tf.Variable(2.0 ** 15 if self.fp16 else 1.0, trainable=False,
                                          name="loss_scale")
            self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="good_steps")
            self.nonfinite_total = tf.Variable(0, dtype=tf.int64, trainable=False,
                                               name="nonfinite_total")
            self.nonfinite_in_a_row = tf.Variable(0, dtype=tf.int64, trainable=False,
                                                  name="nonfinite_in_a_row")
        # The train stream is one plain tf.data iterator per worker, split across the worker's
        # replicas inside the step: unlike a distributed iterator it can be checkpointed, so a
        # resumed run continues at the exact batch (and shuffle-buffer state) where it stopped.
        self.iterator = iter(self._worker_dataset())
        self.checkpoint_dir = os.path.join(self.workdir, "checkpoints")   # the chief's: read by all
        ckpt_dir, self._tmp_ckpt = distribute.checkpoint_dir(self.checkpoint_dir, self.info)
        self.checkpoint = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, step=self.step, loss_scale=self.loss_scale,
            good_steps=self.good_steps, nonfinite_total=self.nonfinite_total,
            nonfinite_in_a_row=self.nonfinite_in_a_row, data=self.iterator,
            **({"ema": self.ema} if self.ema is not None else {}))
        self.manager = tf.train.CheckpointManager(self.checkpoint, ckpt_dir,
                                                  max_to_keep=c.train.keep_checkpoints)
        # The checkpoint above holds the chief's data position. When workers read different files
        # (worker_split="files"), each one also keeps its own, saved with the same step number
        # (one more is kept, so the one matching the chief's latest survives an interrupted save).
        self.data_manager = None
        if not self.shared_stream:
            self.data_manager = tf.train.CheckpointManager(
                tf.train.Checkpoint(data=self.iterator),
                os.path.join(self.checkpoint_dir, _data_dir_name(self.info.task_id, self.info.num_workers)),
                max_to_keep=c.train.keep_checkpoints + 1)
        self._train_loop = tf.function(self._loop)
        self._micro, self._step_fn = self._micro_step, self.replica_step
        if c.train.jit_compile and not self.on_tpu:   # a TPU compiles the replica step itself
            if self.strategy.num_replicas_in_sync == 1:
                self._step_fn = tf.function(self.replica_step, jit_compile=True)
            else:
                self._micro = tf.function(self._micro_step, jit_compile=True)

    @property
    def on_tpu(self):
        return isinstance(self.strategy, (tf.distribute.TPUStrategy,))

    def checkpoint_variables(self):
        """Every variable of the training state: model, optimizer (wrapped ones too), EMA shadows
        and the counters."""
        out = list(self.model.weights)
        optimizer = self.optimizer
        while optimizer is not None:
            out += list(optimizer.variables)
            optimizer = getattr(optimizer, "inner", None)
        out += [self.step, self.loss_scale, self.good_steps, self.nonfinite_total,
                self.nonfinite_in_a_row]
        if self.ema is not None:
            out += list(self.ema.averages) + [self.ema.updates]
        return out

    @property
    def shared_stream(self):
        """True when every worker reads the same stream (one worker, or data.worker_split="rows")."""
        return self.info.num_workers == 1 or self.c.data.worker_split == "rows"

    def _worker_dataset(self):
        c, info = self.c, self.info
        if self.shared_stream:   # the global batch; each worker keeps its rows (_split_to_replicas)
            return loader.make_dataset(self.manifest, batch_size=c.train.global_batch_size,
                                       split="train", seed=c.seed, training=True,
                                       shuffle_buffer=c.data.shuffle_buffer)
        ctx = tf.distribute.InputContext(num_input_pipelines=info.num_workers,
                                         input_pipeline_id=info.task_id if info.num_workers > 1 else 0,
                                         num_replicas_in_sync=self.strategy.num_replicas_in_sync)
        return loader.make_dataset(self.manifest, batch_size=c.train.global_batch_size // info.num_workers,
                                   split="train", seed=c.seed, training=True, input_context=ctx,
                                   shuffle_buffer=c.data.shuffle_buffer)

    def _split_to_replicas(self, batch):
        if self.strategy.num_replicas_in_sync == 1:
            return batch
        local = self.strategy.num_replicas_in_sync // self.info.num_workers
        rows = self.c.train.global_batch_size // self.strategy.num_replicas_in_sync

        def slice_for(ctx):
            i = ctx.replica_id_in_sync_group   # a shared stream's batch holds every replica's rows,
            if not self.shared_stream:         # a worker's own batch those of its local replicas
                i = i % local
            return {k: v[i * rows:(i + 1) * rows] for k, v in batch.items()}
        return self.strategy.experimental_distribute_values_from_function(slice_for)

    def _eval_dataset(self):
        """One ordered pass over the eval split at the global batch size, distributed (no state to
        checkpoint): every worker reads the split and keeps its replicas' share of each batch, so
        any number of eval files serves any number of workers."""
        c = self.c
        ds = loader.make_dataset(self.manifest, batch_size=c.train.global_batch_size, split="eval",
                                 seed=c.seed, training=False,
                                 # SimBERT gathers equal-sized slices from every replica; a TPU
                                 # compiles for one static batch shape.
                                 drop_remainder=self.task == "simbert" or self.on_tpu)
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        return self.strategy.experimental_distribute_dataset(ds.with_options(options))

    def restore(self):
        """Restores the latest checkpoint, if any; returns the step."""
        path = tf.train.latest_checkpoint(self.checkpoint_dir)
        if path:
            self._check_data_layout(path)
            self.checkpoint.restore(path).assert_existing_objects_matched()
            if self.data_manager:
                self.data_manager.checkpoint.restore(self._own_data_path(path)).assert_consumed()
            self._log("Resumed from %s (step %d)" % (path, int(self.step.numpy())))
        elif self.c.get("init_checkpoint"):   # continued pretraining: released weights, fresh state
            from pretrain import google_checkpoint
            try:
                google_checkpoint.init_from_checkpoint(
                    self.model, self.c.init_checkpoint, self.manifest.get("vocab"),
                    self.c.get("init_vocab_map", ""), log=self._log)
            except google_checkpoint.CheckpointError as e:
                raise TrainError("config.init_checkpoint: %s" % e)
        return int(self.step.numpy())

    def _own_data_path(self, path):
        return os.path.join(self.data_manager.directory, os.path.basename(path))

    def _check_data_layout(self, path):
        """The data position in `path` must fit this run's stream layout (before restoring it)."""
        saved_by = sorted(p.split("/")[-2] for p in tf.io.gfile.glob(os.path.join(
            self.checkpoint_dir, _data_dir_name("*", "*"), os.path.basename(path) + ".index")))
        if self.data_manager and not tf.io.gfile.exists(self._own_data_path(path) + ".index"):
            raise TrainError(
                "%s has no data position for worker %d of %d (found: %s). With "
                "data.worker_split='files' each worker saves its own, so a run resumes with the "
                "number of workers that wrote it; data.worker_split='rows' resumes with any number."
                % (path, self.info.task_id, self.info.num_workers, ", ".join(saved_by) or
                   "one shared stream: the run was written by one worker or with worker_split='rows'"))
        if not self.data_manager and saved_by:
            raise TrainError("%s was written by workers reading their own files (%s, "
                             "data.worker_split='files'): resume it with that many workers."
                             % (path, ", ".join(saved_by)))

    # ---------------------------------------------------------------------------- one update

    def replica_step(self, batch):
        """One whole update on one replica (see the module docstring): what `strategy.run`
        executes every step, and what TPUStrategy compiles with XLA. Static shapes, no host
        callback, no cross-replica call inside a conditional. Returns ({metric: local sum},
        global gradient norm)."""
        ctx = tf.distribute.get_replica_context()
        seed = fold_in(fold_in(tf.constant([self.c.seed, 0], tf.int64), self.step),
                       ctx.replica_id_in_sync_group)
        grads, metrics, norm = self._replica_grads(batch, seed)
        applied = self._apply(grads, tf.math.is_finite(norm))
        optimizers.count_update(self.optimizer, applied)   # aggregated counters: not in the cond
        self.step.assign_add(1)
        return metrics, norm

    def _micro_step(self, batch, counts, seed):
        with tf.GradientTape() as tape:
            loss, metrics = objectives.loss_and_metrics(
                self.model, self.task, batch, counts, seed=seed, training=True,
                with_nsp=self.with_nsp, replica_context=tf.distribute.get_replica_context())
            if self.fp16:
                loss = loss * self.loss_scale
        grads = tape.gradient(loss, self.variables)
        return [tf.convert_to_tensor(g) for g in grads], metrics

    def _replica_grads(self, batch, seed):
        ctx = tf.distribute.get_replica_context()
        k = self.c.train.micro_batches
        counts = ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                                objectives.target_counts(self.task, batch, self.with_nsp))
        if k == 1:
            grads, metrics = self._micro(batch, counts, seed)
        else:
            # [k * b, ...] -> [k, b, ...]; micro-batch i is a gather along the first axis (static
            # shapes for XLA, where a slice at a loop-dependent offset is not).
            split = {key: tf.reshape(value, tf.concat([[k, -1], tf.shape(value)[1:]], 0))
                     for key, value in batch.items()}
            names = self.metric_names

            def body(i, grads, metrics):
                micro = {key: tf.gather(value, i) for key, value in split.items()}
                g, m = self._micro(micro, counts, fold_in(seed, 1000 + i))
                return (i + 1, [a + b for a, b in zip(grads, g)],
                        [metrics[j] + m[name] for j, name in enumerate(names)])

            _, grads, sums = tf.while_loop(
                lambda i, *_: i < k, body,
                (tf.constant(0), [tf.zeros_like(v.value) for v in self.variables],
                 [tf.constant(0.0) for _ in names]))
            metrics = dict(zip(names, sums))
        grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)   # the one gradient reduction
        if self.fp16:
            grads = [g / self.loss_scale for g in grads]
        grads = optimizers.transform_gradients(self.grad_transforms, grads, self.variables)
        norm = tf.linalg.global_norm(grads)
        if self.c.train.clip_norm:
            grads, _ = tf.clip_by_global_norm(grads, self.c.train.clip_norm, use_norm=norm)
        return grads, metrics, norm

    def _loop(self, iterator, steps):
        """`steps` updates; returns the summed metrics (cross-replica) and the last grad norm."""
        names = self.metric_names
        totals = [tf.constant(0.0) for _ in names]
        norm = tf.constant(0.0)
        for _ in tf.range(steps):
            batch = self._split_to_replicas(next(iterator))
            metrics, norms = self.strategy.run(self._step_fn, args=(batch,))
            norm = self.strategy.reduce(tf.distribute.ReduceOp.MEAN, norms, axis=None)  # equal
            totals = [t + self.strategy.reduce(tf.distribute.ReduceOp.SUM, metrics[n], axis=None)
                      for t, n in zip(totals, names)]
        return dict(zip(names, totals)), norm

    def _apply(self, grads, finite):
        """The guarded update, in replica context; returns whether it was applied. Every replica
        holds the same reduced gradients, hence takes the same branch; every assignment below is
        to a variable with aggregation NONE, which stays on this replica's copy."""

        def update():
            optimizers.apply_update(self.optimizer, grads, self.variables)
            if self.ema is not None:
                self.ema.update(self.model.trainable_variables)
            self.nonfinite_in_a_row.assign(0)
            if self.fp16:  # dynamic loss scaling: grow after 2000 good steps
                self.good_steps.assign_add(1)
                grow = self.good_steps >= 2000
                self.loss_scale.assign(tf.where(grow, self.loss_scale * 2.0, self.loss_scale))
                self.good_steps.assign(tf.where(grow, tf.constant(0, tf.int64), self.good_steps))
            return tf.constant(True)

        def skip():
            if self.fp16:  # an overflow is how dynamic loss scaling finds its scale: not an error
                self.loss_scale.assign(tf.maximum(self.loss_scale / 2.0, 1.0))
                self.good_steps.assign(0)
            else:
                self.nonfinite_in_a_row.assign_add(1)
            self.nonfinite_total.assign_add(1)
            return tf.constant(False)

        return tf.cond(finite, update, skip)

    # ---------------------------------------------------------------------------------- eval

    def evaluate(self, max_steps: Optional[int] = None):
        if "eval" not in self.manifest["splits"] or not self.manifest["splits"]["eval"].get("examples"):
            return None
        names = self.metric_names
        eval_step = self._eval_step()
        totals = {n: 0.0 for n in names}
        batches = 0
        for i, batch in enumerate(self._eval_dataset()):
            if max_steps and i >= max_steps:
                break
            for n, v in eval_step(batch).items():
                totals[n] += float(v)
            batches += 1
        if not batches:
            self._log("eval: the eval split holds less than one batch; skipped.")
            return None
        return _summarise(totals, self.task, self.with_nsp)

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

    # ----------------------------------------------------------------------------- the run

    def train(self) -> Result:
        c = self.c.train
        started = time.time()
        self._write_config()
        step = self.restore()
        self._check_workers_agree(step)
        writers = self._summary_writers()
        preempted = []
        previous = signal.signal(signal.SIGTERM, lambda *_: preempted.append(True)) \
            if _main_thread() else None
        seq_len = self.manifest["seq_len"]
        metrics, eval_metrics, status = {}, None, "finished"
        try:
            while step < c.steps:
                n = min(c.steps_per_loop, c.steps - step)
                t0 = time.time()
                with self.strategy.scope():
                    totals, norm = self._train_loop(self.iterator, tf.constant(n, tf.int64))
                totals = {k: float(v) for k, v in totals.items()}
                seconds = time.time() - t0
                step = int(self.step.numpy())
                metrics = _summarise(totals, self.task, self.with_nsp)
                examples = n * c.global_batch_size
                metrics.update(step=step, lr=float(self.optimizer.learning_rate),
                               grad_norm=float(norm), examples_per_s=examples / seconds,
                               tokens_per_s=examples * seq_len / seconds,
                               loss_scale=float(self.loss_scale.numpy()),
                               nonfinite_updates=int(self.nonfinite_total.numpy()))
                self._report(metrics, writers, "train", started, step)
                if int(self.nonfinite_in_a_row.numpy()) >= c.max_nonfinite_in_a_row:
                    raise TrainError("%d updates in a row had non-finite gradients (step %d); "
                                     "stopping. The last finite checkpoint is kept. Lower the "
                                     "learning rate or enable clipping." % (c.max_nonfinite_in_a_row, step))
                if c.eval_every and step % c.eval_every == 0 and step < c.steps:
                    eval_metrics = self._eval_and_report(writers, step)
                if step % c.checkpoint_every == 0 or step >= c.steps:
                    self.save()
                if self._agree(bool(preempted)):
                    self.save()
                    status = "preempted"
                    self._log("Preempted (SIGTERM): checkpoint saved at step %d; re-run the same "
                              "command to resume." % step)
                    break
            if status == "finished":
                eval_metrics = self._eval_and_report(writers, step)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
            if self._tmp_ckpt:
                shutil.rmtree(self._tmp_ckpt, ignore_errors=True)
        result = Result(step, status, metrics, eval_metrics, time.time() - started)
        self._final_summary(result)
        return result

    def save(self):
        finite = all(bool(tf.reduce_all(tf.math.is_finite(v.value))) for v in self.model.weights)
        if not finite:
            raise TrainError("The model has non-finite weights at step %d; not checkpointing it. "
                             "The last finite checkpoint is in %s." % (int(self.step.numpy()),
                                                                       self.manager.directory))
        if self.manager.latest_checkpoint and self.manager.latest_checkpoint.endswith(
                "-%d" % int(self.step.numpy())):
            return self.manager.latest_checkpoint
        if self.data_manager:
            self.data_manager.save(checkpoint_number=self.step)
        return self.manager.save(checkpoint_number=self.step)

    def _agree(self, flag):
        """All workers stop together: any worker's SIGTERM stops every worker."""
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
                             % (", ".join(map(str, steps)), self.checkpoint_dir))

    @tf.function
    def _gather(self, value):
        return self.strategy.run(
            lambda v: tf.distribute.get_replica_context().all_gather(v[None], axis=0), args=(value,))

    def _from_every_replica(self, value):
        """An integer in [0, 2**48) from every replica of every worker: a numpy int64 array.

        One all-gather of float32 pairs (value // 2**24, value % 2**24), each exact in float32:
        float32 collectives exist everywhere (NCCL, gRPC/ring, XLA on TPUs), while integer ones
        are not registered for every device and build."""
        high, low = divmod(int(value), 1 << 24)
        with self.strategy.scope():
            gathered = self._gather(tf.constant([high, low], tf.float32))
        pairs = self.strategy.experimental_local_results(gathered)[0].numpy().astype(np.int64)
        return (pairs[:, 0] << 24) | pairs[:, 1]

    # ------------------------------------------------------------------------------ output

    def _write_config(self):
        if not self.info.is_chief:
            return
        tf.io.gfile.makedirs(self.workdir)
        path = os.path.join(self.workdir, CONFIG_FILE)
        if not tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path, "w") as f:
                json.dump(self.resolved_config(), f, indent=2)

    def _summary_writers(self):
        if not self.info.is_chief:
            return {}
        return {split: tf.summary.create_file_writer(os.path.join(self.workdir, "tensorboard", split))
                for split in ("train", "eval")}

    def _report(self, metrics, writers, split, started, step):
        if not self.info.is_chief:
            return
        if split in writers:
            with writers[split].as_default(step=step):
                for k, v in metrics.items():
                    if k != "step":
                        tf.summary.scalar(k, v)
        with tf.io.gfile.GFile(os.path.join(self.workdir, "metrics.jsonl"), "a") as f:
            f.write(json.dumps(dict(metrics, split=split, time=round(time.time() - started, 2))) + "\n")
        if split == "train":
            total = self.c.train.steps
            elapsed = time.time() - started
            eta = elapsed / max(step, 1) * (total - step) if step else 0
            acc = next((metrics[k] for k in ("mlm_accuracy", "seq2seq_accuracy") if k in metrics), 0.0)
            self._log("step %d/%d  loss %.4f  acc %.4f  lr %.2e  %.0f ex/s  %.0f tok/s  ETA %s"
                      % (step, total, metrics["loss"], acc, metrics["lr"], metrics["examples_per_s"],
                         metrics["tokens_per_s"], _duration(eta)))

    def _eval_and_report(self, writers, step):
        m = self.evaluate(self.c.train.eval_steps)
        if m is not None:
            m["step"] = step
            self._report(m, writers, "eval", time.time(), step)
            self._log("eval at step %d: %s" % (step, "  ".join(
                "%s %.4f" % (k, v) for k, v in m.items() if k != "step")))
        return m

    def _final_summary(self, r: Result):
        lines = ["Run %s: %s at step %d in %s" % (self.workdir, r.status, r.step, _duration(r.seconds))]
        if r.metrics:
            lines.append("  last train: loss %.4f  %s" % (r.metrics["loss"], "  ".join(
                "%s %.4f" % (k, v) for k, v in r.metrics.items() if k.endswith("accuracy"))))
        if r.eval_metrics:
            lines.append("  eval: " + "  ".join("%s %.4f" % (k, v) for k, v in r.eval_metrics.items()
                                                if k != "step"))
        lines.append("  checkpoints: %s   metrics: %s/metrics.jsonl   tensorboard: %s/tensorboard"
                     % (self.manager.directory, self.workdir, self.workdir))
        self._log("\n".join(lines))

    def _log(self, text):
        if self.progress and self.info.is_chief:
            print(text, file=sys.stderr, flush=True)


def _summarise(totals, task, with_nsp):
    out, loss = {}, 0.0
    for name in objectives.loss_names(task, with_nsp):
        count = max(totals[name + "_count"], 1.0)
        out[name + "_loss"] = totals[name + "_loss"] / count
        out[name + "_accuracy"] = totals[name + "_correct"] / count
        loss += out[name + "_loss"]
    first = objectives.loss_names(task, with_nsp)[0]
    out["perplexity"] = math.exp(min(out[first + "_loss"], 50.0))
    out["loss"] = loss
    return out


def _data_dir_name(task_id, num_workers):
    return "data-worker-%s-of-%s" % (task_id, num_workers)


def _duration(seconds):
    seconds = int(seconds)
    return "%d:%02d:%02d" % (seconds // 3600, seconds // 60 % 60, seconds % 60)


def _main_thread():
    import threading
    return threading.current_thread() is threading.main_thread()
