"""The exported training step (benchmarks/xla_step.py) run by jaxlib's PJRT CPU client
(benchmarks/xla_run.py, without TensorFlow and without the project) reproduces TensorFlow's first
step: every metric, the gradient norm and every updated tensor (weights, optimizer slots,
counters), for MLM, MLM+NSP, UniLM and bfloat16; then it trains as a loop, each step's outputs
feeding the next.

Tolerances (TensorFlow's XLA and jaxlib's are different XLA versions, which may fuse and order
sums differently): in float32 the metrics agree to 1e-5 relative and every updated tensor to 1e-4
of its largest value (Adam divides by sqrt(v) + 1e-6, so an element whose gradient is near 1e-6
turns a rounding difference of its gradient into a 100x larger one of its update); bfloat16
rounds every matmul input to 8 bits of mantissa, so another fusion moves values by about 1e-2.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import xla_step
from configs import base

jax = pytest.importorskip("jax", reason="needs jax[cpu] (requirements.txt) to run the exported step")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# No module named tensorflow can be imported, and the project is not on the path.
NO_TENSORFLOW = ("import runpy, sys; sys.modules['tensorflow'] = None; sys.argv = sys.argv[1:]; "
                 "runpy.run_path(sys.argv[0], run_name='__main__')")

CASES = {   # name: (task, with_nsp, precision, optimizer)
    "mlm": ("mlm", False, "float32", "adamw"),
    "mlm_nsp_lamb": ("mlm", True, "float32", "lamb"),
    "unilm": ("unilm", False, "float32", "adamw"),
    "mlm_nsp_bfloat16": ("mlm", True, "bfloat16", "lamb"),
}


def _config(optimizer):
    c = base.get_config()
    c.model.update(vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                   intermediate_size=64, max_position_embeddings=32)
    c.train.update(steps=100)
    c.optimizer.update(name=optimizer, learning_rate=1e-3, warmup_steps=0)
    return c


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """case -> (its export directory, step.json's content), each case exported once per module: the
    export (TensorFlow compiling and running the reference step) is most of a case's cost, and
    test_gpu_check_runs_every_export_and_summarises runs an export identical to mlm_nsp_lamb's."""
    root, done = tmp_path_factory.mktemp("xla_exports"), {}

    def get(case):
        if case not in done:
            task, with_nsp, precision, optimizer = CASES[case]
            spec = xla_step.export(None, str(root / case), seq_len=16, per_replica_batch=4,
                                   precision=precision, task=task, with_nsp=with_nsp, save_outputs=True,
                                   config=_config(optimizer))
            done[case] = (root / case, spec)
        return done[case]
    return get


def _run_alone(directory, tmp_path, *args):
    """xla_run.py copied alone into an empty folder and run there, as on a machine with JAX only."""
    runner = tmp_path / "alone" / "xla_run.py"
    runner.parent.mkdir(exist_ok=True)
    shutil.copy(os.path.join(ROOT, "benchmarks", "xla_run.py"), runner)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    out = subprocess.run([sys.executable, "-c", NO_TENSORFLOW, str(runner), str(directory), *args],
                         cwd=runner.parent, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


@pytest.mark.parametrize("case", list(CASES))
def test_the_exported_step_reproduces_tensorflow_under_pjrt(case, exported, tmp_path):
    task, with_nsp, precision, optimizer = CASES[case]
    directory, spec = exported(case)
    names = [a["name"] for a in spec["arguments"]]
    assert names[0].startswith("batch/") and "global_step:0" in names
    assert sum(a["aliased_output"] is not None for a in spec["arguments"]) > 50
    assert spec["model_flops_per_step"] > 0

    first = tmp_path / "first.npz"
    profiled = ["--profile=1"] if case == "mlm" else []
    result = _run_alone(directory, tmp_path, "--steps=2", "--warmup=1", "--save_first=%s" % first,
                        *profiled)
    low = precision == "bfloat16"
    tolerance = 2e-2 if low else 1e-5          # metrics
    tensor_tolerance = 2e-2 if low else 1e-4   # updated tensors: see the module docstring
    with np.load(directory / "tensorflow_outputs.npz") as want, np.load(first) as got:
        assert len(got.files) == len(want.files) == len(spec["outputs"])
        for i, output in enumerate(spec["outputs"]):
            a, b = got["out_%d" % i].astype(np.float64), want["out_%d" % i].astype(np.float64)
            scale, diff = np.abs(b).max(initial=0.0), np.abs(a - b).max(initial=0.0)
            # The key bias gets no gradient through the softmax: it and its optimizer slots are
            # rounding noise (about 1e-10) in both runs, compared in absolute terms.
            assert diff <= (tensor_tolerance * scale if scale > 1e-8 else 1e-9), (output["name"], diff, scale)
    first = result["first_step"]
    expected_metrics = {"mlm": ["mlm_correct", "mlm_count", "mlm_loss"],
                        "unilm": ["seq2seq_correct", "seq2seq_count", "seq2seq_loss"]}[task]
    if with_nsp:
        expected_metrics += ["nsp_correct", "nsp_count", "nsp_loss"]
    assert sorted(first) == sorted(["metrics/" + m for m in expected_metrics] + ["grad_norm"])
    for name, m in first.items():
        assert m["relative_difference"] <= tolerance, (name, m)
    assert first[[n for n in first if n.endswith("_loss")][0]]["pjrt"] > 0
    assert result["steps_timed"] == 2 and result["step_seconds"]["median"] > 0
    assert result["device"]["platform"] == "cpu" and result["xla_cost_analysis"]["flops"] > 0
    if profiled:   # where the time goes: every instruction that ran is in one category
        percent = result["profile"]["percent"]
        assert abs(sum(percent.values()) - 100) < 0.5 and percent["matmuls"] > 0
        assert {"matmuls", "optimizer update", "layer norms"} <= set(percent)
        assert result["profile"]["top_instructions"][0]["ms_per_step"] > 0


def test_instructions_are_categorised_by_their_tensorflow_op():
    from benchmarks.xla_run import categorise
    assert categorise("dot", "") == "matmuls"
    assert categorise("fusion", "bert/layer_0/stateless_random_uniform_3") == "dropout masks"
    assert categorise("fusion", "bert/layer_0/attention/Softmax") == "attention softmax"
    assert categorise("fusion", "SparseSoftmaxCrossEntropyWithLogits/x") == "loss (softmax cross-entropy)"
    assert categorise("fusion", "bert/layer_1/output_LayerNorm/moments/mean") == "layer norms"
    assert categorise("fusion", "cond/lamb/mul_3") == "optimizer update"
    assert categorise("fusion", "gradient_tape/add/Sum") == "bias gradients"
    assert categorise("copy", "") == "copies and transposes (layout)"
    assert categorise("fusion", "bert/layer_0/intermediate/Cast") == "casts"


def test_seeded_fills_are_the_same_bits_in_numpy_and_jax():
    from benchmarks.xla_run import make_argument
    jnp = pytest.importorskip("jax.numpy")
    jax.config.update("jax_enable_x64", True)
    for fill, shape, dtype in [({"fill": "uniform", "log2_width": -4, "seed": 7}, [300, 7], "float32"),
                               ({"fill": "randint", "low": 1, "high": 30522, "seed": 3}, [5, 9], "int32"),
                               ({"fill": "halves", "values": [0.0, 1.0]}, [2, 6], "float32"),
                               ({"fill": "constant", "value": 0}, [3], "int64")]:
        a = make_argument(np, fill, shape, np.dtype(dtype))
        b = np.asarray(make_argument(jnp, fill, shape, np.dtype(dtype)))
        assert a.dtype == b.dtype and a.shape == tuple(shape)
        np.testing.assert_array_equal(a, b)
    u = make_argument(np, {"fill": "uniform", "log2_width": -4, "seed": 1}, [100000], np.dtype("float32"))
    assert -1 / 32 <= u.min() < -0.03 and 0.03 < u.max() < 1 / 32 and abs(u.mean()) < 1e-3


def test_bad_exports_are_refused_in_one_line(tmp_path):
    with pytest.raises(SystemExit, match="not a multiple of micro_batches=2"):
        c = _config("adamw")
        c.train.micro_batches = 2
        xla_step.export(None, str(tmp_path / "x"), seq_len=16, per_replica_batch=3,
                        precision="float32", config=c)
    with pytest.raises(SystemExit, match="exceeds max_position_embeddings=32"):
        xla_step.export(None, str(tmp_path / "x"), seq_len=64, per_replica_batch=4,
                        precision="float32", config=_config("adamw"))
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "step.json").write_text(json.dumps({"format": 99}))
    out = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "xla_run.py"),
                          str(tmp_path / "old")], capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "export format 99; this runner reads 1" in out.stderr


def test_gpu_check_runs_every_export_and_summarises(exported, tmp_path):
    """benchmarks/gpu_check.sh as a lent machine runs it, here on the CPU with a tiny export (the MLM+NSP
    LAMB case's, copied under another name)."""
    shutil.copytree(exported("mlm_nsp_lamb")[0], tmp_path / "exports" / "tiny_mlm")
    env = dict(os.environ, DEVICE="cpu", STEPS="2")
    out = subprocess.run(["bash", os.path.join(ROOT, "benchmarks", "gpu_check.sh"),
                          str(tmp_path / "exports"), str(tmp_path / "results")],
                         capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads((tmp_path / "results" / "summary.json").read_text())
    assert [r["export"] for r in summary] == ["tiny_mlm"]
    row = summary[0]
    assert row["device"] == "cpu" and row["step_ms"] > 0 and row["sequences_per_second"] > 0
    assert row["first_step_loss_vs_tensorflow"]["metrics/mlm_loss"] <= 1e-5
    assert "| tiny_mlm | cpu |" in out.stdout
    assert not (tmp_path / "results" / "failed.txt").exists()
