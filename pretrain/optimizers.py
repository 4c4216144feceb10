"""Optimizers and learning-rate schedules for pretraining (Keras 3 optimizers).

  * `AdamW`: Adam with decoupled weight decay added to the update (Loshchilov & Hutter);
    `bias_correction=False` gives google-research/bert's AdamWeightDecayOptimizer.
  * `Lamb` (You et al., 2019): bias-corrected Adam moments, weight decay added to the update before
    the layer-wise trust ratio ||w|| / ||update|| (1 when either norm is 0).
Both take name-pattern exclusion lists, separately for weight decay and (LAMB) for layer
adaptation; the default excludes LayerNorm and bias parameters from both, as Google BERT, NVIDIA
and Model Garden do. Patterns are regular expressions searched in the variable's path.

`WarmupDecay`: linear warmup to the peak, then linear, polynomial or cosine decay.

The trainer applies updates through `apply_update` in cross-replica context, with gradients that
are already summed over replicas (one reduction per update, done by the trainer).
"""

import math
import re
from typing import Sequence

import keras
import tensorflow as tf

DEFAULT_EXCLUDE = ("LayerNorm", "layer_norm", "bias")


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


class _Decoupled(keras.optimizers.Optimizer):
    """Shared machinery: Adam moments, per-variable flags from name patterns."""

    def __init__(self, learning_rate, weight_decay, beta_1, beta_2, epsilon,
                 exclude_from_weight_decay: Sequence[str], name, **kw):
        super().__init__(learning_rate=learning_rate, name=name, **kw)
        self.decay_rate, self.beta_1, self.beta_2, self.epsilon = weight_decay, beta_1, beta_2, epsilon
        self.exclude_decay = tuple(exclude_from_weight_decay)
        self._flags = {}

    def build(self, var_list):
        if self.built:
            return
        super().build(var_list)
        self._m, self._v = self.add_optimizer_variables(var_list, ["m", "v"])
        for var in var_list:
            self._flags[self._var_key(var)] = self._variable_flags(var.path)

    def _variable_flags(self, path):
        return {"decay": self.decay_rate > 0 and not _matches(self.exclude_decay, path)}

    def _moments(self, gradient, variable):
        g = tf.cast(gradient, variable.dtype)
        index = self._get_variable_index(variable)
        m, v = self._m[index], self._v[index]
        m.assign(self.beta_1 * m + (1.0 - self.beta_1) * g)
        v.assign(self.beta_2 * v + (1.0 - self.beta_2) * tf.square(g))
        return m, v

    def _bias_corrected(self, m, v, variable):
        t = tf.cast(self.iterations + 1, variable.dtype)
        return m / (1.0 - tf.pow(self.beta_1, t)), v / (1.0 - tf.pow(self.beta_2, t))


class AdamW(_Decoupled):
    def __init__(self, learning_rate=1e-4, weight_decay=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                 exclude_from_weight_decay=DEFAULT_EXCLUDE, bias_correction=True, name="adamw", **kw):
        super().__init__(learning_rate, weight_decay, beta_1, beta_2, epsilon,
                         exclude_from_weight_decay, name, **kw)
        self.bias_correction = bias_correction

    def update_step(self, gradient, variable, learning_rate):
        m, v = self._moments(gradient, variable)
        if self.bias_correction:
            m, v = self._bias_corrected(m, v, variable)
        update = m / (tf.sqrt(v) + self.epsilon)
        if self._flags[self._var_key(variable)]["decay"]:
            update += self.decay_rate * variable
        variable.assign_sub(tf.cast(learning_rate, variable.dtype) * update)


class Lamb(_Decoupled):
    def __init__(self, learning_rate=1e-3, weight_decay=0.01, beta_1=0.9, beta_2=0.999, epsilon=1e-6,
                 exclude_from_weight_decay=DEFAULT_EXCLUDE, exclude_from_layer_adaptation=DEFAULT_EXCLUDE,
                 name="lamb", **kw):
        super().__init__(learning_rate, weight_decay, beta_1, beta_2, epsilon,
                         exclude_from_weight_decay, name, **kw)
        self.exclude_adaptation = tuple(exclude_from_layer_adaptation)

    def _variable_flags(self, path):
        flags = super()._variable_flags(path)
        flags["adapt"] = not _matches(self.exclude_adaptation, path)
        return flags

    def update_step(self, gradient, variable, learning_rate):
        flags = self._flags[self._var_key(variable)]
        m, v = self._bias_corrected(*self._moments(gradient, variable), variable)
        update = m / (tf.sqrt(v) + self.epsilon)
        if flags["decay"]:
            update += self.decay_rate * variable
        ratio = 1.0
        if flags["adapt"]:
            w_norm, u_norm = tf.norm(variable), tf.norm(update)
            ratio = tf.where((w_norm > 0) & (u_norm > 0), w_norm / tf.maximum(u_norm, 1e-30), 1.0)
        variable.assign_sub(tf.cast(learning_rate, variable.dtype) * ratio * update)


def _matches(patterns, path):
    return any(re.search(p, path) for p in patterns)


def apply_update(optimizer, grads, variables, strategy):
    """One optimizer update in cross-replica context with already-reduced gradients.

    Keras 3 optimizers all-reduce gradients themselves when called in replica context and use
    `merge_call`, which cannot sit inside the `tf.cond` of our non-finite guard; here each
    variable is updated on every device with that device's (identical) reduced gradient.
    """
    lr = optimizer.learning_rate
    for grad, var in zip(grads, variables):
        strategy.extended.update(var.value, lambda v, g: optimizer.update_step(g, v, lr),
                                 args=(grad,), group=False)
    optimizer.iterations.assign_add(1)


def build_optimizer(config, total_steps):
    """From a config's `optimizer` section: name, learning rate schedule and arguments."""
    c = config
    schedule = WarmupDecay(c.learning_rate, c.warmup_steps, c.get("decay_steps") or total_steps,
                           decay=c.get("decay", "linear"), power=c.get("power", 1.0),
                           end=c.get("end_learning_rate", 0.0), step_offset=c.get("step_offset", 0))
    kwargs = dict(learning_rate=schedule, weight_decay=c.get("weight_decay", 0.01),
                  beta_1=c.get("beta_1", 0.9), beta_2=c.get("beta_2", 0.999),
                  epsilon=c.get("epsilon", 1e-6),
                  exclude_from_weight_decay=tuple(c.get("exclude_from_weight_decay", DEFAULT_EXCLUDE)))
    if c.name == "adamw":
        return AdamW(bias_correction=c.get("bias_correction", True), **kwargs)
    if c.name == "lamb":
        return Lamb(exclude_from_layer_adaptation=tuple(
            c.get("exclude_from_layer_adaptation", DEFAULT_EXCLUDE)), **kwargs)
    raise ValueError("Unknown optimizer %r (adamw, lamb)" % c.name)
