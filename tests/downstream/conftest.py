"""Models for the generation tests: small random exports written in Google's layout (so they load
through `build_transformer_model` like any release), and the pipeline's own export."""

import json
import os
import shutil

import keras
import pytest

from pretrain.google_checkpoint import write_checkpoint
from pretrain.modeling import BertConfig, build_model, google_variables
from tests.conftest import built_once
from tests.export.conftest import exported, trained_run  # noqa: F401  (fixtures: the pipeline's export)
from tests.pretrain.conftest import mlm_data  # noqa: F401

# Weights drawn wider than BERT's 0.02 so that next-token distributions are far from uniform:
# beams then differ from greedy paths, and filters exclude most of the vocabulary.
SMALL = dict(vocab_size=12, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
             intermediate_size=64, max_position_embeddings=40, initializer_range=0.5,
             hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)


def write_export(directory, config: dict, seed: int, vocab=None, drop=()):
    """A random-weight model saved as bert_config.json + bert_model.ckpt (+ vocab.txt); variables
    whose Google name starts with a prefix in `drop` are left out. Returns the directory."""
    keras.utils.set_random_seed(seed)
    model = build_model(BertConfig(**config), with_nsp=False)
    os.makedirs(directory, exist_ok=True)
    values = {name: v.numpy() for name, v in google_variables(model).items()
              if not any(name.startswith(p) for p in drop)}
    write_checkpoint(values, os.path.join(directory, "bert_model.ckpt"))
    with open(os.path.join(directory, "bert_config.json"), "w") as f:
        json.dump(config, f)
    if vocab:
        shutil.copy(vocab, os.path.join(directory, "vocab.txt"))
    return str(directory)


@pytest.fixture(scope="session")
def small_export(tmp_path_factory):
    """A 12-token model: small enough to enumerate every continuation."""
    return write_export(tmp_path_factory.mktemp("small"), SMALL, seed=3)


@pytest.fixture(scope="session")
def word_export(tmp_path_factory, wordpiece_vocab):
    """A random model over the project's 2000-token WordPiece vocabulary."""
    config = dict(SMALL, vocab_size=2000, max_position_embeddings=64, initializer_range=0.1)
    return write_export(tmp_path_factory.mktemp("word"), config, seed=4, vocab=wordpiece_vocab)


# The quickstart model's shape (configs/quickstart.py) over the tests' 2000-token vocabulary.
QUICKSTART = dict(vocab_size=2000, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                  intermediate_size=512, max_position_embeddings=64)


def copy_pairs(tokenizer, tokens=6, train=1500, held_out=20, seed=0):
    """(train, held-out) (source, target) pairs of a copy task on the project's own text: runs of
    words from its documentation that tokenize to `tokens` WordPiece tokens, target = source.
    Held-out runs are new, made of tokens that occur 3+ times in the training runs (a token the
    model never had to write cannot be copied: its output bias only ever went down)."""
    import collections
    import random
    import re

    from data_pipeline import sample_corpus

    words = [w.lower() for doc in sample_corpus.english_documents() for s in doc
             for w in re.findall(r"[a-zA-Z]+", s)]
    rng = random.Random(seed)

    def run():
        while True:
            n = rng.randint(2, tokens)
            start = rng.randrange(len(words) - n)
            text = " ".join(words[start:start + n])
            if len(tokenizer.encode(text)[0]) == tokens + 2:
                return text

    spans = [run() for _ in range(train)]
    counts = collections.Counter(i for s in spans for i in tokenizer.encode(s)[0])
    held = []
    while len(held) < held_out:
        text = run()
        if text not in spans and text not in held and all(counts[i] >= 3 for i in tokenizer.encode(text)[0]):
            held.append(text)
    return [(s, s) for s in spans], [(s, s) for s in held]


class StopWhenCopied(keras.callbacks.Callback):
    """Stops training once greedy decoding reproduces every held-out target exactly."""

    def __init__(self, data, held):
        super().__init__()
        self.data, self.held, self.decoder = data, held, None

    def on_epoch_end(self, epoch, logs=None):
        from downstream.generation import AutoRegressiveDecoder
        from downstream.seq2seq import generate_texts

        if self.decoder is None:
            self.decoder = AutoRegressiveDecoder(self.model, end_id=self.data.tokenizer.special_ids.sep,
                                                 max_len=self.data.max_target_len + 1)
        texts, _ = generate_texts(self.decoder, self.data, [s for s, _ in self.held])
        self.model.stop_training = texts == [t for _, t in self.held]


@pytest.fixture(scope="session")
def copy_model(tmp_path_factory, wordpiece_vocab):
    """(export dir, fine-tuning result, held-out pairs): a quickstart-sized UniLM fine-tuned by
    `downstream.seq2seq.finetune` (launch.finetune_seq2seq's code) to copy its source until greedy
    decoding reproduces the held-out targets (at most 16 epochs), saved as an export."""
    from downstream import load_finetune_tokenizer, seq2seq

    def build():
        base = write_export(tmp_path_factory.mktemp("quickstart"), QUICKSTART, seed=0, vocab=wordpiece_vocab)
        tokenizer = load_finetune_tokenizer(wordpiece_vocab)
        train, held = copy_pairs(tokenizer)
        output = str(tmp_path_factory.mktemp("copy") / "export")
        stop = StopWhenCopied(seq2seq.Seq2SeqData(tokenizer, 8, 8), held)
        result = seq2seq.finetune(base, train, held, output, max_source_len=8, max_target_len=8,
                                  epochs=16, batch_size=32, learning_rate=2e-3, callbacks=[stop],
                                  log=lambda text: None)
        return output, result, held

    return tuple(built_once(tmp_path_factory, "copy_model", build))   # used by two test files
