"""Optimizers for pretraining (Keras 3 optimizers) and the wrappers that derive others from them.

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

Each updates the same way through the trainer's `updates.apply_update`, Keras's `apply_gradients`
and `model.fit`, and is Keras-serializable (get_config / from_config, `keras.optimizers.serialize`).

`build_optimizer(config.optimizer, total_steps)` builds all of it from a config's typed section
(`run_config.OptimizerConfig`), with a schedule from `schedules` (the update step around it is in
`updates`). The base optimizers are `choices.OPTIMIZERS`.
"""

import re
import warnings
from typing import Dict, Sequence

import keras
import tensorflow as tf

from pretrain import run_config
from pretrain.choices import DECOUPLED, OPTIMIZERS
from pretrain.schedules import build_schedule

# The constructors' defaults are the config's (run_config.OptimizerConfig), so that a direct call
# and a run from configs/base.py build the same optimizer.
_DEFAULTS = run_config.OptimizerConfig()


def _matches(patterns, path):
    return any(re.search(p, path) for p in patterns)


def warn_unmatched(what: str, patterns, paths):
    """Warns about each pattern that matches none of the variable paths (a likely typo)."""
    for p in patterns:
        if not any(re.search(p, path) for path in paths):
            warnings.warn("%s pattern %r matches no variable. The variables are: %s"
                          % (what, p, ", ".join(paths)), stacklevel=3)


class _Decoupled(keras.optimizers.Optimizer):
    """Shared machinery: Adam moments, per-variable flags from name patterns, lazy rows.

    The weight decay is ours, inside `update_step`, and kept as `decoupled_weight_decay`. Keras's
    base class has a decay of its own, its attribute `weight_decay`, which its `apply` (so
    `apply_gradients` and `model.fit`) subtracts from every variable before the update: that one
    stays None here, or LayerNorm and biases would be decayed and the other variables twice.
    Keras's `exclude_from_weight_decay(var_list, var_names)` excludes variables from ours.
    """

    def __init__(self, learning_rate, weight_decay, beta_1, beta_2, epsilon,
                 exclude_from_weight_decay: Sequence[str], lazy: Sequence[str], name, **kw):
        super().__init__(learning_rate=learning_rate, name=name, **kw)
        if weight_decay < 0 or not 0 <= beta_1 < 1 or not 0 <= beta_2 < 1 or epsilon <= 0:
            raise ValueError("%s needs weight_decay >= 0, 0 <= beta_1, beta_2 < 1 and epsilon > 0; "
                             "got %r, %r, %r, %r" % (name, weight_decay, beta_1, beta_2, epsilon))
        self.decoupled_weight_decay = weight_decay
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon
        self.exclude_decay, self.lazy = tuple(exclude_from_weight_decay), tuple(lazy)
        self._flags = {}

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._m, self._v = self.add_optimizer_variables(var_list, ["m", "v"])
        for var in var_list:
            self._flags[self._var_key(var)] = self._variable_flags(var)
        paths = [v.path for v in var_list]
        if self.decoupled_weight_decay > 0:
            warn_unmatched("exclude_from_weight_decay", self.exclude_decay, paths)
        warn_unmatched("lazy", self.lazy, paths)

    def _variable_flags(self, var):
        return {"decay": (self.decoupled_weight_decay > 0 and not _matches(self.exclude_decay, var.path)
                          and self._use_weight_decay(var)),
                "lazy": _matches(self.lazy, var.path)}

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
            update += self.decoupled_weight_decay * variable
        return update

    def _scale(self, update, variable, flags):
        return 1.0

    def get_config(self):
        config = super().get_config()
        config.update(weight_decay=self.decoupled_weight_decay, beta_1=self.beta_1, beta_2=self.beta_2,
                      epsilon=self.epsilon, exclude_from_weight_decay=list(self.exclude_decay),
                      lazy=list(self.lazy))
        return config


@keras.saving.register_keras_serializable(package="pretrain")
class AdamW(_Decoupled):
    def __init__(self, learning_rate=_DEFAULTS.learning_rate, weight_decay=_DEFAULTS.weight_decay,
                 beta_1=_DEFAULTS.beta_1, beta_2=_DEFAULTS.beta_2, epsilon=_DEFAULTS.epsilon,
                 exclude_from_weight_decay=_DEFAULTS.exclude_from_weight_decay,
                 bias_correction=_DEFAULTS.bias_correction, lazy=_DEFAULTS.lazy, name="adamw", **kw):
        super().__init__(learning_rate, weight_decay, beta_1, beta_2, epsilon,
                         exclude_from_weight_decay, lazy, name, **kw)
        self._bias_correction = bias_correction

    def get_config(self):
        return dict(super().get_config(), bias_correction=self._bias_correction)


@keras.saving.register_keras_serializable(package="pretrain")
class Lamb(_Decoupled):
    _bias_correction = True

    # learning_rate: the config's 1e-4 (a direct call defaulted to 1e-3 before; runs set it).
    def __init__(self, learning_rate=_DEFAULTS.learning_rate, weight_decay=_DEFAULTS.weight_decay,
                 beta_1=_DEFAULTS.beta_1, beta_2=_DEFAULTS.beta_2, epsilon=_DEFAULTS.epsilon,
                 exclude_from_weight_decay=_DEFAULTS.exclude_from_weight_decay,
                 exclude_from_layer_adaptation=_DEFAULTS.exclude_from_layer_adaptation,
                 lazy=_DEFAULTS.lazy, name="lamb", **kw):
        super().__init__(learning_rate, weight_decay, beta_1, beta_2, epsilon,
                         exclude_from_weight_decay, lazy, name, **kw)
        self.exclude_adaptation = tuple(exclude_from_layer_adaptation)

    def build(self, var_list):
        if not self.built:
            warn_unmatched("exclude_from_layer_adaptation", self.exclude_adaptation,
                           [v.path for v in var_list])
        super().build(var_list)

    def _variable_flags(self, var):
        flags = super()._variable_flags(var)
        flags["adapt"] = not _matches(self.exclude_adaptation, var.path)
        return flags

    def _scale(self, update, variable, flags):
        """The trust ratio ||w|| / ||update||, 1 when either norm is 0 or adaptation is off."""
        if not flags["adapt"]:
            return 1.0
        w_norm, u_norm = tf.norm(variable), tf.norm(update)
        # tf.where computes both branches: the floor keeps the discarded one finite when u_norm
        # is 0, so no inf or NaN is computed at all (tf.debugging.enable_check_numerics stays quiet).
        return tf.where((w_norm > 0) & (u_norm > 0), w_norm / tf.maximum(u_norm, _TINY_NORM), 1.0)

    def get_config(self):
        return dict(super().get_config(), exclude_from_layer_adaptation=list(self.exclude_adaptation))


_TINY_NORM = 1e-30   # a floor for a norm that is divided by: far below any real update's norm


# What Keras does in an optimizer's own `apply`, around its update_step: a wrapped optimizer's
# `apply` never runs (the wrapper calls its update_step), so these would silently do nothing.
APPLY_SETTINGS = ("weight_decay", "clipnorm", "clipvalue", "global_clipnorm", "use_ema",
                  "loss_scale_factor", "gradient_accumulation_steps")


class _Wrapper(keras.optimizers.Optimizer):
    """An optimizer around another: same learning rate, the inner one's slots built with ours."""

    def __init__(self, inner: keras.optimizers.Optimizer, name, **kw):
        if not isinstance(inner, keras.optimizers.Optimizer):
            raise ValueError("%s wraps a Keras optimizer, got %r" % (name, inner))
        ignored = ["%s=%r" % (k, getattr(inner, k)) for k in APPLY_SETTINGS if getattr(inner, k, None)]
        if ignored:
            raise ValueError("%s: the wrapped optimizer's %s would be ignored (Keras applies it in an "
                             "optimizer's own apply, which a wrapper does not call); pass it to the "
                             "outermost wrapper instead" % (name, ", ".join(ignored)))
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

    def apply(self, grads, trainable_variables=None):
        """Keras's update (`apply_gradients`, `model.fit`) advances only this optimizer's counter:
        the wrapped ones' (their schedule, bias correction) advance with it, as
        `updates.count_update` does on the trainer's path."""
        before = tf.identity(self.iterations)
        super().apply(grads, trainable_variables)
        advanced = tf.identity(self.iterations) - before   # 0 without gradients or while accumulating
        inner = self.inner
        while inner is not None:
            inner.iterations.assign_add(tf.cast(advanced, inner.iterations.dtype))
            inner = getattr(inner, "inner", None)

    def get_config(self):
        config = super().get_config()
        del config["learning_rate"]   # the inner optimizer's
        return dict(config, inner=keras.optimizers.serialize(self.inner))

    @classmethod
    def from_config(cls, config, custom_objects=None):
        inner = keras.optimizers.deserialize(config["inner"], custom_objects=custom_objects)
        return cls(**dict(config, inner=inner))


@keras.saving.register_keras_serializable(package="pretrain")
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

    def get_config(self):
        return dict(super().get_config(), multipliers=dict(self.multipliers))


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


@keras.saving.register_keras_serializable(package="pretrain")
class Lookahead(_Wrapper):
    """Lookahead (Zhang et al., 2019) around any Keras optimizer: the inner optimizer takes k fast
    steps; then slow <- slow + alpha * (fast - slow) and fast <- slow. The slow weights start as
    the parameters at the first update (so weights loaded before training are honoured), and k
    counts optimizer updates (an accumulated update is one)."""

    # k=5: the paper's; the config's lookahead.k=0 means no Lookahead at all (build_optimizer).
    def __init__(self, inner, k: int = 5, alpha: float = _DEFAULTS.lookahead.alpha, name="lookahead",
                 **kw):
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

    def get_config(self):
        return dict(super().get_config(), k=self.k, alpha=self.alpha)


def build_optimizer(config, total_steps, variables=None, num_layers=None):
    """From a config's `optimizer` section (a `run_config.OptimizerConfig`, or a mapping whose
    missing fields take their defaults): base optimizer, schedule and the wrappers asked for.
    `variables` (the trainable variables) are needed for learning-rate multipliers; `num_layers`
    for layer-wise decay. Raises ValueError on bad settings, and on fields it does not know
    (naming the new name of a renamed one)."""
    config = run_config.section(run_config.OptimizerConfig, config, "optimizer.")
    schedule = build_schedule(config, total_steps)
    name = config.name
    if name not in OPTIMIZERS:
        raise ValueError("Unknown optimizer %r (%s)" % (name, ", ".join(OPTIMIZERS)))
    problem = run_config.decay_problem(name, config.weight_decay, config.lazy)
    if problem:
        raise ValueError(problem)
    if name in DECOUPLED:
        kwargs = dict(learning_rate=schedule, weight_decay=config.weight_decay, beta_1=config.beta_1,
                      beta_2=config.beta_2, epsilon=config.epsilon, lazy=tuple(config.lazy),
                      exclude_from_weight_decay=tuple(config.exclude_from_weight_decay))
        if name == "adamw":
            optimizer = AdamW(bias_correction=config.bias_correction, **kwargs)
        else:
            optimizer = Lamb(exclude_from_layer_adaptation=tuple(config.exclude_from_layer_adaptation),
                             **kwargs)
    elif name == "adam":
        # The config's epsilon (1e-6), as every run has had; Keras's own default is 1e-7.
        optimizer = keras.optimizers.Adam(learning_rate=schedule, beta_1=config.beta_1,
                                          beta_2=config.beta_2, epsilon=config.epsilon)
    else:
        optimizer = keras.optimizers.SGD(learning_rate=schedule, momentum=config.momentum)

    rules = [tuple(r) for r in config.lr_multipliers]
    if rules or config.layer_decay:
        if variables is None:
            raise ValueError("lr_multipliers / layer_decay need the model's variables")
        paths = [v.path for v in variables]
        multipliers = {}
        if config.layer_decay:
            if num_layers is None:
                raise ValueError("layer_decay needs the number of layers")
            multipliers = layerwise_multipliers(config.layer_decay, num_layers, paths)
        for path, mult in pattern_multipliers(rules, paths).items():   # on top of layer decay
            multipliers[path] = multipliers.get(path, 1.0) * mult
        optimizer = ScaledLR(optimizer, multipliers)

    if config.lookahead.k != 0:   # 0: off
        optimizer = Lookahead(optimizer, k=config.lookahead.k, alpha=config.lookahead.alpha)
    return optimizer
