"""The optimizer toolkit, step by step against NumPy references written from the formulas.

The cases of `test_matches_numpy_reference_and_resumes_exactly` run the way the trainer runs:
2 replicas of a MirroredStrategy on logical CPUs, k=3 micro-batches per update summed locally,
one all-reduce, per-variable gradient transforms, global-norm clipping, then
`updates.apply_update` and the EMA update on every replica (replica context, as the trainer's step
does) and `updates.count_update`.
The variables carry BERT-like paths so the exclusion lists, layer-wise decay and lazy rows act on
them; one of them starts at zero (LAMB's zero-norm branch). Each case is checked for 12 updates at
1e-6, and a run cut after 6 updates and restored from a checkpoint into fresh objects must end
where the uninterrupted one does.

`test_every_update_path_matches_the_reference` runs every optimizer and wrapper through each way
an update can be made: the trainer's (`updates.apply_update`, which calls `update_step`), Keras's
`apply_gradients`, `model.fit`, and `apply_gradients` of an optimizer rebuilt from its config.
"""

import contextlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from configs import base
from pretrain import optimizers, schedules, updates
from tests.conftest import mirrored
from tests.pretrain import optimizer_reference as ref

REPLICAS, MICRO, STEPS, CUT = 2, 3, 12, 6
SHAPES = {
    "embeddings/word_embeddings": (6, 3),
    "embeddings/LayerNorm/gamma": (3,),
    "layer_0/query/kernel": (3, 3),
    "layer_0/query/bias": (3,),
    "layer_1/output_dense/kernel": (3, 2),     # starts at zero: LAMB's trust ratio is 1
    "layer_1/output_LayerNorm/beta": (2,),
    "cls/transform/kernel": (2, 2),
}
ZERO = "layer_1/output_dense/kernel"
NUM_LAYERS = 2


def _initial_values():
    rng = np.random.default_rng(1)
    return {p: (np.zeros(s) if p == ZERO else rng.normal(0, 1, s)) for p, s in SHAPES.items()}


def _data():
    """Per update, replica and micro-batch: a, c of each variable's shape; the loss of a
    micro-batch is sum 0.5 * (w * a - c)^2 / (replicas * micro-batches). Some embedding rows
    are absent from a whole update (zero a and c), which lazy updates must notice."""
    rng = np.random.default_rng(2)
    data = {}
    for p, s in SHAPES.items():
        a = rng.normal(1.0, 0.5, (STEPS, REPLICAS, MICRO) + s)
        c = rng.normal(0.0, 1.0, (STEPS, REPLICAS, MICRO) + s)
        if p.startswith("embeddings/word"):
            for t in range(STEPS):
                absent = [r for r in range(s[0]) if (r + t) % 3 == 0]
                a[t, :, :, absent] = 0.0
                c[t, :, :, absent] = 0.0
        data[p] = (a, c)
    return data


def _variable(path, value):
    """A Keras variable whose `path` is `path` (nested name scopes, as layers make them)."""
    *scopes, name = path.split("/")
    with contextlib.ExitStack() as stack:
        for scope in scopes:
            stack.enter_context(keras.name_scope(scope))
        return keras.Variable(np.asarray(value, np.float32), name=name)


def _reference_grads(params, data, t):
    n = REPLICAS * MICRO
    return {p: np.sum((params[p] * a[t] - c[t]) * a[t], axis=(0, 1)) / n for p, (a, c) in data.items()}


def _config(**kw):
    c = base.get_config().optimizer
    c.update(learning_rate=0.01, warmup_steps=3, decay_steps=10, weight_decay=0.1)
    lookahead = kw.pop("lookahead", None)
    if lookahead:
        c.lookahead.update(**lookahead)
    unknown = set(kw) - set(c.keys())
    assert not unknown, "not optimizer fields: %s" % sorted(unknown)
    c.update(**kw)
    return c


class TFRun:
    """The toolkit as the trainer drives it, on 2 replicas with k=3 micro-batches."""

    def __init__(self, config, data, clip_norm, init=None):
        self.strategy = mirrored(REPLICAS)
        self.paths = list(SHAPES)
        values = init or _initial_values()
        with self.strategy.scope():
            self.variables = [_variable(p, values[p]) for p in self.paths]
            assert [v.path for v in self.variables] == self.paths
            self.optimizer = optimizers.build_optimizer(config, STEPS, variables=self.variables,
                                                        num_layers=NUM_LAYERS)
            self.optimizer.build(self.variables)
            self.transforms = updates.build_gradient_transforms(config.gradient_transforms, self.paths)
            self.ema = updates.WeightAverage(self.variables, config.ema_decay) if config.ema_decay else None
        self.data = {p: (tf.constant(a, tf.float32), tf.constant(c, tf.float32))
                     for p, (a, c) in data.items()}
        self.clip_norm = clip_norm
        self.step = tf.function(self._step)

    def _replica(self, t):
        ctx = tf.distribute.get_replica_context()
        r = ctx.replica_id_in_sync_group
        grads = [tf.zeros_like(v.value) for v in self.variables]
        for i in range(MICRO):
            with tf.GradientTape() as tape:
                loss = tf.add_n([tf.reduce_sum(0.5 * tf.square(v * self.data[p][0][t, r, i]
                                                               - self.data[p][1][t, r, i]))
                                 for p, v in zip(self.paths, self.variables)]) / (REPLICAS * MICRO)
            grads = [a + b for a, b in zip(grads, tape.gradient(loss, self.variables))]
        grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)
        grads = updates.transform_gradients(self.transforms, grads, self.variables)
        if self.clip_norm:
            grads, _ = tf.clip_by_global_norm(grads, self.clip_norm)
        updates.apply_update(self.optimizer, grads, self.variables)
        if self.ema is not None:
            self.ema.update(self.variables)
        updates.count_update(self.optimizer)

    def _step(self, t):
        self.strategy.run(self._replica, args=(t,))

    def run(self, first, last):
        trajectory = []
        with self.strategy.scope():
            for t in range(first, last):
                self.step(tf.constant(t))
                trajectory.append(self.values())
        return trajectory

    def values(self):
        return {p: v.numpy().astype(np.float64) for p, v in zip(self.paths, self.variables)}

    def checkpoint(self):
        objects = dict(optimizer=self.optimizer, variables=self.variables)
        if self.ema is not None:
            objects["ema"] = self.ema
        return tf.train.Checkpoint(**objects)


def _schedule(config):
    c = config
    if c.schedule == "piecewise":
        return lambda t: ref.piecewise(t, c.learning_rate, [tuple(p) for p in c.piecewise], c.step_offset)
    return lambda t: ref.warmup_decay(t, c.learning_rate, c.warmup_steps, c.decay_steps, c.decay_shape,
                                      c.power, c.end_learning_rate, c.step_offset)


LAYERWISE_09 = {   # decay 0.9 over 2 layers: embeddings 0.9^3, layer_0 0.9^2, layer_1 0.9, heads 1
    "embeddings/word_embeddings": 0.729, "embeddings/LayerNorm/gamma": 0.729,
    "layer_0/query/kernel": 0.81, "layer_0/query/bias": 0.81,
    "layer_1/output_dense/kernel": 0.9, "layer_1/output_LayerNorm/beta": 0.9,
    "cls/transform/kernel": 1.0}


def _reference(config, data, clip_norm):
    c = config
    lr = _schedule(c)
    if c.name == "adamw":
        opt = ref.AdamW(lr, c.weight_decay, c.beta_1, c.beta_2, c.epsilon, c.exclude_from_weight_decay,
                        c.bias_correction, lazy=c.lazy)
    elif c.name == "lamb":
        opt = ref.Lamb(lr, c.weight_decay, c.beta_1, c.beta_2, c.epsilon, c.exclude_from_weight_decay,
                       c.exclude_from_layer_adaptation, lazy=c.lazy)
    elif c.name == "adam":
        opt = ref.KerasAdam(lr, c.beta_1, c.beta_2, c.epsilon)
    else:
        opt = ref.KerasSGD(lr, c.momentum)
    scale = None
    if c.layer_decay or c.lr_multipliers:
        scale = dict(LAYERWISE_09) if c.layer_decay else {p: 1.0 for p in SHAPES}
        for p in SHAPES:
            for pattern, mult in c.lr_multipliers:
                if pattern in p:
                    scale[p] *= mult
                    break
    if c.lookahead.k:
        opt = ref.Lookahead(opt, c.lookahead.k, c.lookahead.alpha)
    ema = ref.EMA(c.ema_decay) if c.ema_decay else None
    params = _initial_values()
    trajectory, averages = [], []
    for t in range(STEPS):
        grads = _reference_grads(params, data, t)
        for spec in c.gradient_transforms:
            grads = {p: ref.clip_by_norm(g, spec["max_norm"]) if spec["pattern"] in p else g
                     for p, g in grads.items()}
        if clip_norm:
            grads = ref.clip_by_global_norm(grads, clip_norm)
        opt.step(params, grads, scale)
        if ema:
            ema.update(params)
            averages.append(dict(ema.avg))
        trajectory.append({p: w.copy() for p, w in params.items()})
    return trajectory, averages


CASES = {
    "adamw_linear_warmup": (dict(name="adamw"), 0.0),
    "adamw_google_no_bias_correction_polynomial": (
        dict(name="adamw", bias_correction=False, decay_shape="polynomial", power=2.0,
             end_learning_rate=0.01), 0.0),
    "lamb_cosine_zero_norm": (dict(name="lamb", decay_shape="cosine", weight_decay=0.2), 0.0),
    "lamb_lookahead_piecewise_layer_decay": (
        dict(name="lamb", schedule="piecewise", piecewise=[[2, 1.0], [6, 0.3], [9, 0.1]],
             layer_decay=0.9, lr_multipliers=[["query", 2.0]], lookahead=dict(k=3, alpha=0.5)), 0.5),
    "adamw_lazy_ema_clipping": (
        dict(name="adamw", lazy=["word_embeddings"], ema_decay=0.8,
             gradient_transforms=[dict(name="clip_by_norm", max_norm=0.2, pattern="query/kernel")]), 1.0),
    "keras_sgd_in_lookahead_phase2_offset": (
        dict(name="sgd", weight_decay=0.0, momentum=0.9, step_offset=4, lookahead=dict(k=4, alpha=0.8)), 0.0),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_numpy_reference_and_resumes_exactly(case, tmp_path):
    kw, clip_norm = CASES[case]
    config = _config(**dict(kw))
    data = _data()
    expected, expected_ema = _reference(config, data, clip_norm)

    full = TFRun(config, data, clip_norm)
    got = full.run(0, STEPS)
    for t in range(STEPS):
        for p in SHAPES:
            np.testing.assert_allclose(got[t][p], expected[t][p], rtol=0, atol=1e-6,
                                       err_msg="%s: %s after update %d" % (case, p, t + 1))
    if expected_ema:
        for p, v in zip(full.paths, full.ema.averages):
            np.testing.assert_allclose(v.numpy(), expected_ema[-1][p], rtol=0, atol=1e-6)
    if "lazy" in kw:   # rows absent from the last update kept their values
        before, after = got[-2]["embeddings/word_embeddings"], got[-1]["embeddings/word_embeddings"]
        absent = [r for r in range(6) if (r + STEPS - 1) % 3 == 0]
        np.testing.assert_array_equal(before[absent], after[absent])

    # Cut after CUT updates, save, restore into fresh objects (other initial values), go on.
    first = TFRun(config, data, clip_norm)
    first.run(0, CUT)
    path = first.checkpoint().save(str(tmp_path / "ckpt"))
    zeros = {p: np.zeros(s) for p, s in SHAPES.items()}
    second = TFRun(config, data, clip_norm, init=zeros)
    second.checkpoint().restore(path).assert_consumed()
    resumed = second.run(CUT, STEPS)
    for p in SHAPES:
        np.testing.assert_allclose(resumed[-1][p], got[-1][p], rtol=0, atol=1e-7,
                                   err_msg="%s: %s after resuming" % (case, p))


# ------------------------------------------------------------------ every way of updating

# weight_decay is 0.1 (from _config) unless a case sets it.
PATH_CASES = {
    "adamw": dict(name="adamw"),
    "adamw_no_bias_correction": dict(name="adamw", bias_correction=False),
    "adamw_lazy_rows": dict(name="adamw", lazy=["word_embeddings"]),
    "lamb": dict(name="lamb"),
    "scaled_lr_lamb": dict(name="lamb", layer_decay=0.9, lr_multipliers=[["query", 2.0]]),
    "lookahead_adamw": dict(name="adamw", lookahead=dict(k=3, alpha=0.5)),
    "lookahead_scaled_lr_lamb": dict(name="lamb", layer_decay=0.9, lookahead=dict(k=4, alpha=0.8)),
    "keras_adam": dict(name="adam", weight_decay=0.0),
    "keras_sgd": dict(name="sgd", weight_decay=0.0, momentum=0.9),
    "lookahead_keras_sgd": dict(name="sgd", weight_decay=0.0, momentum=0.9, lookahead=dict(k=3, alpha=0.5)),
}


def _batch(data, t):
    """Update t's REPLICAS * MICRO examples (a, c) of every variable, as one batch."""
    return [(tf.constant(a[t].reshape((-1,) + a.shape[3:]), tf.float32),
             tf.constant(c[t].reshape((-1,) + c.shape[3:]), tf.float32)) for a, c in data.values()]


def _loss(variables, batch):   # the mean over the batch of what _reference_grads differentiates
    return tf.add_n([tf.reduce_sum(0.5 * tf.square(v * a - c))
                     for v, (a, c) in zip(variables, batch)]) / (REPLICAS * MICRO)


def _values(variables):
    return {v.path: v.numpy().astype(np.float64) for v in variables}


def _by_trainer_update(optimizer, variables, data):
    """As the trainer's step: `updates.apply_update` (update_step) then `updates.count_update`."""
    optimizer.build(variables)

    @tf.function
    def step(batch):
        with tf.GradientTape() as tape:
            loss = _loss(variables, batch)
        updates.apply_update(optimizer, tape.gradient(loss, variables), variables)
        updates.count_update(optimizer)

    trajectory = []
    for t in range(STEPS):
        step(_batch(data, t))
        trajectory.append(_values(variables))
    return trajectory


def _by_apply_gradients(optimizer, variables, data):
    trajectory = []
    for t in range(STEPS):
        with tf.GradientTape() as tape:
            loss = _loss(variables, _batch(data, t))
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        trajectory.append(_values(variables))
    return trajectory


def _by_rebuilt_from_config(optimizer, variables, data):
    """An optimizer rebuilt from its serialized config (model.save does this) must be the same."""
    rebuilt = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert type(rebuilt) is type(optimizer)
    return _by_apply_gradients(rebuilt, variables, data)


class _Elementwise(keras.Model):
    """Every variable times its input, flattened into one output: with a squared-error loss,
    model.fit computes the gradient that _reference_grads does."""

    def __init__(self, variables):
        super().__init__(name="elementwise")
        self.ws = list(variables)

    def call(self, a):
        return a * tf.concat([tf.reshape(w, [-1]) for w in self.ws], 0)


def _by_model_fit(optimizer, variables, data):
    model = _Elementwise(variables)
    assert [v.path for v in model.trainable_variables] == list(SHAPES)
    model.compile(optimizer=optimizer,
                  loss=lambda y, p: 0.5 * tf.reduce_sum(tf.square(p - y), axis=-1))
    x, y = ([np.concatenate([part[t].reshape(REPLICAS * MICRO, -1) for part in parts], axis=1)
             for t in range(STEPS)] for parts in zip(*data.values()))
    trajectory = []
    record = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda batch, logs: trajectory.append(_values(variables)))
    model.fit(np.concatenate(x).astype(np.float32), np.concatenate(y).astype(np.float32),
              batch_size=REPLICAS * MICRO, epochs=1, shuffle=False, verbose=0, callbacks=[record])
    return trajectory


UPDATE_PATHS = {"trainer_update_step": _by_trainer_update, "apply_gradients": _by_apply_gradients,
                "model_fit": _by_model_fit, "rebuilt_from_config": _by_rebuilt_from_config}


@pytest.mark.parametrize("path", sorted(UPDATE_PATHS))
@pytest.mark.parametrize("case", sorted(PATH_CASES))
def test_every_update_path_matches_the_reference(case, path):
    """Keras's apply (apply_gradients, model.fit) adds its own weight decay and counts its own
    updates: neither may change what our optimizers and wrappers do."""
    config = _config(**dict(PATH_CASES[case]))
    data = _data()
    expected, _ = _reference(config, data, clip_norm=0.0)
    variables = [_variable(p, v) for p, v in _initial_values().items()]
    optimizer = optimizers.build_optimizer(config, STEPS, variables=variables, num_layers=NUM_LAYERS)
    got = UPDATE_PATHS[path](optimizer, variables, data)
    assert len(got) == STEPS
    for t in range(STEPS):
        for p in SHAPES:   # 1e-5: float32 sums in another order (oneDNN kernels) stay well inside
            np.testing.assert_allclose(got[t][p], expected[t][p], rtol=0, atol=1e-5,
                                       err_msg="%s via %s: %s after update %d" % (case, path, p, t + 1))


def test_keras_exclude_from_weight_decay_is_honoured():
    """Keras's own way of excluding variables (by name, before build) applies to our decay."""
    config = _config(name="adamw")
    data = _data()
    variables = [_variable(p, v) for p, v in _initial_values().items()]
    optimizer = optimizers.build_optimizer(config, STEPS, variables=variables)
    optimizer.exclude_from_weight_decay(var_names=["kernel"])
    got = _by_apply_gradients(optimizer, variables, data)[-1]
    expected, _ = _reference(_config(name="adamw", exclude_from_weight_decay=["LayerNorm", "bias", "kernel"]),
                             data, clip_norm=0.0)
    for p in SHAPES:
        np.testing.assert_allclose(got[p], expected[-1][p], rtol=0, atol=1e-5, err_msg=p)


@pytest.mark.parametrize("setting", [dict(weight_decay=0.004), dict(clipnorm=1.0), dict(use_ema=True)])
def test_wrappers_refuse_inner_settings_they_would_ignore(setting):
    """Keras applies these in an optimizer's own apply, which a wrapper never calls."""
    name = next(iter(setting))
    with pytest.raises(ValueError, match="wrapped optimizer's %s=.* would be ignored" % name):
        optimizers.Lookahead(keras.optimizers.AdamW(**setting) if name == "weight_decay"
                             else optimizers.AdamW(**setting))


def test_schedules_at_their_boundaries():
    warm = schedules.WarmupDecay(1.0, warmup_steps=4, decay_steps=8, shape="linear", step_offset=0)
    assert [round(float(warm(t)), 6) for t in (0, 2, 4, 6, 8, 10)] == [0, 0.5, 1.0, 0.5, 0.0, 0.0]
    phase2 = schedules.WarmupDecay(1.0, warmup_steps=4, decay_steps=8, step_offset=4)
    assert float(phase2(0)) == pytest.approx(1.0) and float(phase2(2)) == pytest.approx(0.5)
    pw = schedules.PiecewiseLinear(2.0, {1000: 1.0, 2000: 0.1})
    for t in (0, 500, 1000, 1500, 2000, 5000):
        assert float(pw(t)) == pytest.approx(ref.piecewise(t, 2.0, [(1000, 1.0), (2000, 0.1)]), rel=1e-6)
    assert float(pw(500)) == pytest.approx(1.0) and float(pw(5000)) == pytest.approx(0.2)


def test_layerwise_multipliers_follow_depth():
    got = optimizers.layerwise_multipliers(0.9, NUM_LAYERS, list(SHAPES))
    assert got == pytest.approx(LAYERWISE_09)


# ------------------------------------------------------------------------------- bad input

def _variables():
    return [_variable(p, np.ones(s)) for p, s in SHAPES.items()]


@pytest.mark.parametrize("kw, message", [
    (dict(name="adamm"), "Unknown optimizer 'adamm'"),
    (dict(schedule="stepwise"), "Unknown schedule 'stepwise'"),
    (dict(schedule="piecewise", piecewise=[[10, 1.0], [5, 0.1]]), "strictly increasing"),
    (dict(schedule="piecewise", piecewise=[[10, 1.0], [10, 0.1]]), "strictly increasing"),
    (dict(schedule="piecewise", piecewise=[]), "no points"),
    (dict(lookahead=dict(k=3, alpha=0.0)), r"alpha must be in \(0, 1\]"),
    (dict(lookahead=dict(k=3, alpha=1.5)), r"alpha must be in \(0, 1\]"),
    (dict(lookahead=dict(k=-1, alpha=0.5)), "k must be an integer >= 1"),
    (dict(layer_decay=1.5), r"layer_decay must be in \(0, 1\]"),
    (dict(name="adam", weight_decay=0.01), "no decoupled weight decay"),
    (dict(weight_decay=-0.1), "weight_decay >= 0"),
])
def test_bad_settings_are_refused(kw, message):
    with pytest.raises(ValueError, match=message):
        optimizers.build_optimizer(_config(**kw), 100, variables=_variables(), num_layers=NUM_LAYERS)


@pytest.mark.parametrize("field, value, message", [
    ("decay", "constant", r"optimizer\.decay: renamed to optimizer\.decay_shape"),
    ("warmup", 100, r"optimizer\.warmup: no such field \(a typo\?\); the optimizer section has: .*warmup_steps"),
    ("lookahead.steps", 3, r"optimizer\.lookahead\.steps: no such field .* section has: alpha, k$"),
])
def test_unknown_and_renamed_fields_are_refused(field, value, message):
    """build_optimizer, called without the trainer's config check, must not drop a field silently
    (the old decay="constant" left the schedule decaying linearly)."""
    config = _config()
    section, _, key = field.rpartition(".")
    (config[section] if section else config)[key] = value
    with pytest.raises(ValueError, match=message):
        optimizers.build_optimizer(config, 100, variables=_variables(), num_layers=NUM_LAYERS)


def test_unknown_gradient_transform_is_refused():
    with pytest.raises(ValueError, match="Unknown gradient transform 'clip'"):
        updates.build_gradient_transforms([dict(name="clip")], list(SHAPES))


@pytest.mark.parametrize("kw, what", [
    (dict(exclude_from_weight_decay=["LayerNorm", "layernorm_typo"]), "exclude_from_weight_decay"),
    (dict(name="lamb", exclude_from_layer_adaptation=["Bias"]), "exclude_from_layer_adaptation"),
    (dict(lr_multipliers=[["pooler", 0.5]]), "lr_multipliers"),
    (dict(lazy=["word_embedding_table"]), "lazy"),
])
def test_patterns_matching_nothing_warn_with_the_variable_names(kw, what):
    variables = _variables()
    with pytest.warns(UserWarning, match=what + ".*matches no variable.*layer_0/query/kernel"):
        opt = optimizers.build_optimizer(_config(**kw), 100, variables=variables, num_layers=NUM_LAYERS)
        opt.build(variables)


def test_trainer_refuses_bad_optimizer_before_any_step(mlm_data, tmp_path):
    from pretrain.trainer import Trainer, TrainError
    from tests.pretrain.conftest import tiny_config

    c = tiny_config(mlm_data)
    c.optimizer.lookahead.update(k=2, alpha=2.0)
    with pytest.raises(TrainError, match=r"optimizer.lookahead.alpha=2.0: must be in \(0, 1\]"):
        Trainer(c, str(tmp_path / "run"), progress=False)
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_trainer_resumes_the_whole_toolkit_exactly(mlm_data, tmp_path):
    """LAMB in Lookahead with layer-wise decay, lazy rows, EMA and a gradient hook, k=2 micro-
    batches, through the real trainer: a run cut at step 4 and resumed ends where one
    uninterrupted run does, EMA shadows included."""
    from pretrain.trainer import Trainer
    from tests.pretrain.conftest import tiny_config

    def config(steps):
        c = tiny_config(mlm_data, steps=steps, micro_batches=2)
        c.optimizer.update(name="lamb", layer_decay=0.8, lazy=["position_embeddings"], ema_decay=0.9,
                           gradient_transforms=[dict(name="clip_by_value", limit=0.05, pattern="query")])
        c.optimizer.lookahead.update(k=3, alpha=0.5)
        return c

    full = Trainer(config(6), str(tmp_path / "full"), progress=False)
    full.train()
    Trainer(config(4), str(tmp_path / "cut"), progress=False).train()
    resumed = Trainer(config(6), str(tmp_path / "cut"), progress=False)
    assert resumed.train().step == 6
    for a, b in zip(full.model.weights + full.state.ema.averages,
                    resumed.model.weights + resumed.state.ema.averages):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-7)
    assert int(resumed.optimizer.iterations.numpy()) == 6 == int(resumed.optimizer.inner.iterations.numpy())
    # The EMA differs from the weights (it is an average, not a copy).
    assert any(not np.allclose(a.numpy(), w.numpy()) for a, w in
               zip(resumed.state.ema.averages, resumed.model.trainable_variables))
