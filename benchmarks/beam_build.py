r"""The Beam engine next to the local builder, on the data benchmark's corpus (JSON on stdout).

    python benchmarks/beam_build.py [--corpus=../shared/corpora] [--rounds=3]

Builds the same 4.5 MB of English (WikiText-2 valid + tinyshakespeare, twice) in static (Google
layout, dupe 5) and dynamic mode with: the local builder (2 worker processes); Beam's
multi-processing DirectRunner with 2 and with 1 worker; the FnApiRunner (one process); and the
DirectRunner on a 4x larger corpus, for memory. Reports wall seconds (median of --rounds), the
peak RSS of the whole process tree and of the largest single process (a Beam worker, or the
runner), the Beam/local ratio (target <= 3x) and 1 -> 2 worker scaling, and checks that every
Beam build wrote the local builder's bytes. Skips (exit 0) when the corpora are absent.

What it means for Dataflow (an estimate from these figures, not a Dataflow measurement): a Beam
worker process here builds about `mb_per_s_per_worker` MB of raw text per second (static mode
with dupe_factor 5 is the slow case, dynamic ~2x faster). A Dataflow worker of 4 vCPUs runs 4
such processes, so ~4x that; at the 0.6 MB/s per process measured on the 2-core AVX-512 EPYC
below in static mode, a 100 GB corpus is 100,000 / 2.4 = ~42,000 worker-seconds: about 12
worker-hours of n1-standard-4 (4 vCPU, 15 GB). At Dataflow's list prices for batch in
us-central1 (about $0.056 per vCPU-hour and $0.0036 per GB-hour of memory, plus ~$0.011 per GB of
shuffled data), that is about 12 x (4 x 0.056 + 15 x 0.0036) = ~$3.3 of workers, plus shuffle of
roughly the corpus size twice (documents to chunks, in the count and build passes): ~$2-3. Worker
start-up (installing requirements.txt, TensorFlow included, unless a custom worker image is
used) adds a few minutes per worker. Verify prices on cloud.google.com/dataflow/pricing.
"""

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DIRECT = "--runner=DirectRunner --direct_running_mode=multi_processing --direct_num_workers=%d"


def _rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            return next(int(line.split()[1]) for line in f if line.startswith("VmRSS"))
    except (OSError, StopIteration):
        return 0


def _tree(pid):
    out, stack = [], [pid]
    while stack:
        p = stack.pop()
        out.append(p)
        try:
            with open("/proc/%d/task/%d/children" % (p, p)) as f:
                stack.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return out


def timed(cmd):
    """Wall seconds, peak RSS of the process tree, and of its largest single process."""
    start = time.time()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))
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
            "largest_process_mb": round(max(single.values(), default=0) / 1024, 1)}


def median_of(rounds, run):
    runs = sorted((run() for _ in range(rounds)), key=lambda r: r["seconds"])
    return dict(runs[len(runs) // 2], all_seconds=[r["seconds"] for r in runs])


def shard_hashes(directory):
    manifest = json.load(open(os.path.join(directory, "manifest.json")))
    return [hashlib.sha256(open(os.path.join(directory, f), "rb").read()).hexdigest()
            for split in manifest["splits"].values() for f in split["files"]]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "corpora"))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--scale", type=int, default=4)
    args = ap.parse_args()
    files = [os.path.join(args.corpus, n) for n in ("wikitext2_valid.txt", "tinyshakespeare.txt")]
    if not all(os.path.exists(f) for f in files):
        print(json.dumps({"skipped": "corpora not found under %s" % args.corpus}))
        return 0
    tmp = tempfile.mkdtemp(prefix="bench_beam_")
    corpus, big = os.path.join(tmp, "corpus.txt"), os.path.join(tmp, "corpus_big.txt")
    for path, repeat in ((corpus, args.repeat), (big, args.repeat * args.scale)):
        with open(path, "w", encoding="utf-8") as out:
            for _ in range(repeat):
                for f in files:
                    out.write(open(f, encoding="utf-8").read() + "\n\n")
    vocab = os.path.join(tmp, "vocab.txt")
    subprocess.run([sys.executable, "-m", "launch.build_vocab", "--input=" + corpus, "--output=" + vocab,
                    "--vocab_size=16000"], cwd=ROOT, check=True, capture_output=True)
    lscpu = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
    model = next((l.split(":", 1)[1].strip() for l in lscpu.splitlines() if l.startswith("Model name")), "?")
    flags = [f for f in ("avx2", "avx512f", "avx512_bf16") if f in lscpu]
    result = {"machine": {"cpu": model, "cores": os.cpu_count(), "flags": flags},
              "corpus_mb": round(os.path.getsize(corpus) / 1e6, 2)}
    modes = {"static": ["--mode=static", "--layout=pairs", "--dupe_factor=5"], "dynamic": []}
    for mode, extra in modes.items():
        base = [sys.executable, "-m", "launch.build_data", "--vocab=" + vocab, "--seq_len=128",
                "--noprogress", "--max_predictions_per_seq=20", "--overwrite"] + extra

        def run(name, engine, inputs=corpus):
            out = os.path.join(tmp, "%s_%s" % (mode, name))
            return timed(base + ["--input=" + inputs, "--output_dir=" + out] + engine), out

        local, local_dir = run("local", ["--num_workers=2"])
        rows = {"local_2_workers": median_of(args.rounds, lambda: run("local", ["--num_workers=2"])[0])}
        for name, engine in (("beam_direct_2_workers", ["--engine=beam", "--beam_options=" + DIRECT % 2]),
                             ("beam_direct_1_worker", ["--engine=beam", "--beam_options=" + DIRECT % 1]),
                             ("beam_fnapi", ["--engine=beam", "--beam_options=--runner=FnApiRunner"])):
            rows[name] = median_of(args.rounds, lambda: run(name, engine)[0])
            rows[name]["same_bytes_as_local"] = shard_hashes(os.path.join(tmp, "%s_%s" % (mode, name))) \
                == shard_hashes(local_dir)
        rows["beam_direct_2_workers_corpus_x%d" % args.scale] = dict(
            run("big", ["--engine=beam", "--beam_options=" + DIRECT % 2], big)[0],
            corpus_mb=round(os.path.getsize(big) / 1e6, 2))
        two, one = rows["beam_direct_2_workers"]["seconds"], rows["beam_direct_1_worker"]["seconds"]
        rows["beam_over_local"] = round(two / rows["local_2_workers"]["seconds"], 2)
        rows["beam_1_to_2_workers_speedup"] = round(one / two, 2)
        rows["mb_per_s_per_worker"] = round(result["corpus_mb"] / two / 2, 3)
        result[mode] = rows
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
