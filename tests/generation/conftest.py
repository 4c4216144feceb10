"""Models for the generation tests: small random exports written in Google's layout (so they load
through `build_transformer_model` like any release), and the pipeline's own export."""

import json
import os
import shutil

import keras
import pytest

from pretrain.google_checkpoint import write_checkpoint
from pretrain.modeling import BertConfig, build_model, google_variables
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
