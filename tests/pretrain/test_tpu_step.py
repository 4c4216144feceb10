"""The step a TPU runs, checked on CPU.

TPUStrategy compiles the function given to `strategy.run` with XLA: for this trainer that is
`TrainState.replica_step` (`Trainer.state`), the whole update (micro-batches, all-reduce,
clipping, the guarded optimizer update, EMA, counters). Here that exact function is compiled with
`jit_compile=True` (which fails on any op XLA cannot compile, or any shape it cannot make static)
and must give the metrics, weights, optimizer state and counters of the same function run without
XLA, for every task, for accumulation, Lookahead, EMA, lazy rows, recompute with bfloat16, and a
skipped (non-finite) update.
"""

import numpy as np
import pytest
import tensorflow as tf

from pretrain.trainer import Trainer
from tests.pretrain.conftest import tiny_config

CASES = {
    "mlm": (None, {}, {}),
    "mlm_nsp": ("mlm_pairs", {}, {}),
    "unilm": ("unilm", {"task": "unilm"}, {}),
    "lm": ("lm", {"task": "lm"}, {}),
    "simbert": ("simbert", {"task": "simbert"}, {}),
    "k2_lookahead_ema_lazy_layer_decay": (None, {}, dict(
        train=dict(micro_batches=2),
        optimizer=dict(name="lamb", ema_decay=0.9, lazy=["word_embeddings"], layer_decay=0.8,
                       lookahead=dict(k=2, alpha=0.5)))),
    "bfloat16_recompute_k2": (None, {}, dict(train=dict(micro_batches=2, precision="bfloat16",
                                                        recompute=True))),
    "nonfinite_update_skipped": (None, {}, dict(optimizer=dict(gradient_transforms=[
        {"name": "scale", "factor": float("nan"), "pattern": "word_embeddings"}]))),
}


def _trainer(data_dir, workdir, top, sections):
    c = tiny_config(data_dir, steps=3, **sections.get("train", {}))
    for key, value in top.items():
        setattr(c, key, value)
    for key, value in sections.get("optimizer", {}).items():
        if isinstance(value, dict):
            c.optimizer[key].update(**value)
        else:
            c.optimizer[key] = value
    return Trainer(c, workdir, progress=False)


def _state(trainer):
    return {"%s:%d" % (getattr(v, "path", v.name), i): np.asarray(v.numpy(), np.float64)
            for i, v in enumerate(trainer.state.checkpoint_variables())}


# Also run on the TPU VMs' TensorFlow (.ci/run's second job): the case that compiles the most of the
# update (micro-batches, LAMB, Lookahead, EMA, lazy rows, layer decay). The plain MLM step is compiled
# there by tests/launch/test_smoke.py's XLA run; the other cases run in the main job.
SMOKE = ("k2_lookahead_ema_lazy_layer_decay",)


@pytest.mark.parametrize("case", [pytest.param(c, marks=pytest.mark.smoke) if c in SMOKE else c
                                  for c in CASES])
def test_xla_compiled_replica_step_equals_the_uncompiled_one(case, mlm_data, task_data, tmp_path):
    data_name, top, sections = CASES[case]
    data_dir = mlm_data if data_name is None else task_data[data_name]
    plain = _trainer(data_dir, str(tmp_path / "plain"), top, sections)
    compiled = _trainer(data_dir, str(tmp_path / "xla"), top, sections)
    before = _state(plain)
    assert before.keys() == _state(compiled).keys()
    for name, value in _state(compiled).items():       # same seed: the same start
        np.testing.assert_array_equal(value, before[name], err_msg=name)
    step = tf.function(plain.state.replica_step)
    xla_step = tf.function(compiled.state.replica_step, jit_compile=True)
    low = sections.get("train", {}).get("precision") == "bfloat16"
    tolerance = dict(rtol=2e-2, atol=2e-3) if low else dict(rtol=2e-4, atol=2e-6)
    for _ in range(3):
        batch = next(plain.iterator)
        metrics, norm = step(batch)
        xla_metrics, xla_norm = xla_step(batch)
        for name in plain.metric_names:
            np.testing.assert_allclose(xla_metrics[name].numpy(), metrics[name].numpy(),
                                       err_msg=name, **tolerance)
        np.testing.assert_allclose(xla_norm.numpy(), norm.numpy(), **tolerance)
    # The compiled function really is one XLA computation (this raises if it is not).
    assert "HloModule" in xla_step.experimental_get_compiler_ir(batch)(stage="hlo")
    after, xla_after = _state(plain), _state(compiled)
    for name, value in after.items():
        np.testing.assert_allclose(xla_after[name], value, err_msg=name, **tolerance)
    assert int(plain.step.numpy()) == int(compiled.step.numpy()) == 3
    skipped = case == "nonfinite_update_skipped"
    assert int(compiled.optimizer.iterations.numpy()) == (0 if skipped else 3)
    assert int(compiled.state.nonfinite_total.numpy()) == (3 if skipped else 0)
    changed = [n for n in before if not np.array_equal(before[n], after[n])
               and "step" not in n and "nonfinite" not in n]
    assert (not changed) if skipped else len(changed) > 10, changed
