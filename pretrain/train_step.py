"""One update of pretraining, on one replica: the function `strategy.run` executes every step and
a TPU compiles with XLA (`TrainState.replica_step`). It needs nothing from the host:
  1. the replica's batch of k * b rows is counted (targets per loss) and the counts are summed
     over replicas, so every loss is normalised by the global number of targets of the update;
  2. k micro-batches of b rows run forward/backward one after the other (a `tf.while_loop`, so only
     one micro-batch's activations live at a time); gradients are summed locally;
  3. ONE all-reduce of the summed gradients; float16 loss-scale unscaling; per-variable gradient
     transforms (config.optimizer.gradient_transforms); global-norm clipping;
  4. ONE optimizer update, guarded: a non-finite gradient skips the update and is counted (float16
     halves its loss scale instead). Every replica applies the same reduced update to its own copy
     of the variables (replica-local assignments: no merge_call, no host round trip), and the EMA
     of the weights (optimizer.ema_decay) follows it.
With `train.jit_compile`, a single-replica run compiles the whole step with XLA, as TPUStrategy
does; multi-replica GPU/CPU runs compile the forward/backward pass (the collectives stay outside
XLA there). `tests/pretrain/test_tpu_step.py` compiles the step for every task and checks it
against the uncompiled one.
"""

import keras
import tensorflow as tf

from pretrain import choices, objectives, optimizers, updates
from pretrain.modeling import build_model, fold_in

PRECISIONS = choices.PRECISIONS   # train.precision; the trainer resolves "auto" to one of these:
_POLICIES = {"float32": None, "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}   # Keras's
# float16's dynamic loss scaling, with Keras's LossScaleOptimizer's defaults: the scale starts at
# 2^15, halves (not below 1) at a non-finite gradient and doubles after this many finite ones.
_INITIAL_LOSS_SCALE = 2.0 ** 15
_LOSS_SCALE_GROWTH_STEPS = 2000
# Micro-batch i of an accumulated update draws its dropout from fold_in(step seed, 1000 + i),
# numbers clear of the dropout sites' (0 .. 3 x layers + 2, folded in the same way). Part of a
# run's random stream: another value would change the dropout masks of every accumulated run.
_MICRO_SEED_OFFSET = 1000


class TrainState:
    """The model, the optimizer and the counters of a run, and the step that updates them.

    Built in the strategy's scope from a checked `run_config.PretrainConfig` (its seed, train and
    optimizer sections). `replica_step(batch)` is the function every replica runs
    (strategy.run), and what a TPU compiles; `step_fn` is it, compiled with XLA when the config
    asks (one replica), and `micro` the forward/backward pass (compiled with several replicas).
    """

    def __init__(self, config, model_config, strategy, task: str, with_nsp: bool, precision: str,
                 on_tpu: bool):
        self.config, self.strategy, self.task, self.with_nsp = config, strategy, task, with_nsp
        self.metric_names = objectives.metric_names(task, with_nsp)
        self.fp16 = precision == "float16"
        keras.utils.set_random_seed(config.seed)  # same seed, same initial weights
        with strategy.scope():
            self.model = build_model(model_config, recompute=config.train.recompute,
                                     with_nsp=with_nsp, dtype_policy=_POLICIES[precision])
            # A pooler without a gradient is left out of the updates (it keeps its initial values).
            untrained = (set() if objectives.pooler_trains(task, with_nsp)
                         else {id(v) for v in self.model.pooler.weights})
            self.variables = [v for v in self.model.trainable_variables if id(v) not in untrained]
            self.optimizer = optimizers.build_optimizer(
                config.optimizer, config.train.steps, variables=self.variables,
                num_layers=model_config.num_hidden_layers)
            self.optimizer.build(self.variables)
            self.grad_transforms = updates.build_gradient_transforms(
                config.optimizer.gradient_transforms, [v.path for v in self.variables])
            ema_decay = config.optimizer.ema_decay
            self.ema = (updates.WeightAverage(self.model.trainable_variables, ema_decay)
                        if ema_decay else None)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            self.loss_scale = tf.Variable(_INITIAL_LOSS_SCALE if self.fp16 else 1.0, trainable=False,
                                          name="loss_scale")
            self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="good_steps")
            self.nonfinite_total = tf.Variable(0, dtype=tf.int64, trainable=False,
                                               name="nonfinite_total")
            self.nonfinite_in_a_row = tf.Variable(0, dtype=tf.int64, trainable=False,
                                                  name="nonfinite_in_a_row")
        self.micro, self.step_fn = self._micro_step, self.replica_step
        if config.train.jit_compile and not on_tpu:   # a TPU compiles the replica step itself
            if strategy.num_replicas_in_sync == 1:
                self.step_fn = tf.function(self.replica_step, jit_compile=True)
            else:
                self.micro = tf.function(self._micro_step, jit_compile=True)

    def checkpoint_objects(self):
        """What a checkpoint holds of the state (the trainer adds the data position)."""
        return dict(model=self.model, optimizer=self.optimizer, step=self.step,
                    loss_scale=self.loss_scale, good_steps=self.good_steps,
                    nonfinite_total=self.nonfinite_total, nonfinite_in_a_row=self.nonfinite_in_a_row,
                    **({"ema": self.ema} if self.ema is not None else {}))

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

    def replica_step(self, batch):
        """One whole update on one replica (see the module docstring): what `strategy.run`
        executes every step, and what TPUStrategy compiles with XLA. Static shapes, no host
        callback, no cross-replica call inside a conditional. Returns ({metric: local sum},
        global gradient norm)."""
        ctx = tf.distribute.get_replica_context()
        seed = fold_in(fold_in(tf.constant([self.config.seed, 0], tf.int64), self.step),
                       ctx.replica_id_in_sync_group)
        grads, metrics, norm = self._replica_grads(batch, seed)
        applied = self._apply(grads, tf.math.is_finite(norm))
        updates.count_update(self.optimizer, applied)   # aggregated counters: not in the cond
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
        k = self.config.train.micro_batches
        counts = ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                                objectives.target_counts(self.task, batch, self.with_nsp))
        if k == 1:
            grads, metrics = self.micro(batch, counts, seed)
        else:
            # [k * b, ...] -> [k, b, ...]; micro-batch i is a gather along the first axis (static
            # shapes for XLA, where a slice at a loop-dependent offset is not).
            split = {key: tf.reshape(value, tf.concat([[k, -1], tf.shape(value)[1:]], 0))
                     for key, value in batch.items()}
            names = self.metric_names

            def body(i, grads, metrics):
                micro = {key: tf.gather(value, i) for key, value in split.items()}
                g, m = self.micro(micro, counts, fold_in(seed, _MICRO_SEED_OFFSET + i))
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
        grads = updates.transform_gradients(self.grad_transforms, grads, self.variables)
        norm = tf.linalg.global_norm(grads)
        if self.config.train.clip_norm:
            grads, _ = tf.clip_by_global_norm(grads, self.config.train.clip_norm, use_norm=norm)
        return grads, metrics, norm

    def _apply(self, grads, finite):
        """The guarded update, in replica context; returns whether it was applied. Every replica
        holds the same reduced gradients, hence takes the same branch; every assignment below is
        to a variable with aggregation NONE, which stays on this replica's copy."""

        def update():
            updates.apply_update(self.optimizer, grads, self.variables)
            if self.ema is not None:
                self.ema.update(self.model.trainable_variables)
            self.nonfinite_in_a_row.assign(0)
            if self.fp16:  # dynamic loss scaling: grow after enough finite steps in a row
                self.good_steps.assign_add(1)
                grow = self.good_steps >= _LOSS_SCALE_GROWTH_STEPS
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
