"""Around the optimizer, inside the trainer's replica step: per-variable gradient transforms, the
update itself, the update counters, and an exponential moving average of the weights.

  * `transform_gradients`: hooks such as per-variable clipping, after the all-reduce and before
    global-norm clipping (`register_gradient_transform` adds your own);
  * `apply_update`: one update in replica context with gradients already reduced over replicas
    and micro-batches: every replica applies it to its own copy of each variable;
  * `count_update`: the optimizers' update counters, outside the non-finite guard's conditional;
  * `WeightAverage`: the EMA of the weights, checkpointed and exportable (`launch.export --ema`).
"""

import re
from typing import Callable, Dict

import tensorflow as tf

from pretrain.optimizers import warn_unmatched


GRADIENT_TRANSFORMS: Dict[str, Callable] = {}


def register_gradient_transform(name):
    """Decorator: `fn(**arguments)` returning `transform(gradient, variable) -> gradient`."""
    def register(factory):
        GRADIENT_TRANSFORMS[name] = factory
        return factory
    return register


@register_gradient_transform("clip_by_norm")
def _clip_by_norm(max_norm):
    if max_norm <= 0:
        raise ValueError("clip_by_norm needs max_norm > 0, got %r" % max_norm)
    return lambda g, v: tf.clip_by_norm(g, max_norm)


@register_gradient_transform("clip_by_value")
def _clip_by_value(limit):
    if limit <= 0:
        raise ValueError("clip_by_value needs limit > 0, got %r" % limit)
    return lambda g, v: tf.clip_by_value(g, -limit, limit)


@register_gradient_transform("scale")
def _scale_gradient(factor):
    return lambda g, v: g * factor


def build_gradient_transforms(specs, paths):
    """[{name, pattern (optional, default all), **arguments}] -> [(transform, set of paths)]."""
    out = []
    for spec in specs or []:
        spec = dict(spec)
        name, pattern = spec.pop("name", None), spec.pop("pattern", "")
        if name not in GRADIENT_TRANSFORMS:
            raise ValueError("Unknown gradient transform %r (%s)"
                             % (name, ", ".join(sorted(GRADIENT_TRANSFORMS))))
        try:
            fn = GRADIENT_TRANSFORMS[name](**spec)
        except TypeError as e:
            raise ValueError("gradient transform %r: %s" % (name, e))
        if pattern:
            warn_unmatched("gradient transform %s" % name, [pattern], paths)
        out.append((fn, {p for p in paths if re.search(pattern, p)}))
    return out


def transform_gradients(transforms, grads, variables):
    """Applies each transform to the gradients of the variables it selects, in order."""
    for fn, selected in transforms:
        grads = [fn(g, v) if v.path in selected else g for g, v in zip(grads, variables)]
    return grads


def apply_update(optimizer, grads, variables):
    """One optimizer update, in replica context, with gradients already reduced over replicas and
    micro-batches: every replica applies the same update to its own copy of each variable.

    Keras's `apply_gradients` all-reduces by itself and goes through `merge_call`, which cannot sit
    inside the `tf.cond` of the trainer's non-finite guard. Here every assignment is to a variable
    with aggregation NONE (the parameters and every optimizer slot), which in replica context
    updates the local copy and needs no cross-replica call: the same code runs under the default
    strategy, MirroredStrategy, MultiWorkerMirroredStrategy and inside a TPU's XLA computation.
    The update counters are advanced by `count_update`, outside any conditional.
    """
    lr = optimizer.learning_rate
    for grad, var in zip(grads, variables):
        optimizer.update_step(grad, var, lr)


def count_update(optimizer, applied=True):
    """Advances the update counter of `optimizer` and of every optimizer it wraps by 1 if
    `applied` (a bool tensor), else 0. Counters are `iterations`, aggregated ONLY_FIRST_REPLICA
    by Keras: in replica context they go through `merge_call`, so this must not run inside a
    `tf.cond` or `tf.while_loop` of the replica function."""
    n = tf.cast(applied, tf.int64)
    while optimizer is not None:
        optimizer.iterations.assign_add(tf.cast(n, optimizer.iterations.dtype))
        optimizer = getattr(optimizer, "inner", None)


class WeightAverage(tf.Module):
    """Exponential moving average of weights: shadow <- decay * shadow + (1 - decay) * w, the
    shadow taking the weights themselves at its first update (as Keras's `use_ema` does).

    Kept in the training checkpoint under the key `ema`, one shadow per entry of `variables`
    (the model's `trainable_variables`, in order). `launch.export --ema` writes the shadows
    instead of the raw weights: build the model, `WeightAverage(model.trainable_variables)`,
    restore both from the checkpoint, then `copy_to(model.trainable_variables)`.
    """

    # decay=0.999: the usual EMA for a direct call; in a run, optimizer.ema_decay (0: no average).
    def __init__(self, variables, decay: float = 0.999, name="ema"):
        super().__init__(name=name)
        if not 0.0 <= decay < 1.0:
            raise ValueError("ema decay must be in [0, 1), got %r" % decay)
        self.decay = decay
        self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="ema_updates")
        self.averages = [tf.Variable(tf.convert_to_tensor(v), trainable=False,
                                     name="ema_%d" % i) for i, v in enumerate(variables)]

    def update(self, variables):
        decay = tf.where(self.updates > 0, self.decay, 0.0)
        for average, v in zip(self.averages, variables):
            average.assign(decay * average + (1.0 - decay) * tf.convert_to_tensor(v))
        self.updates.assign_add(1)

    def copy_to(self, variables):
        for average, v in zip(self.averages, variables):
            v.assign(average)
