r"""The main job end to end on text that ships with the project: offline, on CPU, in minutes.

    python -m launch.quickstart --workdir=workspace/quickstart

Writes a corpus derived from the project's own documentation (English) plus its Chinese sample,
builds a WordPiece vocab and dynamic-masking shards with an eval split, shows a masked batch, then
pretrains the tiny BERT of configs/quickstart.py and compares its held-out MLM accuracy with the
unigram baseline (always predicting the most frequent masked token). The run (checkpoints,
metrics.jsonl, TensorBoard, config.json) is left in WORKDIR/run; re-running resumes it.
"""

import os
import sys

from absl import app, flags, logging

import numpy as np

from configs import quickstart as quickstart_config
from data_pipeline import builder, loader, sample_corpus, sources, vocab
from data_pipeline.instances import InstanceConfig
from data_pipeline.manifest import ManifestError
from launch import common

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "workspace/quickstart", "Where the corpus, vocab, data and run go.")
flags.DEFINE_integer("steps", None, "Training steps (default: the config's 1500); the warmup keeps "
                     "its share of the run.", lower_bound=1)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # TensorFlow's INFO lines drown the progress output
    try:
        os.makedirs(FLAGS.workdir, exist_ok=True)
    except OSError as e:   # a file of that name, or no permission
        print("quickstart: error: cannot use --workdir=%s as a directory: %s" % (FLAGS.workdir, e.strerror),
              file=sys.stderr)
        return 2
    common.import_tensorflow(FLAGS.verbose)
    corpus = sample_corpus.write_corpus(
        os.path.join(FLAGS.workdir, "corpus.txt"),
        sample_corpus.english_documents() + sample_corpus.chinese_documents())
    texts = [line for line in open(corpus, encoding="utf-8") if line.strip()]
    vocab_path = os.path.join(FLAGS.workdir, "vocab.txt")
    tok = vocab.build_wordpiece(texts, vocab_path, vocab_size=3000, min_frequency=1, num_reserved=10)
    print("vocab: %s (%d tokens)" % (vocab_path, tok.vocab_size), file=sys.stderr)
    data_dir = os.path.join(FLAGS.workdir, "data_mlm_128")
    try:
        builder.build(builder.BuildConfig(
            output_dir=data_dir, vocab=vocab_path, source=sources.SourceConfig(inputs=(corpus,)),
            instance=InstanceConfig(seq_len=128), num_shards=4, eval_fraction=0.1, docs_per_chunk=32))
    except builder.BuildError as e:
        print("quickstart: error: %s\nThe quickstart's text is the project's documentation: when it "
              "has changed since this workspace was built (a new version), use a new --workdir."
              % e, file=sys.stderr)
        return 2
    ds = loader.make_dataset(data_dir, batch_size=8, seed=0)
    for step, batch in zip(range(2), ds):
        ids = batch["input_ids"][0].numpy()
        n = int(batch["input_mask"][0].numpy().sum())
        print("batch %d, example 0: %s" % (step, " ".join(tok.vocab[i] for i in ids[:n])))
        w = batch["masked_lm_weights"][0].numpy() > 0
        targets = [tok.vocab[i] for i in batch["masked_lm_ids"][0].numpy()[w]]
        print("  predict %d tokens: %s" % (w.sum(), " ".join(targets)))

    from pretrain.trainer import TrainError, Trainer

    config = quickstart_config.get_config()
    config.data.train_dir = data_dir
    if FLAGS.steps is not None:
        scale_steps(config, FLAGS.steps)
    try:
        result = Trainer(config, os.path.join(FLAGS.workdir, "run")).train()
    except (TrainError, ManifestError) as e:
        print("quickstart: error: %s" % e, file=sys.stderr)
        return 2
    except KeyboardInterrupt:   # Ctrl-C before the training loop (a second one in it exits at once)
        print("quickstart: stopped by Ctrl-C; re-run the command to resume.", file=sys.stderr)
        return 130
    if result.status != "finished":   # Ctrl-C or SIGTERM: checkpointed at the loop boundary
        print("quickstart: stopped at step %d (%s); re-run the command to resume."
              % (result.step, result.status), file=sys.stderr)
        return 130 if result.status == "interrupted" else 0
    baseline = unigram_baseline(data_dir)
    accuracy = (result.eval_metrics or {}).get("mlm_accuracy", float("nan"))
    print("held-out MLM accuracy %.3f vs unigram baseline %.3f (%.1fx)"
          % (accuracy, baseline, accuracy / max(baseline, 1e-9)))
    return 0


def scale_steps(config, steps):
    """--steps: the warmup keeps its share of the run; loops, checkpoints and evaluations happen
    at least once."""
    train = config.train
    config.optimizer.warmup_steps = config.optimizer.warmup_steps * steps // train.steps
    train.steps = steps
    for field in ("steps_per_loop", "checkpoint_every", "eval_every"):
        train[field] = min(train[field], steps)


def unigram_baseline(data_dir):
    """Accuracy on the eval split of always predicting the most frequent masked token of train."""
    counts = {}
    for batch in loader.make_dataset(data_dir, batch_size=64, training=False):
        ids = batch["masked_lm_ids"].numpy()[batch["masked_lm_weights"].numpy() > 0]
        for token, n in zip(*np.unique(ids, return_counts=True)):
            counts[token] = counts.get(token, 0) + n
    top = max(counts, key=counts.get)
    hits = total = 0
    for batch in loader.make_dataset(data_dir, batch_size=64, split="eval", training=False):
        ids = batch["masked_lm_ids"].numpy()[batch["masked_lm_weights"].numpy() > 0]
        hits += int((ids == top).sum())
        total += len(ids)
    return hits / max(total, 1)


if __name__ == "__main__":
    app.run(main)
