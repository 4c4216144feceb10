r"""Costs of the training engine's memory/time trade-offs, measured through the real `Trainer` step.

    python -m benchmarks.engine --mode=recompute      # peak memory and step time, recompute on/off
    python -m benchmarks.engine --mode=accumulation   # per-example time, k=4 micro-batches vs k=1

recompute (issue #4 shapes): 8 blocks, hidden 256, 4 heads, intermediate 1024, seq 512, batch 16,
AdamW, dropout 0.1. Each setting runs in its own process (peak RSS is per process); the figure
compared is the growth of the resident set during training over what the process held once the
model, optimizer and data pipeline were built ("activation peak"), plus the raw peak RSS.
Targets: activation peak with recompute <= 40% of without; step time <= 1.4x.

accumulation: hidden 256, 4 layers, seq 128, global batch 32 per update; k=1 (one batch of 32)
vs k=4 (four micro-batches of 8, summed locally, one update). Rounds alternate between the two
to spread machine noise evenly; the median per-example time is compared. Target: k=4 <= 1.1x.

Both use data built from the text the project ships (as the quickstart does), in a temp dir.
Prints JSON.
"""

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from benchmarks.measure import describe_machine

FLAGS = flags.FLAGS
flags.DEFINE_enum("mode", "recompute", ["recompute", "accumulation"], "What to measure.")
flags.DEFINE_integer("steps", 6, "Timed updates per measurement (after one warm-up call).")
flags.DEFINE_integer("rounds", 3, "accumulation: alternating rounds per setting.")
flags.DEFINE_float("dropout", 0.1, "Hidden and attention dropout rate.")
flags.DEFINE_string("data_dir", "", "Reuse a data dir (else built in a temp dir).")
flags.DEFINE_string("child", "", "Internal: run one recompute setting ('on'/'off') and print JSON.")


def build_data(workdir, seq_len):
    from data_pipeline import builder, sample_corpus, sources, vocab
    from data_pipeline.instances import InstanceConfig

    corpus = sample_corpus.write_corpus(
        os.path.join(workdir, "corpus.txt"),
        sample_corpus.english_documents() + sample_corpus.chinese_documents())
    texts = [line for line in open(corpus, encoding="utf-8") if line.strip()]
    vocab_path = os.path.join(workdir, "vocab.txt")
    vocab.build_wordpiece(texts, vocab_path, vocab_size=8000, min_frequency=1)
    out = os.path.join(workdir, "data_%d" % seq_len)
    builder.build(builder.BuildConfig(
        output_dir=out, vocab=vocab_path, source=sources.SourceConfig(inputs=(corpus,)),
        instance=InstanceConfig(seq_len=seq_len), num_shards=2, eval_fraction=0.0,
        docs_per_chunk=32, progress=False))
    return out


def make_trainer(data_dir, workdir, layers, batch, micro_batches=1, recompute=False):
    from configs import base
    from pretrain.trainer import Trainer

    c = base.get_config()
    c.model.update(hidden_size=256, num_hidden_layers=layers, num_attention_heads=4,
                   intermediate_size=1024, max_position_embeddings=512,
                   hidden_dropout_prob=FLAGS.dropout, attention_probs_dropout_prob=FLAGS.dropout)
    c.data.update(train_dir=data_dir, shuffle_buffer=1000)
    c.train.update(global_batch_size=batch, micro_batches=micro_batches, recompute=recompute,
                   steps=10 ** 6, checkpoint_every=10 ** 6)
    c.optimizer.update(name="adamw", learning_rate=1e-4, warmup_steps=10)
    return Trainer(c, workdir, progress=False)


def timed_updates(trainer, steps):
    """Seconds per update over `steps` updates in one tf.function call (after a warm-up call)."""
    import tensorflow as tf

    with trainer.strategy.scope():
        trainer._train_loop(trainer.iterator, tf.constant(1, tf.int64))   # trace + warm-up
        t = time.perf_counter()
        totals, _ = trainer._train_loop(trainer.iterator, tf.constant(steps, tf.int64))
        float(totals["mlm_loss"])
    return (time.perf_counter() - t) / steps


def rss_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS in /proc/self/status")


def recompute_child(setting, data_dir):
    with tempfile.TemporaryDirectory() as workdir:
        trainer = make_trainer(data_dir, workdir, layers=8, batch=16, recompute=setting == "on")
        before = rss_mb()
        seconds = timed_updates(trainer, FLAGS.steps)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"recompute": setting, "rss_after_build_mb": before, "peak_rss_mb": peak,
                      "activation_peak_mb": peak - before, "seconds_per_update": seconds}))


def recompute(data_dir):
    results = {}
    for setting in ("off", "on"):
        out = subprocess.run([sys.executable, "-m", "benchmarks.engine", "--child=" + setting,
                              "--data_dir=" + data_dir, "--steps=%d" % FLAGS.steps,
                              "--dropout=%g" % FLAGS.dropout],
                             check=True, capture_output=True, text=True).stdout
        results[setting] = json.loads(out.strip().splitlines()[-1])
    off, on = results["off"], results["on"]
    return {"shapes": dict(layers=8, hidden=256, heads=4, seq=512, batch=16, dropout=FLAGS.dropout),
            "without_recompute": off, "with_recompute": on,
            "activation_peak_ratio": on["activation_peak_mb"] / off["activation_peak_mb"],
            "peak_rss_ratio": on["peak_rss_mb"] / off["peak_rss_mb"],
            "step_time_ratio": on["seconds_per_update"] / off["seconds_per_update"],
            "targets": {"activation_peak_ratio": "<= 0.40", "step_time_ratio": "<= 1.40"}}


def accumulation(data_dir):
    with tempfile.TemporaryDirectory() as workdir:
        trainers = {k: make_trainer(data_dir, os.path.join(workdir, "k%d" % k), layers=4, batch=32,
                                    micro_batches=k) for k in (1, 4)}
        times = {1: [], 4: []}
        for _ in range(FLAGS.rounds):
            for k, trainer in trainers.items():
                times[k].append(timed_updates(trainer, FLAGS.steps) / 32)
    per_example = {k: statistics.median(v) for k, v in times.items()}
    return {"shapes": dict(layers=4, hidden=256, heads=4, seq=128, examples_per_update=32),
            "k1_ms_per_example": per_example[1] * 1e3, "k4_ms_per_example": per_example[4] * 1e3,
            "all_rounds_ms_per_example": {"k%d" % k: [round(x * 1e3, 3) for x in v]
                                          for k, v in times.items()},
            "k4_over_k1": per_example[4] / per_example[1], "target": "<= 1.10"}


def main(argv):
    del argv
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if FLAGS.child:
        return recompute_child(FLAGS.child, FLAGS.data_dir)
    seq_len = 512 if FLAGS.mode == "recompute" else 128
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = FLAGS.data_dir or build_data(tmp, seq_len)
        result = recompute(data_dir) if FLAGS.mode == "recompute" else accumulation(data_dir)
    print(json.dumps(dict(mode=FLAGS.mode, machine=describe_machine(), **result), indent=2))


if __name__ == "__main__":
    app.run(main)
