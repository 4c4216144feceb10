r"""Side-by-side benchmark of the data builder against google-research/bert, and loader throughput.

    python -m benchmarks.data_pipeline --google_bert_dir=/path/to/google-research-bert \
        [--corpus=../shared/corpora] [--repeat=2] [--workers=2]

Builds one English corpus (WikiText-2 valid + tinyshakespeare, concatenated `--repeat` times) and a
WordPiece vocab, then runs, on the same machine in the same session:
  * google-research/bert create_pretraining_data.py (seq 128, 20 predictions, 0.15, dupe 5), run
    from its checkout outside this repo under TensorFlow's v1 compatibility module;
  * our builder, static mode with the same settings (--layout=pairs), and dynamic mode;
  * the loader with dynamic masking over the dynamic shards.
Prints JSON: wall seconds and peak RSS (whole process tree) of each run (ours: the median of
`--rounds`), the ratios, examples/s, and our static build on a `--scale` times larger corpus (its
peak RSS must stay where it was: memory does not grow with the corpus).
Skips (exit 0, with a reason) when the corpora or the peer checkout are absent.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile

from benchmarks.measure import describe_machine, median_of, timed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SHIM = ("import sys\nimport tensorflow.compat.v1 as tf\nsys.modules['tensorflow'] = tf\n"
         "sys.path.insert(0, sys.argv.pop(1))\nimport create_pretraining_data as c\ntf.app.run(c.main)\n")


def loader_throughput(data_dir, seconds=10.0):
    code = ("import time\nfrom data_pipeline import loader\n"
            "it = iter(loader.make_dataset(%r, batch_size=256, seed=0))\n"
            "for _ in range(20): next(it)\n"
            "t = time.time(); n = 0\n"
            "while time.time() - t < %f: next(it); n += 256\n"
            "print(n / (time.time() - t))\n" % (data_dir, seconds))
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, check=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    return round(float(out.stdout.decode().split()[-1]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--google_bert_dir", default=os.environ.get("GOOGLE_BERT_DIR"))
    ap.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "corpora"))
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="runs of each of our builds (median kept)")
    ap.add_argument("--scale", type=int, default=4,
                    help="also build static from a corpus this many times larger (memory must not grow)")
    args = ap.parse_args()
    files = [os.path.join(args.corpus, n) for n in ("wikitext2_valid.txt", "tinyshakespeare.txt")]
    if not all(os.path.exists(f) for f in files):
        print(json.dumps({"skipped": "corpora not found under %s" % args.corpus}))
        return 0
    tmp = tempfile.mkdtemp(prefix="bench_data_")
    corpus = os.path.join(tmp, "corpus.txt")
    big = os.path.join(tmp, "corpus_x%d.txt" % args.scale)
    for path, repeat in ((corpus, args.repeat), (big, args.repeat * args.scale)):
        with open(path, "w", encoding="utf-8") as out:
            for _ in range(repeat):
                for f in files:
                    out.write(open(f, encoding="utf-8").read() + "\n\n")
    vocab_path = os.path.join(tmp, "vocab.txt")
    subprocess.run([sys.executable, "-m", "launch.build_vocab", "--input=" + corpus,
                    "--output=" + vocab_path, "--vocab_size=16000"], cwd=ROOT, check=True,
                   capture_output=True)
    common = ["--input=" + corpus, "--vocab=" + vocab_path, "--seq_len=128", "--progress=false",
              "--max_predictions_per_seq=20", "--masked_lm_prob=0.15", "--overwrite",
              "--num_workers=%d" % args.workers]
    build = [sys.executable, "-m", "launch.build_data"] + common
    static = ["--mode=static", "--layout=pairs", "--dupe_factor=5"]
    result = {"machine": describe_machine(), "corpus_mb": round(os.path.getsize(corpus) / 1e6, 2)}
    result["ours_static"] = median_of(args.rounds, lambda: timed(
        build + static + ["--output_dir=" + os.path.join(tmp, "static")], ROOT))
    result["ours_dynamic"] = median_of(args.rounds, lambda: timed(
        build + ["--output_dir=" + os.path.join(tmp, "dynamic")], ROOT))
    # Memory must not grow with the corpus: the same static build on a corpus `scale` times larger.
    result["ours_static_larger_corpus"] = dict(
        timed([a if a != "--input=" + corpus else "--input=" + big for a in build] + static
              + ["--output_dir=" + os.path.join(tmp, "static_big")], ROOT),
        corpus_mb=round(os.path.getsize(big) / 1e6, 2))
    result["loader_examples_per_s"] = loader_throughput(os.path.join(tmp, "dynamic"))
    if args.google_bert_dir and os.path.exists(os.path.join(args.google_bert_dir,
                                                            "create_pretraining_data.py")):
        shim = os.path.join(tmp, "run_google.py")
        open(shim, "w").write(_SHIM)
        result["google"] = timed([sys.executable, shim, args.google_bert_dir, "--input_file=" + corpus,
                                  "--output_file=" + os.path.join(tmp, "google.tfrecord"),
                                  "--vocab_file=" + vocab_path, "--do_lower_case=True",
                                  "--max_seq_length=128", "--max_predictions_per_seq=20",
                                  "--masked_lm_prob=0.15", "--dupe_factor=5", "--random_seed=12345"],
                                 tmp)
        g = result["google"]["seconds"]
        result["speedup_static"] = round(g / result["ours_static"]["seconds"], 1)
        result["speedup_dynamic"] = round(g / result["ours_dynamic"]["seconds"], 1)
        gc = result["google"]["cpu_seconds"]
        result["cpu_ratio_static"] = round(gc / result["ours_static"]["cpu_seconds"], 1)
        result["cpu_ratio_dynamic"] = round(gc / result["ours_dynamic"]["cpu_seconds"], 1)
    else:
        result["google"] = "skipped: pass --google_bert_dir=<checkout of google-research/bert>"
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
