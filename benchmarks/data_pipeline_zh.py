r"""Chinese whole-word-masking data builds, side by side with bert4keras's pretraining/data_utils.py.

    python -m benchmarks.data_pipeline_zh --bert4keras_dir=/path/to/bert4keras \
        --bert4keras_python=/path/to/its/venv/bin/python [--corpus=...jsonl] [--max_mb=0] \
        [--workers=2] [--rounds=3] [--scale=4]

On one JSON-lines corpus of Chinese (default: ../shared/corpora/zh_shopping_reviews.jsonl, all of
it; `--max_mb` takes its first MB) and one WordPiece vocab built from it, in the same session:
  * bert4keras's `TrainingDatasetRoBERTa` as its `data_utils.py` __main__ runs it (the roberta
    branch: 10 documents per paragraph, jieba `lcut`, static masks, 10 full passes, seq 512,
    `parallel_apply` with `--workers` processes), from its checkout outside this repo under its
    own interpreter (TensorFlow with tf.keras). Upstream imports jieba_fast; `--peer_segmenter`
    picks what the peer's environment has (default jieba, what its README installs);
  * our builder with the same text, vocab, seq 512, masked_lm_prob 0.15 and up to 77 predictions
    (15% of 512, bert4keras has no cap), instances packed across documents as bert4keras packs
    its paragraphs: static with --dupe_factor=10 and dynamic, with --segmenter=rjieba (median of
    `--rounds`), once each with --segmenter=jieba (the reference), and static on a `--scale` times
    larger corpus (peak RSS must stay flat);
  * word segmentation alone: documents/s of one process with each installed segmenter.
Prints JSON with wall and CPU seconds, peak RSS of the whole process tree, the ratios of both,
the text each tool kept (bert4keras's sentence regex drops text after the last 。 or newline of a
document), and the CPU model and flags. Skips (exit 0, with a reason) when the corpus or the peer
is absent.
"""

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

from benchmarks.data_pipeline import ROOT
from benchmarks.measure import describe_machine, median_of, timed
from data_pipeline.segmenter import SEGMENTERS

# The roberta branch of bert4keras's pretraining/data_utils.py __main__, with its hard-coded paths,
# worker count and segmenter module taken from the command line.
_B4K_DRIVER = r"""
import glob, json, os, re, sys, time
os.environ['TF_KERAS'] = '1'
bert4keras_dir, corpus, vocab, out_dir, seq_len, workers, passes, segmenter = sys.argv[1:9]
sys.path[:0] = [bert4keras_dir, os.path.join(bert4keras_dir, 'pretraining')]
import tensorflow as tf
dir(tf.keras)  # TF 2.15+: resolve the lazy tf.keras before bert4keras installs it as `keras`
import numpy as np
jieba = __import__(segmenter)
jieba.initialize()
from bert4keras.tokenizers import Tokenizer
from data_utils import TrainingDatasetRoBERTa

def some_texts():
    filenames = glob.glob(corpus)
    np.random.shuffle(filenames)
    count, texts = 0, []
    for filename in filenames:
        with open(filename) as f:
            for l in f:
                l = json.loads(l)['text'].strip()
                texts.extend(re.findall(u'.*?[\n。]+', l))
                count += 1
                if count == 10:
                    yield texts
                    count, texts = 0, []
    if texts:
        yield texts

TD = TrainingDatasetRoBERTa(Tokenizer(vocab, do_lower_case=True), lambda t: jieba.lcut(t),
                            sequence_length=int(seq_len))
for i in range(int(passes)):
    TD.process(corpus=some_texts(), record_name=os.path.join(out_dir, 'corpus.%d.tfrecord' % i),
               workers=int(workers), max_queue_size=4000)
"""

_SEGMENT_ALONE = r"""
import json, sys, time
from data_pipeline import sources
from data_pipeline.segmenter import make_segmenter
path, name, docs_per_chunk = sys.argv[1], sys.argv[2], int(sys.argv[3])
docs = ["\n".join(d) for d in sources.iter_documents(sources.SourceConfig(inputs=(path,)), [path],
                                                      sources.ReadStats())]
segmenter = make_segmenter(name)
start = time.time()
segmenter.words("预热")  # loads the dictionary (once per worker in a build)
load = time.time() - start
start = time.time()
for i in range(0, len(docs), docs_per_chunk):
    segmenter.words("\n".join(docs[i:i + docs_per_chunk]))
seconds = time.time() - start
print(json.dumps({"documents_per_s": round(len(docs) / seconds), "seconds": round(seconds, 2),
                  "dictionary_load_s": round(load, 2)}))
"""


def _peer_tokens(out_dir, seq_len):
    """(examples, non-padding tokens) of the peer's first pass."""
    code = ("import sys, tensorflow as tf\n"
            "spec = {'token_ids': tf.io.FixedLenFeature([%d], tf.int64)}\n"
            "n = t = 0\n"
            "for r in tf.data.TFRecordDataset(sys.argv[1]):\n"
            "    ids = tf.io.parse_single_example(r, spec)['token_ids'].numpy()\n"
            "    n += 1; t += int((ids != 0).sum())\n"
            "print(n, t)\n" % seq_len)
    out = subprocess.run([sys.executable, "-c", code, os.path.join(out_dir, "corpus.0.tfrecord")],
                         capture_output=True, check=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"))
    examples, tokens = out.stdout.decode().split()[-2:]
    return int(examples), int(tokens)


def _segmentation(corpus, available):
    out = {}
    for name in ("jieba", "rjieba", "jieba_fast"):
        if name not in available:
            out[name] = "skipped: package not installed"
            continue
        r = subprocess.run([sys.executable, "-c", _SEGMENT_ALONE, corpus, name, "256"], cwd=ROOT,
                           capture_output=True, check=True)
        out[name] = json.loads(r.stdout.decode().splitlines()[-1])
    return out


def _write_corpus(source, path, max_mb, repeat=1):
    limit = max_mb * 1e6 if max_mb else float("inf")
    with open(source, encoding="utf-8") as f:
        lines, size = [], 0
        for line in f:
            size += len(line.encode("utf-8"))
            if size > limit:
                break
            lines.append(line)
    with open(path, "w", encoding="utf-8") as out:
        for _ in range(repeat):
            out.writelines(lines)
    return len(lines) * repeat


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", default=os.path.join(ROOT, "..", "shared", "corpora",
                                                     "zh_shopping_reviews.jsonl"))
    ap.add_argument("--max_mb", type=float, default=0, help="use the corpus's first MB (0: all)")
    ap.add_argument("--bert4keras_dir", default=os.environ.get("BERT4KERAS_DIR"),
                    help="checkout of bojone/bert4keras (holds pretraining/data_utils.py)")
    ap.add_argument("--bert4keras_python", default=os.environ.get("BERT4KERAS_PYTHON"),
                    help="interpreter of an environment with TensorFlow (tf.keras) and jieba")
    ap.add_argument("--peer_segmenter", default="jieba", choices=["jieba", "jieba_fast"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3, help="runs of each of our rjieba builds")
    ap.add_argument("--scale", type=int, default=4, help="static build on a corpus this many times "
                    "larger too (memory must not grow)")
    args = ap.parse_args()
    if not os.path.exists(args.corpus):
        print(json.dumps({"skipped": "corpus %s not found" % args.corpus}))
        return 0
    tmp = tempfile.mkdtemp(prefix="bench_zh_")
    corpus, big = os.path.join(tmp, "corpus.jsonl"), os.path.join(tmp, "corpus_big.jsonl")
    documents = _write_corpus(args.corpus, corpus, args.max_mb)
    _write_corpus(args.corpus, big, args.max_mb, repeat=args.scale)
    vocab = os.path.join(tmp, "vocab.txt")
    subprocess.run([sys.executable, "-m", "launch.build_vocab", "--input=" + corpus, "--output=" + vocab,
                    "--vocab_size=21128"], cwd=ROOT, check=True, capture_output=True)
    result = {"machine": describe_machine(), "corpus_mb": round(os.path.getsize(corpus) / 1e6, 2),
              "documents": documents, "workers": args.workers, "seq_len": 512}

    common = [sys.executable, "-m", "launch.build_data", "--input=" + corpus, "--vocab=" + vocab,
              "--seq_len=512", "--masked_lm_prob=0.15", "--max_predictions_per_seq=77",
              "--cross_documents", "--progress=false", "--overwrite",
              "--num_workers=%d" % args.workers]
    static = ["--mode=static", "--dupe_factor=10"]

    def ours(name, flags, segmenter, rounds, source=corpus):
        out = os.path.join(tmp, name)
        cmd = [a if a != "--input=" + corpus else "--input=" + source for a in common]
        run = median_of(rounds, lambda: timed(cmd + flags + ["--segmenter=" + segmenter,
                                                             "--output_dir=" + out], ROOT))
        stats = json.load(open(os.path.join(out, "manifest.json")))
        copies = 10 if "--mode=static" in flags else 1
        return dict(run, examples=stats["splits"]["train"]["examples"],
                    tokens_per_copy=stats["stats"]["tokens"] // copies)

    result["ours_static"] = ours("static", static, "rjieba", args.rounds)
    result["ours_dynamic"] = ours("dynamic", [], "rjieba", args.rounds)
    result["ours_static_jieba"] = ours("static_jieba", static, "jieba", 1)
    result["ours_dynamic_jieba"] = ours("dynamic_jieba", [], "jieba", 1)
    result["ours_static_larger_corpus"] = dict(
        ours("static_big", static, "rjieba", 1, source=big),
        corpus_mb=round(os.path.getsize(big) / 1e6, 2))
    installed = [s for s in SEGMENTERS if importlib.util.find_spec(s) is not None]
    result["segmentation_alone_one_process"] = _segmentation(corpus, installed)

    peer_ok = (args.bert4keras_dir and args.bert4keras_python
               and os.path.exists(os.path.join(args.bert4keras_dir, "pretraining", "data_utils.py"))
               and os.path.exists(args.bert4keras_python))
    if peer_ok:
        driver, out = os.path.join(tmp, "b4k_roberta.py"), os.path.join(tmp, "b4k")
        os.makedirs(out)
        open(driver, "w").write(_B4K_DRIVER)
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="", TF_CPP_MIN_LOG_LEVEL="2")
        result["bert4keras"] = timed([args.bert4keras_python, driver, args.bert4keras_dir, corpus,
                                      vocab, out, "512", str(args.workers), "10",
                                      args.peer_segmenter], tmp, env=env)
        examples, tokens = _peer_tokens(out, 512)
        result["bert4keras"].update(segmenter=args.peer_segmenter, passes=10,
                                    examples=examples * 10, tokens_per_copy=tokens)
        p = result["bert4keras"]["seconds"]
        result["speedup_static"] = round(p / result["ours_static"]["seconds"], 1)
        result["speedup_dynamic"] = round(p / result["ours_dynamic"]["seconds"], 1)
        result["speedup_static_jieba"] = round(p / result["ours_static_jieba"]["seconds"], 1)
        result["speedup_dynamic_jieba"] = round(p / result["ours_dynamic_jieba"]["seconds"], 1)
        pc = result["bert4keras"]["cpu_seconds"]
        result["cpu_ratio_static"] = round(pc / result["ours_static"]["cpu_seconds"], 1)
        result["cpu_ratio_dynamic"] = round(pc / result["ours_dynamic"]["cpu_seconds"], 1)
    else:
        result["bert4keras"] = ("skipped: pass --bert4keras_dir=<checkout of bojone/bert4keras> and "
                                "--bert4keras_python=<python of an environment with TensorFlow and jieba>")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
