import os
import random

import pytest

from data_pipeline import sample_corpus, vocab

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
NUM_LOGICAL_CPUS = 4


def _logical_cpus():
    """Splits the CPU into logical devices before TensorFlow initialises, so tests can run
    MirroredStrategy with 1, 2 or 4 replicas on any machine."""
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(NUM_LOGICAL_CPUS)])


_logical_cpus()
_STRATEGIES = {}


def pytest_configure(config):
    config.addinivalue_line("markers", "smoke: the end-to-end subset that .ci/run also runs on the "
                            "TensorFlow of TPU VMs (requirements-tpu.txt)")


def built_once(tmp_path_factory, name, build):
    """`build()`'s value (JSON: paths, scores), computed once per test session. Under pytest-xdist
    every worker process runs the session fixtures it needs, so a costly one used by test files
    that land on different workers would be built by each: here the first worker to ask builds it
    (under a lock in the directory the workers share) and the others read its record."""
    import fcntl
    import json

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build()
    shared = tmp_path_factory.getbasetemp().parent          # this session's, above each worker's
    record = shared / ("%s.json" % name)
    with open(shared / ("%s.lock" % name), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not record.exists():
            record.write_text(json.dumps(build()), encoding="utf-8")
        return json.loads(record.read_text(encoding="utf-8"))


def mirrored(replicas):
    """One MirroredStrategy per replica count for the whole session: separate instances would
    reuse the same collective-op instance keys and abort each other's all-gathers."""
    import tensorflow as tf

    if replicas not in _STRATEGIES:
        _STRATEGIES[replicas] = tf.distribute.MirroredStrategy(["/cpu:%d" % i for i in range(replicas)])
    return _STRATEGIES[replicas]
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


@pytest.fixture(scope="session")
def seq2seq_jsonl(tmp_path_factory):
    d = tmp_path_factory.mktemp("seq2seq")
    return str(sample_corpus.write_jsonl(str(d / "pairs.jsonl"), sample_corpus.seq2seq_records()))


@pytest.fixture(scope="session")
def groups_jsonl(tmp_path_factory):
    d = tmp_path_factory.mktemp("groups")
    return str(sample_corpus.write_jsonl(str(d / "groups.jsonl"), sample_corpus.synonym_groups()))
