#!/usr/bin/env bash
# The training step on a GPU (or TPU) machine that has JAX and no TensorFlow, in one call.
#
# Here (TensorFlow), once: export the steps (BERT-base seq 128, BERT-large seq 128 and 512, bf16,
# a few per-device batch sizes; about 10 CPU-minutes, mostly TensorFlow's reference steps):
#     python -m benchmarks.xla_step suite --out=xla_suite
# There, from the repository root (the working tree, xla_suite included, copied over):
#     bash benchmarks/gpu_check.sh xla_suite "$OUT"
# Each export runs benchmarks/xla_run.py (compile, first step against TensorFlow's, warm-up, timed
# loop); results land in OUT as one JSON per export plus summary.json, and a table is printed.
# The whole call stops starting new exports after BUDGET_S seconds (default 420: a lent machine
# gives 8 minutes a command). DEVICE=cpu|gpu|tpu (default gpu), STEPS (default 20).
set -uo pipefail
dir=${1:?usage: gpu_check.sh EXPORTS_DIR [OUT_DIR]}
out=${2:-${OUT:-gpu_check_results}}
device=${DEVICE:-gpu}
steps=${STEPS:-20}
budget=${BUDGET_S:-420}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
export XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.92}

{ nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv 2>/dev/null
  python -c "import jax, jaxlib; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, jax.devices())"
} > "$out/machine.txt" 2>&1
cat "$out/machine.txt"

start=$(date +%s)
for export_dir in "$dir"/*/; do
    name=$(basename "$export_dir")
    left=$(( budget - ($(date +%s) - start) ))
    if [ "$left" -lt 45 ]; then
        echo "skipped $name: ${budget}s budget spent" | tee -a "$out/skipped.txt"
        continue
    fi
    echo "== $name (${left}s left)"
    if ! timeout "$left" python "$here/xla_run.py" "$export_dir" --device="$device" --steps="$steps" \
            --warmup=3 --json="$out/$name.json" > "$out/$name.log" 2>&1; then
        echo "failed $name: $(tail -n 1 "$out/$name.log")" | tee -a "$out/failed.txt"
    fi
done

python - "$out" <<'PY'
import glob, json, os, sys
out = sys.argv[1]
rows = []
for path in sorted(glob.glob(os.path.join(out, "*.json"))):
    if os.path.basename(path) == "summary.json":
        continue
    r = json.load(open(path))
    e = r["export"]
    losses = {k: v for k, v in r["first_step"].items() if k.endswith("_loss")}
    rows.append({
        "export": os.path.basename(path)[:-5], "device": r["device"]["kind"],
        "jax": r["device"]["jax"], "model": e["model"], "seq_len": e["seq_len"],
        "per_device_batch": e["per_replica_batch"], "precision": e["precision"],
        "step_ms": round(1000 * r["step_seconds"]["median"], 2),
        "step_ms_p10_p90": [round(1000 * r["step_seconds"][k], 2) for k in ("p10", "p90")],
        "sequences_per_second": round(r["sequences_per_second"], 1),
        "model_tflops": round(r["model_tflops"], 1),
        "mfu": None if r["mfu"] is None else round(r["mfu"], 3),
        "compile_seconds": r["compile_seconds"],
        "peak_memory_gib": (None if r["peak_device_memory_bytes"] is None
                            else round(r["peak_device_memory_bytes"] / 2**30, 1)),
        "first_step_loss_vs_tensorflow": {k: v["relative_difference"] for k, v in losses.items()},
    })
json.dump(rows, open(os.path.join(out, "summary.json"), "w"), indent=1)
print("| export | device | step ms | seq/s | model TFLOP/s | MFU | peak GiB | compile s |")
print("|---|---|---|---|---|---|---|---|")
for r in rows:
    print("| %s | %s | %s | %s | %s | %s | %s | %s |" % (
        r["export"], r["device"], r["step_ms"], r["sequences_per_second"], r["model_tflops"],
        r["mfu"], r["peak_memory_gib"], r["compile_seconds"]))
PY
