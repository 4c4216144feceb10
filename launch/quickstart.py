r"""The whole data path on text that ships with the project, offline, on CPU, in seconds.

    python -m launch.quickstart --workdir=workspace/quickstart

Writes a corpus derived from the project's own documentation (English) plus its Chinese sample,
builds a WordPiece vocab, builds dynamic-masking shards with an eval split, and reads two batches
back through the tf.data loader, printing their masked tokens.
"""

import os
import sys

from absl import app, flags

from data_pipeline import builder, loader, sample_corpus, sources, vocab
from data_pipeline.instances import InstanceConfig

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "workspace/quickstart", "Where the corpus, vocab and data go.")


def main(argv):
    del argv
    os.makedirs(FLAGS.workdir, exist_ok=True)
    corpus = sample_corpus.write_corpus(
        os.path.join(FLAGS.workdir, "corpus.txt"),
        sample_corpus.english_documents() + sample_corpus.chinese_documents())
    texts = [line for line in open(corpus, encoding="utf-8") if line.strip()]
    vocab_path = os.path.join(FLAGS.workdir, "vocab.txt")
    tok = vocab.build_wordpiece(texts, vocab_path, vocab_size=3000, min_frequency=1, num_reserved=10)
    print("vocab: %s (%d tokens)" % (vocab_path, tok.vocab_size), file=sys.stderr)
    data_dir = os.path.join(FLAGS.workdir, "data_mlm_128")
    builder.build(builder.BuildConfig(
        output_dir=data_dir, vocab=vocab_path, source=sources.SourceConfig(inputs=(corpus,)),
        instance=InstanceConfig(seq_len=128), num_shards=4, eval_fraction=0.1, docs_per_chunk=32,
        overwrite=True))
    ds = loader.make_dataset(data_dir, batch_size=8, seed=0)
    for step, batch in zip(range(2), ds):
        ids = batch["input_ids"][0].numpy()
        n = int(batch["input_mask"][0].numpy().sum())
        print("batch %d, example 0: %s" % (step, " ".join(tok.vocab[i] for i in ids[:n])))
        w = batch["masked_lm_weights"][0].numpy() > 0
        targets = [tok.vocab[i] for i in batch["masked_lm_ids"][0].numpy()[w]]
        print("  predict %d tokens: %s" % (w.sum(), " ".join(targets)))
    return 0


if __name__ == "__main__":
    app.run(main)
