"""NumPy references for the optimizer toolkit, written from the papers' formulas (float64).

Each optimizer is `step(params, grads)` over dicts {path: array}; the step counter `t` counts
updates from 0. Schedules are plain functions of the update count.
"""

import math
import re

import numpy as np


def warmup_decay(t, peak, warmup, decay_steps, decay="linear", power=1.0, end=0.0, offset=0):
    t = t + offset
    if t < warmup:
        return peak * t / max(warmup, 1)
    frac = min(max((t - warmup) / max(decay_steps - warmup, 1), 0.0), 1.0)
    if decay == "cosine":
        return end + (peak - end) * 0.5 * (1 + math.cos(math.pi * frac))
    if decay == "constant":
        return peak
    p = 1.0 if decay == "linear" else power
    return end + (peak - end) * (1 - frac) ** p


def piecewise(t, base, points, offset=0):
    """bert4keras piecewise_linear: (0, 0) prepended, constant after the last point."""
    t = t + offset
    pts = sorted(points)
    if pts[0][0] != 0:
        pts = [(0, 0.0)] + pts
    if t >= pts[-1][0]:
        return base * pts[-1][1]
    for (t0, m0), (t1, m1) in zip(pts, pts[1:]):
        if t0 <= t < t1:
            return base * (m0 + (m1 - m0) * (t - t0) / (t1 - t0))
    raise AssertionError("unreachable")


def _excluded(patterns, path):
    return any(re.search(p, path) for p in patterns)


class AdamW:
    """Loshchilov & Hutter; bias_correction=False is google-research/bert's AdamWeightDecay.
    `lazy`: rows whose gradient is all zero keep their moments and values."""

    def __init__(self, lr, weight_decay, beta_1, beta_2, epsilon, exclude, bias_correction=True,
                 lazy=()):
        self.lr, self.wd, self.b1, self.b2, self.eps = lr, weight_decay, beta_1, beta_2, epsilon
        self.exclude, self.bias_correction, self.lazy = exclude, bias_correction, lazy
        self.m, self.v, self.t = {}, {}, 0

    def direction(self, path, w, m, v):
        if self.bias_correction:
            m = m / (1 - self.b1 ** (self.t + 1))
            v = v / (1 - self.b2 ** (self.t + 1))
        u = m / (np.sqrt(v) + self.eps)
        if self.wd and not _excluded(self.exclude, path):
            u = u + self.wd * w
        return u

    def scale(self, path, w, u):
        return 1.0

    def step(self, params, grads, lr_scale=None):
        lr = self.lr(self.t)
        for path, g in grads.items():
            w = params[path]
            m_old = self.m.get(path, np.zeros_like(w))
            v_old = self.v.get(path, np.zeros_like(w))
            m = self.b1 * m_old + (1 - self.b1) * g
            v = self.b2 * v_old + (1 - self.b2) * g * g
            u = self.direction(path, w, m, v)
            if _excluded(self.lazy, path):
                present = np.any(g != 0, axis=1, keepdims=True)
                m, v = np.where(present, m, m_old), np.where(present, v, v_old)
                u = np.where(present, u, 0.0)
            self.m[path], self.v[path] = m, v
            scale = (lr_scale or {}).get(path, 1.0)
            params[path] = w - lr * scale * self.scale(path, w, u) * u
        self.t += 1


class Lamb(AdamW):
    """You et al. 2019: decay inside the trust ratio ||w|| / ||u|| (1 if either norm is 0)."""

    def __init__(self, lr, weight_decay, beta_1, beta_2, epsilon, exclude, exclude_adaptation, lazy=()):
        super().__init__(lr, weight_decay, beta_1, beta_2, epsilon, exclude, True, lazy)
        self.exclude_adaptation = exclude_adaptation

    def scale(self, path, w, u):
        if _excluded(self.exclude_adaptation, path):
            return 1.0
        wn, un = np.linalg.norm(w), np.linalg.norm(u)
        return wn / un if wn > 0 and un > 0 else 1.0


class KerasSGD:
    """Keras SGD with momentum: m = momentum * m - lr * g; w += m."""

    def __init__(self, lr, momentum):
        self.lr, self.momentum, self.m, self.t = lr, momentum, {}, 0

    def step(self, params, grads, lr_scale=None):
        lr = self.lr(self.t)
        for path, g in grads.items():
            scale = (lr_scale or {}).get(path, 1.0)
            m = self.momentum * self.m.get(path, np.zeros_like(g)) - lr * scale * g
            self.m[path] = m
            params[path] = params[path] + m
        self.t += 1


class KerasAdam:
    """Keras Adam: the bias correction folded into the step size, epsilon outside it."""

    def __init__(self, lr, beta_1, beta_2, epsilon):
        self.lr, self.b1, self.b2, self.eps = lr, beta_1, beta_2, epsilon
        self.m, self.v, self.t = {}, {}, 0

    def step(self, params, grads, lr_scale=None):
        lr = self.lr(self.t)
        alpha = lr * math.sqrt(1 - self.b2 ** (self.t + 1)) / (1 - self.b1 ** (self.t + 1))
        for path, g in grads.items():
            m = self.b1 * self.m.get(path, np.zeros_like(g)) + (1 - self.b1) * g
            v = self.b2 * self.v.get(path, np.zeros_like(g)) + (1 - self.b2) * g * g
            self.m[path], self.v[path] = m, v
            scale = (lr_scale or {}).get(path, 1.0)
            params[path] = params[path] - scale * alpha * m / (np.sqrt(v) + self.eps)
        self.t += 1


class Lookahead:
    """Zhang et al. 2019: slow starts at the parameters; every k updates
    slow += alpha * (fast - slow), fast = slow."""

    def __init__(self, inner, k, alpha):
        self.inner, self.k, self.alpha, self.slow, self.t = inner, k, alpha, None, 0

    def step(self, params, grads, lr_scale=None):
        if self.slow is None:
            self.slow = {p: w.copy() for p, w in params.items()}
        self.inner.step(params, grads, lr_scale)
        self.t += 1
        if self.t % self.k == 0:
            for p in grads:
                self.slow[p] = self.slow[p] + self.alpha * (params[p] - self.slow[p])
                params[p] = self.slow[p].copy()


class EMA:
    def __init__(self, decay):
        self.decay, self.avg = decay, None

    def update(self, params):
        if self.avg is None:
            self.avg = {p: w.copy() for p, w in params.items()}
        else:
            self.avg = {p: self.decay * self.avg[p] + (1 - self.decay) * w for p, w in params.items()}


def clip_by_norm(g, max_norm):
    n = np.linalg.norm(g)
    return g * max_norm / n if n > max_norm else g


def clip_by_global_norm(grads, clip):
    n = math.sqrt(sum(float(np.sum(g * g)) for g in grads.values()))
    return {p: g * clip / max(n, clip) for p, g in grads.items()}
