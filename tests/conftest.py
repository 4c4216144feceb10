import os
import random

import pytest

from data_pipeline import sample_corpus, vocab

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
SHARED = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "corpora")


@pytest.fixture(scope="session")
def corpus_dir(tmp_path_factory):
    """English + Chinese sample text that ships with the project, in Google's text convention."""
    d = tmp_path_factory.mktemp("corpus")
    en = sample_corpus.english_documents()
    zh = sample_corpus.chinese_documents()
    sample_corpus.write_corpus(str(d / "en.txt"), en)
    sample_corpus.write_corpus(str(d / "zh.txt"), zh)
    return d


@pytest.fixture(scope="session")
def wordpiece_vocab(corpus_dir):
    texts = [line for name in ("en.txt", "zh.txt")
             for line in open(corpus_dir / name, encoding="utf-8") if line.strip()]
    path = str(corpus_dir / "vocab.txt")
    vocab.build_wordpiece(texts, path, vocab_size=2000, min_frequency=1, num_reserved=3)
    return path


@pytest.fixture
def rng():
    return random.Random(0)
