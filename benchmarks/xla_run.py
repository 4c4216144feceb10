r"""Runs an exported training step (`python -m benchmarks.xla_step export`) on any PJRT device.

    python benchmarks/xla_run.py DIR [--device=cpu|gpu|tpu] [--warmup=3] [--steps=20] [--json=OUT]

Self-contained: it needs `jax`, `jaxlib` and NumPy, not TensorFlow and not this project, so the
file can be copied alone to a GPU machine or a TPU VM next to an export directory. DIR holds
`step.hlo.pb.gz` (the serialized HLO module of `TrainState.replica_step`, exactly what TPUStrategy
or `jit_compile=True` hands to XLA) and `step.json` (every argument's name, shape, dtype and how
to fill it, the outputs, the model FLOPs per step and TensorFlow's results on the same inputs).

What it does:
  1. converts the HLO module to StableHLO for the local jaxlib and compiles it for the device;
  2. makes every argument on the device from its seeded fill (weights never travel): the same
     integer hash as the exporter's, so the values are bit-identical to TensorFlow's inputs;
  3. runs the first step and compares its metrics (and, when DIR has `tensorflow_outputs.npz`,
     every output tensor) with TensorFlow's;
  4. runs warm-up then timed steps as a real training loop: each step's updated variables are
     the next step's inputs (the module aliases them, so their buffers are donated), the batch
     stays on the device, and nothing is copied to the host between steps;
  5. prints JSON: device kind, jaxlib and XLA versions, compile seconds, step time (median, p10,
     p90), sequences/s, tokens/s, model TFLOP/s, MFU against the device's dense bf16 peak, XLA's
     cost analysis, peak device memory, the first step's metrics against TensorFlow's.

The converter and compile calls are jaxlib's own (`jax._src.lib._jax`): private modules that move
between versions. Checked with jax/jaxlib 0.10.2 (CPU); a jaxlib without them is named in one
error line.
"""

import argparse
import gzip
import json
import math
import os
import re
import sys
import time

import numpy as np

FORMAT = 1
# Differences are relative to a tensor's largest magnitude, or to this when it is smaller: some
# tensors are rounding noise in both runs (the key bias gets no gradient through the softmax, so
# its Adam moments are about 1e-13).
FLOOR = 1e-6
# Dense (no sparsity) bfloat16 peak per device, FLOP/s, matched against jax's device_kind in this
# order (the first substring that matches wins).
PEAKS = [
    ("H200", 989.4e12, "NVIDIA H200 datasheet: 1,979 TFLOPS BF16 with 2:4 sparsity, half dense"),
    ("H100 PCIe", 756.0e12, "NVIDIA H100 datasheet, PCIe: 1,513 TFLOPS BF16 sparse, half dense"),
    ("H100", 989.4e12, "NVIDIA H100 datasheet, SXM: 1,979 TFLOPS BF16 sparse, half dense"),
    ("A100", 312.0e12, "NVIDIA A100 datasheet: 312 TFLOPS BF16 dense"),
    ("TPU v4", 275.0e12, "cloud.google.com/tpu/docs/v4: 275 TFLOPS bf16 per chip"),
    ("TPU v5 lite", 197.0e12, "cloud.google.com/tpu/docs/v5e: 197 TFLOPS bf16 per chip"),
    ("TPU v5e", 197.0e12, "cloud.google.com/tpu/docs/v5e: 197 TFLOPS bf16 per chip"),
    ("TPU v5", 459.0e12, "cloud.google.com/tpu/docs/v5p: 459 TFLOPS bf16 per chip"),
    ("TPU v6", 918.0e12, "cloud.google.com/tpu/docs/v6e: 918 TFLOPS bf16 per chip"),
]


# ------------------------------------------------------------------------ seeded argument fills

def _hash32(xp, n, seed):
    """n pseudo-random uint32 from (element index, seed): murmur3's finaliser of a Weyl sequence.
    Integer arithmetic only (wrapping uint32), so NumPy and jax.numpy give the same bits."""
    u32 = xp.uint32
    x = xp.arange(n, dtype=u32) * u32(0x9E3779B1) + u32((seed * 0x85EBCA77 + 0x165667B1) & 0xFFFFFFFF)
    x = x ^ (x >> u32(16))
    x = x * u32(0x85EBCA6B)
    x = x ^ (x >> u32(13))
    x = x * u32(0xC2B2AE35)
    return x ^ (x >> u32(16))


def make_argument(xp, fill, shape, dtype):
    """An argument from its fill: {"fill": "constant", "value"}, {"fill": "halves", "values":
    [first, second]} (along the last axis: segment ids of a sentence pair), {"fill": "randint",
    "low", "high", "seed"} or {"fill": "uniform", "log2_width", "seed"}: uniform on
    [-w/2, w/2) with w = 2**log2_width, 24 random bits a value. Every value is exact in float32
    (no rounding that could differ between NumPy and a device)."""
    shape, kind = tuple(shape), fill["fill"]
    if kind == "constant":
        return xp.full(shape, fill["value"], dtype=dtype)
    if kind == "halves":
        columns = xp.arange(shape[-1]) >= shape[-1] // 2
        row = xp.where(columns, fill["values"][1], fill["values"][0]).astype(dtype)
        return xp.broadcast_to(row, shape) + xp.zeros(shape, dtype)
    bits = _hash32(xp, math.prod(shape), fill["seed"])
    if kind == "randint":
        values = bits % xp.uint32(fill["high"] - fill["low"])
        return (values.astype(xp.int64) + fill["low"]).astype(dtype).reshape(shape)
    if kind == "uniform":
        unit = (bits >> xp.uint32(8)).astype(xp.float32) * xp.float32(2.0 ** -24)
        return ((unit - xp.float32(0.5)) * xp.float32(2.0 ** fill["log2_width"])).astype(dtype).reshape(shape)
    raise ValueError("unknown fill %r" % kind)


def checksum(array):
    """What step.json records of a tensor: sums in float64 (order-independent enough to compare
    at float32 tolerances)."""
    a = np.asarray(array, np.float64)
    return {"sum": float(a.sum()), "abs_sum": float(np.abs(a).sum())}


# --------------------------------------------------------------------------------- the runner

def _load_jax(device):
    try:
        import jax
        import jax.extend  # noqa: F401  (jax.extend.backend)
        from jax._src.lib import _jax
    except ImportError as e:
        sys.exit("xla_run: needs jax and jaxlib (pip install 'jax[cpu]' or the CUDA/TPU build): %s" % e)
    for needed in ("mlir", "DeviceList", "CompileOptions"):
        if not hasattr(_jax, needed):
            sys.exit("xla_run: this jaxlib (%s) has no jax._src.lib._jax.%s; checked with 0.10.2"
                     % (jax.__version__, needed))
    jax.config.update("jax_enable_x64", True)   # the step's counters are int64
    try:
        backend = jax.extend.backend.get_backend(device)
    except RuntimeError as e:
        sys.exit("xla_run: no %s device here: %s" % (device, str(e).splitlines()[0]))
    return jax, _jax, backend


def peak_flops(device_kind):
    for key, flops, source in PEAKS:
        if key.lower() in device_kind.lower():
            return flops, source
    return None, "no peak known for %r" % device_kind


def compare(first, spec, reference_npz):
    """The first step's outputs against TensorFlow's: every metric, and the output that differs
    most (every tensor when the export saved them, else their checksums)."""
    names = [o["name"] for o in spec["outputs"]]
    tf_first = spec["tensorflow"]["first_step"]
    metrics = {}
    for name, value in zip(names, first):
        if name in tf_first:
            ours = float(np.asarray(value, np.float64))
            want = tf_first[name]
            metrics[name] = {"pjrt": ours, "tensorflow": want,
                             "relative_difference": abs(ours - want) / max(abs(want), 1e-30)}
    worst = {"name": None, "max_abs_difference": 0.0, "relative": 0.0}
    if reference_npz:
        with np.load(reference_npz) as saved:
            for i, value in enumerate(first):
                want = saved["out_%d" % i].astype(np.float64)
                diff = float(np.max(np.abs(np.asarray(value, np.float64) - want))) if want.size else 0.0
                scale = max(float(np.max(np.abs(want))) if want.size else 0.0, FLOOR)
                if diff / scale >= worst["relative"]:
                    worst = {"name": names[i], "max_abs_difference": diff, "relative": diff / scale}
    else:
        for name, value in zip(names, first):
            want = spec["tensorflow"]["checksums"].get(name)
            if want:
                got = checksum(value)
                rel = abs(got["abs_sum"] - want["abs_sum"]) / max(want["abs_sum"], FLOOR)
                if rel >= worst["relative"]:
                    worst = {"name": name, "max_abs_difference": None, "relative": rel, "by": "abs_sum"}
    return metrics, worst


# Where the step's time goes: each HLO instruction of the compiled module is put in the first
# category whose pattern matches its TensorFlow op name (the metadata the XLA bridge keeps).
CATEGORIES = [
    ("dropout masks", r"dropout|[Ss]tateless_?[Rr]andom|[Rr]andom_?[Uu]niform|random_bits|Philox|RngBit"),
    ("loss (softmax cross-entropy)", r"SoftmaxCrossEntropy|log_softmax|sigmoid_cross_entropy"),
    ("attention softmax", r"Softmax"),
    ("layer norms", r"LayerNorm|layer_norm|moments|rsqrt|Rsqrt"),
    ("matmuls", r"MatMul|Einsum|Tensordot|BatchMatMul|Conv"),
    ("bias gradients", r"BiasAddGrad|gradient_tape/.*add[^/]*/Sum"),
    ("gradient norm and clipping", r"global_norm|clip_by_global_norm|is_finite|IsFinite"),
    ("optimizer update",
     r"^cond/|/cond/|^cond$|lamb|adamw|adam/|sgd|lookahead|update_step|AssignSub|AssignAdd"),
    ("embedding lookups and their gradients", r"Gather|embedding|UnsortedSegmentSum|ScatterNd|Scatter"),
    ("activations (gelu, tanh)", r"[Gg]elu|Erf|Tanh|Pow"),
    ("casts", r"Cast"),
    ("copies and transposes (layout)", r"[Tt]ranspose|Reshape"),   # attention's head split/merge
]


# Instructions whose events contain those of the instructions they call (counted there).
CONTAINERS = ("call", "while", "conditional", "async-start", "async-done")


def _instruction_ops(hlo_text):
    """{instruction name: (opcode, TensorFlow op name)} of an optimized HLO module's text."""
    ops = {}
    instruction = r"^\s*(?:ROOT )?%([\w.\-]+) = [^\n]*?\b([a-z][\w\-]*)\((?:[^\n]*?op_name=\"([^\"]*)\")?"
    for m in re.finditer(instruction, hlo_text, re.M):
        ops[m.group(1)] = (m.group(2), m.group(3) or "")
    return ops


def categorise(opcode, op_name):
    if opcode in ("dot", "convolution"):
        return "matmuls"
    for category, pattern in CATEGORIES:
        if re.search(pattern, op_name):
            return category
    if opcode in ("copy", "transpose", "bitcast", "copy-start", "copy-done"):
        return "copies and transposes (layout)"
    return "other"


def profile(jax, executable, step, arguments, steps):
    """Runs `steps` steps under JAX's profiler; returns the time per category (summed over the
    device's op events, or on a CPU over the threads that ran the instructions) and the 15
    instructions that took longest, each with its TensorFlow op name."""
    import tempfile

    ops = {}
    for module in executable.hlo_modules():
        ops.update(_instruction_ops(module.to_string()))
    with tempfile.TemporaryDirectory() as trace_dir:
        with jax.profiler.trace(trace_dir):
            for _ in range(steps):
                outputs, arguments = step(arguments)
                jax.block_until_ready(outputs)
        paths = [os.path.join(d, f) for d, _, files in os.walk(trace_dir) for f in files
                 if f.endswith(".xplane.pb")]
        data = jax.profiler.ProfileData.from_file(paths[0])
    per_op = {}
    for plane in data.planes:
        device = not plane.name.startswith("/host")
        for line in plane.lines:
            if device and line.name != "XLA Ops":
                continue
            for event in line.events:
                if event.name in ops and ops[event.name][0] not in CONTAINERS:
                    per_op[event.name] = per_op.get(event.name, 0) + event.duration_ns
    total = sum(per_op.values()) or 1
    categories = {}
    for name, ns in per_op.items():
        c = categorise(*ops[name])
        categories[c] = categories.get(c, 0) + ns
    return {
        "measured_over_steps": steps,
        "ms_per_step": {c: round(ns / steps / 1e6, 3) for c, ns in sorted(
            categories.items(), key=lambda kv: -kv[1])},
        "percent": {c: round(100 * ns / total, 1) for c, ns in sorted(
            categories.items(), key=lambda kv: -kv[1])},
        "top_instructions": [{"name": n, "ms_per_step": round(ns / steps / 1e6, 3),
                              "opcode": ops[n][0], "op_name": ops[n][1],
                              "category": categorise(*ops[n])}
                             for n, ns in sorted(per_op.items(), key=lambda kv: -kv[1])[:15]],
    }


def run(directory, device="cpu", warmup=3, steps=20, save_first=None, profile_steps=0):
    with open(os.path.join(directory, "step.json")) as f:
        spec = json.load(f)
    if spec.get("format") != FORMAT:
        sys.exit("xla_run: %s is export format %r; this runner reads %d"
                 % (directory, spec.get("format"), FORMAT))
    jax, _jax, backend = _load_jax(device)
    target = backend.local_devices()[0]
    path = os.path.join(directory, spec["hlo"])
    with (gzip.open if path.endswith(".gz") else open)(path, "rb") as f:
        stablehlo = _jax.mlir.hlo_to_stablehlo(f.read())
    start = time.perf_counter()
    executable = backend.compile_and_load(stablehlo, _jax.DeviceList((target,)), _jax.CompileOptions())
    compile_seconds = time.perf_counter() - start

    import jax.numpy as jnp
    with jax.default_device(target):
        arguments = [make_argument(jnp, a["fill"], a["shape"], np.dtype(a["dtype"]))
                     for a in spec["arguments"]]
    jax.block_until_ready(arguments)
    aliases = [(i, a["aliased_output"]) for i, a in enumerate(spec["arguments"])
               if a["aliased_output"] is not None]

    def step(args):
        outputs = executable.execute(args)
        following = list(args)
        for i, out in aliases:      # donated: the updated variables are the next step's inputs
            following[i] = outputs[out]
        return outputs, following

    outputs, arguments = step(arguments)
    first = [np.asarray(o) for o in outputs]           # the only host copy: the first step's
    if save_first:
        np.savez(save_first, **{"out_%d" % i: v for i, v in enumerate(first)})
    npz = os.path.join(directory, "tensorflow_outputs.npz")
    metrics, worst = compare(first, spec, npz if os.path.exists(npz) else None)
    for _ in range(warmup):
        outputs, arguments = step(arguments)
    jax.block_until_ready(outputs)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        outputs, arguments = step(arguments)
        jax.block_until_ready(outputs)
        times.append(time.perf_counter() - start)

    profiled = profile(jax, executable, step, arguments, profile_steps) if profile_steps else None
    median = float(np.median(times))
    peak, peak_source = peak_flops(target.device_kind)
    flops = spec["model_flops_per_step"]
    batch, seq_len = spec["per_replica_batch"], spec["seq_len"]
    try:
        cost = executable.cost_analysis()
        cost = {k: cost[k] for k in ("flops", "transcendentals", "bytes accessed") if k in cost}
    except Exception as e:   # not every backend implements it
        cost = {"unavailable": str(e).splitlines()[0]}
    memory = (target.memory_stats() or {}) if hasattr(target, "memory_stats") else {}
    return {
        "export": {k: spec[k] for k in ("name", "task", "with_nsp", "precision", "seq_len",
                                        "per_replica_batch", "micro_batches", "model")},
        "device": {"platform": backend.platform, "kind": target.device_kind,
                   "jax": jax.__version__, "platform_version": backend.platform_version},
        "compile_seconds": round(compile_seconds, 2),
        "steps_timed": steps,
        "step_seconds": {"median": median, "p10": float(np.percentile(times, 10)),
                         "p90": float(np.percentile(times, 90))},
        "sequences_per_second": batch / median,
        "tokens_per_second": batch * seq_len / median,
        "model_tflop_per_step": flops / 1e12,
        "model_tflops": flops / median / 1e12,
        "mfu": (flops / median / peak) if peak else None,
        "peak_bf16_tflops": peak / 1e12 if peak else None,
        "peak_source": peak_source,
        "xla_cost_analysis": cost,
        "tensorflow_step_seconds": spec["tensorflow"].get("step_seconds"),
        "over_tensorflow": (median / spec["tensorflow"]["step_seconds"]
                            if spec["tensorflow"].get("step_seconds") else None),
        "peak_device_memory_bytes": memory.get("peak_bytes_in_use"),
        "first_step": metrics,
        "worst_output": worst,
        **({"profile": profiled} if profiled else {}),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("directory", help="an export of benchmarks.xla_step")
    parser.add_argument("--device", default="cpu", choices=["cpu", "gpu", "tpu"])
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--json", help="also write the result here")
    parser.add_argument("--save_first", help="an .npz of the first step's outputs (out_0, out_1...)")
    parser.add_argument("--profile", type=int, default=0, metavar="STEPS",
                        help="then profile this many steps: time per category of work")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    result = run(args.directory, args.device, args.warmup, args.steps, args.save_first, args.profile)
    text = json.dumps(result, indent=1)
    print(text)
    if args.json:
        with open(args.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
