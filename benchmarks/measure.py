"""What every benchmark shares: the machine it ran on, and the time and memory of a command.

The machine is printed with every figure, because ratios between tools move with it.
The same code measured 3.2x HF transformers on an AVX-512 machine and 2.0x on an AVX2 one, so each
benchmark's JSON carries lscpu's model name, the core count, the vector extensions that decide
matmul speed, and the float32 matmul rate measured here just before (NumPy's BLAS on every core,
the best of a few 2048 x 2048 products): a figure from a slower machine can then be told apart
from a slower program.
"""

import os
import resource
import subprocess
import threading
import time


def cpu():
    """lscpu's model name, the core count and the SIMD flags (avx*, amx*, fma, sse4*)."""
    info = {"cores": os.cpu_count()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        info["model"] = "unknown (no lscpu)"
        return info
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    info["model"] = fields.get("Model name", "").strip()
    info["flags"] = sorted(f for f in fields.get("Flags", "").split()
                           if f.startswith(("avx", "sse4", "fma", "amx")))
    return info


def matmul_gflops(n=2048, repeats=5):
    """float32 GFLOP/s of an n x n x n matmul (NumPy, every core), the best of `repeats`."""
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
    a @ b   # warm-up: thread pool and caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return round(2.0 * n ** 3 / best / 1e9, 1)


def describe_machine():
    """{"cores", "model", "flags", "matmul_fp32_gflops"}: what every benchmark prints."""
    info = cpu()
    info["matmul_fp32_gflops"] = matmul_gflops()
    return info


# ------------------------------------------------------------------------- a command's cost

def _rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
    except (OSError, StopIteration):
        return 0


def _tree(pid):
    """pid and all its descendants (Linux /proc)."""
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        try:   # children are listed under the thread that started them: read every thread's
            for task in os.listdir("/proc/%d/task" % p):
                with open("/proc/%d/task/%s/children" % (p, task)) as f:
                    stack.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def _children_cpu_seconds():
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(cmd, cwd, env=None):
    """Runs cmd; its wall seconds, the peak RSS of its process tree and of the largest single
    process in it (sampled every 50 ms), and CPU seconds (user + system of the processes that
    were waited for: build workers, multiprocessing pools). CPU seconds move less than wall
    seconds on a shared machine: compare both. A failed command raises with its stderr's end."""
    start, cpu = time.time(), _children_cpu_seconds()
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    peak, single = [0], {}

    def sample():
        while proc.poll() is None:
            sizes = {p: _rss_kb(p) for p in _tree(proc.pid)}
            peak[0] = max(peak[0], sum(sizes.values()))
            for p, kb in sizes.items():
                single[p] = max(single.get(p, 0), kb)
            time.sleep(0.05)
    thread = threading.Thread(target=sample)
    thread.start()
    _, err = proc.communicate()
    thread.join()
    if proc.returncode:
        raise RuntimeError("%s failed:\n%s" % (" ".join(cmd[:6]), err.decode()[-2000:]))
    return {"seconds": round(time.time() - start, 2), "peak_rss_mb": round(peak[0] / 1024, 1),
            "largest_process_mb": round(max(single.values(), default=0) / 1024, 1),
            "cpu_seconds": round(_children_cpu_seconds() - cpu, 2)}


def median_of(rounds, run):
    """Runs `run` (returning a `timed` result) `rounds` times: the run with the median time, plus
    every time seen."""
    runs = sorted((run() for _ in range(rounds)), key=lambda r: r["seconds"])
    return dict(runs[len(runs) // 2], all_seconds=[r["seconds"] for r in runs],
                all_cpu_seconds=[r["cpu_seconds"] for r in runs])
