"""Optimizers, schedules and the derived-optimizer toolkit for pretraining (Keras 3 optimizers).

Base optimizers (name-pattern exclusion lists are regular expressions searched in variable paths;
the default excludes LayerNorm and bias parameters, as Google BERT, NVIDIA and Model Garden do):
  * `AdamW`: Adam with decoupled weight decay added to the update (Loshchilov & Hutter);
    `bias_correction=False` gives google-research/bert's AdamWeightDecayOptimizer.
  * `Lamb` (You et al., 2019): bias-corrected Adam moments, weight decay added to the update before
    the layer-wise trust ratio ||w|| / ||update|| (1 when either norm is 0); separate exclusion
    lists for decay and for adaptation.
  Both take `lazy`: patterns of embedding tables whose rows absent from the batch (an all-zero
  gradient row, or a row missing from an IndexedSlices gradient) keep their values and moments.
  Keras's own `adam` / `sgd` are available as bases too (they have no decoupled decay here).

Wrappers (any Keras optimizer inside; they compose, e.g. Lookahead(ScaledLR(Lamb))):
  * `ScaledLR`: per-variable learning-rate multipliers (name patterns, or layer-wise decay).
  * `Lookahead` (Zhang et al., 2019): k fast steps, then slow += alpha * (fast - slow), fast = slow.

Schedules: `WarmupDecay` (linear warmup, then linear/polynomial/cosine/constant) and
`PiecewiseLinear` ({step: multiplier}, bert4keras's `piecewise_linear`); both take `step_offset`
so phase 2 of a two-phase recipe continues the step count.

Around the optimizer, in the trainer: `transform_gradients` (per-variable hooks such as per-variable
clipping, after the all-reduce and before global-norm clipping), `apply_update` (one update in
replica context with gradients already summed over replicas and micro-batches), `count_update`
(the update counters: they count updates, never micro-batches) and `WeightAverage` (EMA of the
weights, exportable).
`build_optimizer(config.optimizer, total_steps)` builds all of it from a config.
"""

import math
import re
import warnings
from typing import Callable, Dict, Sequence

import keras
import tensorflow as tf

DEFAULT_EXCLUDE = ("LayerNorm", "bias")
SCHEDULES = ("warmup_decay", "piecewise")


class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak` over `warmup_steps`, then decay to `end` at `decay_steps`."""

    def __init__(self, peak, warmup_steps, decay_steps, decay="linear", power=1.0, end=0.0,
                 step_offset=0):
        if decay not in ("linear", "polynomial", "cosine", "constant"):
            raise ValueError("Unknown decay %r (linear, polynomial, cosine, constant)" % decay)
        if warmup_steps < 0 or decay_steps < warmup_steps:
            raise ValueError("Need 0 <= warmup_steps (%d) <= decay_steps (%d)" % (warmup_steps, decay_steps))
        self.peak, self.warmup_steps, self.decay_steps = float(peak), int(warmup_steps), int(decay_steps)
        self.decay, self.power, self.end = decay, float(power), float(end)
        self.step_offset = int(step_offset)  # phase 2 of a two-phase recipe continues the count

    def __call__(self, step):
        step = tf.cast(step, tf.float32) + self.step_offset
        warm = self.peak * step / max(self.warmup_steps, 1)
        span = max(self.decay_steps - self.warmup_steps, 1)
        frac = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
        if self.decay == "cosine":
            decayed = self.end + (self.peak - self.end) * 0.5 * (1.0 + tf.cos(math.pi * frac))
        elif self.decay == "constant":
            decayed = tf.constant(self.peak)
        else:
            power = 1.0 if self.decay == "linear" else self.power
            decayed = self.end + (self.peak - self.end) * (1.0 - frac) ** power
        return tf.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return dict(peak=self.peak, warmup_steps=self.warmup_steps, decay_steps=self.decay_steps,
                    decay=self.decay, power=self.power, end=self.end, step_offset=self.step_offset)


class PiecewiseLinear(keras.optimizers.schedules.LearningRateSchedule):
    """`base` times a multiplier interpolated linearly between (step, multiplier) points.

    bert4keras's `piecewise_linear`: a point (0, 0) is prepended when the first step is not 0, and
    the multiplier stays at its last value after the last point. {1000: 1, 2000: 0.1} warms up
    over 1000 steps, decays to a tenth by step 2000 and stays there. `points` is a dict or a list
    of pairs; steps must be non-negative integers, strictly increasing in the order given.
    """

    def __init__(self, base, points, step_offset=0):
        pairs = list(points.items()) if isinstance(points, dict) else [tuple(p) for p in points]
        if not pairs:
            raise ValueError("piecewise schedule has no points")
        try:
            pairs = [(int(step), float(mult)) for step, mult in pairs]
        except (TypeError, ValueError):
            raise ValueError("piecewise schedule points must be (step, multiplier) pairs, got %r"
                             % (points,))
        steps = [step for step, _ in pairs]
        if isinstance(points, dict):
            pairs.sort()
            steps.sort()
        if steps[0] < 0 or any(b <= a for a, b in zip(steps, steps[1:])):
            raise ValueError("piecewise schedule steps must be non-negative and strictly increasing, "
                             "got %s" % steps)
        if any(mult < 0 for _, mult in pairs):
            raise ValueError("piecewise schedule multipliers must be >= 0, got %r" % pairs)
        if pairs[0][0] != 0:
            pairs.insert(0, (0, 0.0))
        self.base, self.points, self.step_offset = float(base), pairs, int(step_offset)

    def __call__(self, step):
        t = tf.cast(step, tf.float32) + self.step_offset
        mult = tf.constant(self.points[-1][1])
        for (t0, m0), (t1, m1) in reversed(list(zip(self.points, self.points[1:]))):
            mult = tf.where(t < t1, m0 + (m1 - m0) * (t - t0) / (t1 - t0), mult)
        return self.base * mult

    def get_config(self):
        return dict(base=self.base, points=self.points, step_offset=self.step_offset)


def _matches(patterns, path):
    return any(re.search(p, path) for p in patterns)


def warn_unmatched(what: str, patterns, paths):
    """Warns about each pattern that matches none of the variable paths (a likely typo)."""
    for p in patterns:
        if not any(re.search(p, path) for path in paths):
            warnings.warn("%s pattern %r matches no variable. The variables are: %s"
                          % (what, p, ", ".join(paths)), stacklevel=3)


class _Decoupled(keras.optimizers.Optimizer):
    """Shared machinery: Adam moments, per-variable flags from name patterns, lazy rows."""

    def __init__(self, learning_rate, weight_decay, beta_1, beta_2, epsilon,
                 exclude_from_weight_decay: Sequence[str], lazy: Sequence[str], name, **kw):
        super().__init__(learning_rate=learning_rate, name=name, **kw)
        if weight_decay < 0 or not 0 <= beta_1 < 1 or not 0 <= beta_2 < 1 or epsilon <= 0:
            raise ValueError("%s needs weight_decay >= 0, 0 <= beta_1, beta_2 < 1 and epsilon > 0; "
                             "got %r, %r, %r, %r" % (name, weight_decay, beta_1, beta_2, epsilon))
        self.decay_rate, self.beta_1, self.beta_2, self.epsilon = weight_decay, beta_1, beta_2, epsilon
        self.exclude_decay, self.lazy = tuple(exclude_from_weight_decay), tuple(lazy)
        self._flags = {}

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._m, self._v = self.add_optimizer_variables(var_list, ["m", "v"])
        for var in var_list:
            self._flags[self._var_key(var)] = self._variable_flags(var.path)
        paths = [v.path for v in var_list]
        if self.decay_rate > 0:
            warn_unmatched("exclude_from_weight_decay", self.exclude_decay, paths)
        warn_unmatched("lazy", self.lazy, paths)

    def _variable_flags(self, path):
        return {"decay": self.decay_rate > 0 and not _matches(self.exclude_decay, path),
                "lazy": _matches(self.lazy, path)}

    def update_step(self, gradient, variable, learning_rate):
        flags = self._flags[self._var_key(variable)]
        present = None
        if isinstance(gradient, tf.IndexedSlices):
            gradient, rows = tf.convert_to_tensor(gradient), gradient.indices
            if flags["lazy"]:
                present = tf.scatter_nd(rows[:, None], tf.ones_like(rows, tf.int32),
                                        [tf.shape(gradient)[0]])[:, None] > 0
        elif flags["lazy"] and gradient.shape.rank == 2:
            present = tf.reduce_any(tf.not_equal(gradient, 0), axis=1, keepdims=True)
        g = tf.cast(gradient, variable.dtype)
        index = self._get_variable_index(variable)
        m, v = self._m[index], self._v[index]
        new_m = self.beta_1 * m + (1.0 - self.beta_1) * g
        new_v = self.beta_2 * v + (1.0 - self.beta_2) * tf.square(g)
        update = self._direction(new_m, new_v, variable, flags)
        if present is not None:   # absent rows keep their moments, and (below) their values
            new_m, new_v = tf.where(present, new_m, m), tf.where(present, new_v, v)
            update = tf.where(present, update, 0.0)
        m.assign(new_m)
        v.assign(new_v)
        variable.assign_sub(tf.cast(learning_rate, variable.dtype) * self._scale(update, variable, flags)
                            * update)

    def _direction(self, m, v, variable, flags):
        """The update before the learning rate: Adam's m / (sqrt(v) + eps) plus weight decay."""
        if self._bias_correction:
            t = tf.cast(self.iterations + 1, variable.dtype)
            m, v = m / (1.0 - tf.pow(self.beta_1, t)), v / (1.0 - tf.pow(self.beta_2, t))
        update = m / (tf.sqrt(v) + self.epsilon)
        if flags["decay"]:
            update += self.decay_rate * variable
        return update

    def _scale(self, update, variable, flags):
        return 1.0


class AdamW(_Decoupled):
    def __init__(self, learning_rate=1e-4, weight_decay=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                 exclude_from_weight_decay=DEFAULT_EXCLUDE, bias_correction=True, lazy=(),
                 name="adamw", **kw):
        super().__init__(learning_rate, weight_decay, beta_1, beta_2, epsilon,
                         exclude_from_weight_decay, lazy, name, **kw)
        self._bias_correction = bias_correction


class Lamb(_Decoupled):
    _bias_correction = True

    def __init__(self, learning_rate=1e-3, weight_decay=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                 exclude_from_weight_decay=DEFAULT_EXCLUDE, exclude_from_layer_adaptation=DEFAULT_EXCLUDE,
                 lazy=(), name="lamb", **kw):
        super().__init__(learning_rate, weight_decay, beta_1, beta_2, epsilon,
                         exclude_from_weight_decay, lazy, name, **kw)
        self.exclude_adaptation = tuple(exclude_from_layer_adaptation)

    def build(self, var_list):
        if not self.built:
            warn_unmatched("exclude_from_layer_adaptation", self.exclude_adaptation,
                           [v.path for v in var_list])
        super().build(var_list)

    def _variable_flags(self, path):
        flags = super()._variable_flags(path)
        flags["adapt"] = not _matches(self.exclude_adaptation, path)
        return flags

    def _scale(self, update, variable, flags):
        """The trust ratio ||w|| / ||update||, 1 when either norm is 0 or adaptation is off."""
        if not flags["adapt"]:
            return 1.0
        w_norm, u_norm = tf.norm(variable), tf.norm(update)
        return tf.where((w_norm > 0) & (u_norm > 0), w_norm / tf.maximum(u_norm, 1e-30), 1.0)


class _Wrapper(keras.optimizers.Optimizer):
    """An optimizer around another: same learning rate, the inner one's slots built with ours."""

    def __init__(self, inner: keras.optimizers.Optimizer, name, **kw):
        if not isinstance(inner, keras.optimizers.Optimizer):
            raise ValueError("%s wraps a Keras optimizer, got %r" % (name, inner))
        super().__init__(learning_rate=0.0, name=name, **kw)
        self.inner = inner

    @property
    def learning_rate(self):
        return self.inner.learning_rate

    @learning_rate.setter
    def learning_rate(self, value):   # Keras's constructor sets it; the inner optimizer owns it
        self._learning_rate = value

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self.inner.build(var_list)


class ScaledLR(_Wrapper):
    """Per-variable learning-rate multipliers: `multipliers` maps variable paths to factors
    (1 for paths not listed). See `pattern_multipliers` and `layerwise_multipliers`."""

    def __init__(self, inner, multipliers: Dict[str, float], name="scaled_lr", **kw):
        super().__init__(inner, name, **kw)
        if any(m < 0 for m in multipliers.values()):
            raise ValueError("learning-rate multipliers must be >= 0, got %r" % multipliers)
        self.multipliers = dict(multipliers)
        self._scales = {}

    def build(self, var_list):
        if not self.built:
            self._scales = {self._var_key(v): self.multipliers.get(v.path, 1.0) for v in var_list}
        super().build(var_list)

    def update_step(self, gradient, variable, learning_rate):
        scale = self._scales[self._var_key(variable)]
        self.inner.update_step(gradient, variable, learning_rate * scale)


def pattern_multipliers(rules, paths):
    """[(pattern, multiplier), ...] -> {path: multiplier}; the first matching pattern wins."""
    warn_unmatched("lr_multipliers", [p for p, _ in rules], paths)
    out = {}
    for path in paths:
        for pattern, mult in rules:
            if re.search(pattern, path):
                out[path] = float(mult)
                break
    return out


def layerwise_multipliers(decay: float, num_layers: int, paths):
    """Layer-wise LR decay: block i gets decay ** (num_layers - i), the embeddings
    decay ** (num_layers + 1), everything above the encoder (heads, pooler) 1."""
    if not 0 < decay <= 1:
        raise ValueError("layer_decay must be in (0, 1], got %r" % decay)
    out = {}
    for path in paths:
        block = re.search(r"(?:^|/)layer_(\d+)/", path)
        if block:
            depth = int(block.group(1)) + 1
        elif re.search(r"(?:^|/)embeddings/", path):
            depth = 0
        else:
            depth = num_layers + 1
        out[path] = decay ** (num_layers + 1 - depth)
    return out


class Lookahead(_Wrapper):
    """Lookahead (Zhang et al., 2019) around any Keras optimizer: the inner optimizer takes k fast
    steps; then slow <- slow + alpha * (fast - slow) and fast <- slow. The slow weights start as
    the parameters at the first update (so weights loaded before training are honoured), and k
    counts optimizer updates (an accumulated update is one)."""

    def __init__(self, inner, k: int = 5, alpha: float = 0.5, name="lookahead", **kw):
        if int(k) != k or k < 1:
            raise ValueError("Lookahead k must be an integer >= 1, got %r" % k)
        if not 0 < alpha <= 1:
            raise ValueError("Lookahead alpha must be in (0, 1], got %r" % alpha)
        super().__init__(inner, name, **kw)
        self.k, self.alpha = int(k), float(alpha)

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._slow = self.add_optimizer_variables(var_list, "slow")

    def update_step(self, gradient, variable, learning_rate):
        slow = self._slow[self._get_variable_index(variable)]
        # Conditionals, not tf.where: the k-1 updates without a sync pay nothing extra.
        def start():
            slow.assign(variable)

        def sync():
            slow.assign_add(self.alpha * (variable - slow))
            variable.assign(slow)

        tf.cond(tf.equal(self.iterations, 0), start, lambda: None)
        self.inner.update_step(gradient, variable, learning_rate)
        tf.cond(tf.equal((self.iterations + 1) % self.k, 0), sync, lambda: None)


# ------------------------------------------------------------------ gradient transforms

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
            raise ValueError("Unknown gradient transform %r (%s)" % (name, ", ".join(sorted(GRADIENT_TRANSFORMS))))
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


# ------------------------------------------------------------------------------- updates

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


# ------------------------------------------------------------------------------ from config

BASES = ("adamw", "lamb", "adam", "sgd")


def build_schedule(c, total_steps):
    schedule = c.get("schedule", "warmup_decay")
    if schedule == "warmup_decay":
        return WarmupDecay(c.learning_rate, c.get("warmup_steps", 0), c.get("decay_steps") or total_steps,
                           decay=c.get("decay", "linear"), power=c.get("power", 1.0),
                           end=c.get("end_learning_rate", 0.0), step_offset=c.get("step_offset", 0))
    if schedule == "piecewise":
        points = c.get("piecewise")
        if hasattr(points, "to_dict"):
            points = points.to_dict()
        return PiecewiseLinear(c.learning_rate, points or [], step_offset=c.get("step_offset", 0))
    raise ValueError("Unknown schedule %r (%s)" % (schedule, ", ".join(SCHEDULES)))


def build_optimizer(config, total_steps, variables=None, num_layers=None):
    """From a config's `optimizer` section (see configs/base.py): base optimizer, schedule and the
    wrappers asked for. `variables` (the trainable variables) are needed for learning-rate
    multipliers; `num_layers` for layer-wise decay. Raises ValueError on bad settings."""
    c = config
    schedule = build_schedule(c, total_steps)
    name = c.name
    if name not in BASES:
        raise ValueError("Unknown optimizer %r (%s)" % (name, ", ".join(BASES)))
    decay = c.get("weight_decay", 0.01)
    lazy = tuple(c.get("lazy", ()) or ())
    if name in ("adamw", "lamb"):
        kwargs = dict(learning_rate=schedule, weight_decay=decay,
                      beta_1=c.get("beta_1", 0.9), beta_2=c.get("beta_2", 0.999),
                      epsilon=c.get("epsilon", 1e-6), lazy=lazy,
                      exclude_from_weight_decay=tuple(c.get("exclude_from_weight_decay", DEFAULT_EXCLUDE)))
        if name == "adamw":
            optimizer = AdamW(bias_correction=c.get("bias_correction", True), **kwargs)
        else:
            optimizer = Lamb(exclude_from_layer_adaptation=tuple(
                c.get("exclude_from_layer_adaptation", DEFAULT_EXCLUDE)), **kwargs)
    else:
        if decay or lazy:
            raise ValueError("optimizer %r has no decoupled weight decay or lazy rows here; set "
                             "weight_decay=0 and lazy=() or use adamw/lamb" % name)
        optimizer = (keras.optimizers.Adam(learning_rate=schedule, beta_1=c.get("beta_1", 0.9),
                                           beta_2=c.get("beta_2", 0.999), epsilon=c.get("epsilon", 1e-7))
                     if name == "adam" else
                     keras.optimizers.SGD(learning_rate=schedule, momentum=c.get("momentum", 0.0)))

    rules = [tuple(r) for r in (c.get("lr_multipliers", ()) or ())]
    layer_decay = c.get("layer_decay", 0.0) or 0.0
    if rules or layer_decay:
        if variables is None:
            raise ValueError("lr_multipliers / layer_decay need the model's variables")
        paths = [v.path for v in variables]
        multipliers = {}
        if layer_decay:
            if num_layers is None:
                raise ValueError("layer_decay needs the number of layers")
            multipliers = layerwise_multipliers(layer_decay, num_layers, paths)
        for path, mult in pattern_multipliers(rules, paths).items():   # on top of layer decay
            multipliers[path] = multipliers.get(path, 1.0) * mult
        optimizer = ScaledLR(optimizer, multipliers)

    lookahead = c.get("lookahead") or {}
    if lookahead.get("k", 0) != 0:   # 0: off
        optimizer = Lookahead(optimizer, k=lookahead["k"], alpha=lookahead.get("alpha", 0.5))
    return optimizer
