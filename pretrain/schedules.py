"""Learning-rate schedules for pretraining (Keras 3 `LearningRateSchedule`s).

  * `WarmupDecay`: linear warmup, then linear / polynomial / cosine / constant down to an end
    value (the shape is `decay_shape` in the config).
  * `PiecewiseLinear`: {step: multiplier} with linear interpolation (bert4keras's
    `piecewise_linear`).
Both take `step_offset`, so phase 2 of a two-phase recipe continues the step count. The
optimizer calls a schedule with its update counter, which counts updates, never micro-batches.
"""

import math

import keras
import tensorflow as tf

from pretrain import run_config
from pretrain.choices import DECAY_SHAPES, SCHEDULES

# The constructors' defaults are the config's optimizer section's (run_config.OptimizerConfig).
_DEFAULTS = run_config.OptimizerConfig()


@keras.saving.register_keras_serializable(package="pretrain")
class WarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak` over `warmup_steps`, then down to `end` at `decay_steps` along
    `shape`: linear, polynomial (with `power`), cosine, or constant (no decay)."""

    def __init__(self, peak, warmup_steps, decay_steps, shape=_DEFAULTS.decay_shape, power=_DEFAULTS.power,
                 end=_DEFAULTS.end_learning_rate, step_offset=_DEFAULTS.step_offset):
        if shape not in DECAY_SHAPES:
            raise ValueError("Unknown decay shape %r (%s)" % (shape, ", ".join(DECAY_SHAPES)))
        if warmup_steps < 0 or decay_steps < warmup_steps:
            raise ValueError("Need 0 <= warmup_steps (%d) <= decay_steps (%d)" % (warmup_steps, decay_steps))
        self.peak, self.warmup_steps, self.decay_steps = float(peak), int(warmup_steps), int(decay_steps)
        self.shape, self.power, self.end = shape, float(power), float(end)
        self.step_offset = int(step_offset)  # phase 2 of a two-phase recipe continues the count

    def __call__(self, step):
        step = tf.cast(step, tf.float32) + self.step_offset
        warm = self.peak * step / max(self.warmup_steps, 1)
        span = max(self.decay_steps - self.warmup_steps, 1)
        frac = tf.clip_by_value((step - self.warmup_steps) / span, 0.0, 1.0)
        if self.shape == "cosine":
            decayed = self.end + (self.peak - self.end) * 0.5 * (1.0 + tf.cos(math.pi * frac))
        elif self.shape == "constant":
            decayed = tf.constant(self.peak)
        else:
            power = 1.0 if self.shape == "linear" else self.power
            decayed = self.end + (self.peak - self.end) * (1.0 - frac) ** power
        return tf.where(step < self.warmup_steps, warm, decayed)

    def get_config(self):
        return dict(peak=self.peak, warmup_steps=self.warmup_steps, decay_steps=self.decay_steps,
                    shape=self.shape, power=self.power, end=self.end, step_offset=self.step_offset)


@keras.saving.register_keras_serializable(package="pretrain")
class PiecewiseLinear(keras.optimizers.schedules.LearningRateSchedule):
    """`base` times a multiplier interpolated linearly between (step, multiplier) points.

    bert4keras's `piecewise_linear`: a point (0, 0) is prepended when the first step is not 0, and
    the multiplier stays at its last value after the last point. {1000: 1, 2000: 0.1} warms up
    over 1000 steps, decays to a tenth by step 2000 and stays there. `points` is a dict or a list
    of pairs; steps must be non-negative integers, strictly increasing in the order given.
    """

    def __init__(self, base, points, step_offset=_DEFAULTS.step_offset):
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


def build_schedule(config, total_steps):
    """The schedule of a config's `optimizer` section (a `run_config.OptimizerConfig`, or a
    mapping whose missing fields take their defaults); decay_steps 0 decays over `total_steps`."""
    config = run_config.section(run_config.OptimizerConfig, config, "optimizer.")
    if config.schedule == "warmup_decay":
        return WarmupDecay(config.learning_rate, config.warmup_steps, config.decay_steps or total_steps,
                           shape=config.decay_shape, power=config.power, end=config.end_learning_rate,
                           step_offset=config.step_offset)
    if config.schedule == "piecewise":
        return PiecewiseLinear(config.learning_rate, config.piecewise, step_offset=config.step_offset)
    raise ValueError("Unknown schedule %r (%s)" % (config.schedule, ", ".join(SCHEDULES)))
