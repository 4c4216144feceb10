"""The data build's plan and state file (`build_state`): the layouts earlier builders wrote are read,
and written back byte for byte; an interrupted build resumes from them."""

import json
import os

from data_pipeline import builder, sources
from data_pipeline.build_state import BuildState, FinishedShard, Plan, PlannedShard
from data_pipeline.instances import InstanceConfig

# _build_state.json as the local builder wrote it after its first shard (layout 2), copied from a
# build of 596 documents: docs_per_chunk=4, num_shards=3, eval_fraction=0.2.
LAYOUT_2 = (
    '{"fingerprint": "0f769095df6fd4cd", "plan": {"num_chunks": 149, "splits": {"train": ['
    '{"file": "train-00000-of-00003.tfrecord", "first": 0, "last": 49}, '
    '{"file": "train-00001-of-00003.tfrecord", "first": 49, "last": 99}, '
    '{"file": "train-00002-of-00003.tfrecord", "first": 99, "last": 149}], '
    '"eval": [{"file": "eval-00000-of-00001.tfrecord", "first": 0, "last": 149}]}}, '
    '"done": {"train-00000-of-00003.tfrecord": {"examples": 508, "instances": 615, "tokens": 30149, '
    '"sentences_split": 128, "tokens_trimmed": 0, "documents": 196, "masked_tokens": 0, '
    '"eval_documents": 34, "unknown_tokens": 0, "tokens_read": 28919, "source.0.documents": 196, '
    '"source.0.examples_documents": 196, "source.0.tokens_before_weighting": 28919, '
    '"source.0.tokens_after_weighting": 28919}}, '
    '"shards": {"train-00000-of-00003.tfrecord": {"bytes": 108837, "crc32c": "i+5lWw=="}}}')

# The same build's state as the first builders wrote it (layout 1): no "shards", and a finished
# shard's statistics hold its examples only.
LAYOUT_1 = (
    '{"fingerprint": "0f769095df6fd4cd", "plan": {"num_chunks": 149, "splits": {"train": ['
    '{"file": "train-00000-of-00003.tfrecord", "first": 0, "last": 49}, '
    '{"file": "train-00001-of-00003.tfrecord", "first": 49, "last": 99}, '
    '{"file": "train-00002-of-00003.tfrecord", "first": 99, "last": 149}], '
    '"eval": [{"file": "eval-00000-of-00001.tfrecord", "first": 0, "last": 149}]}}, '
    '"done": {"train-00000-of-00003.tfrecord": {"examples": 508}}}')

FIRST = "train-00000-of-00003.tfrecord"


def test_layout_2_is_read_and_written_back_byte_for_byte():
    state = BuildState.from_json(LAYOUT_2)
    assert state.fingerprint == "0f769095df6fd4cd"
    assert state.plan.splits["train"][1] == PlannedShard("train-00001-of-00003.tfrecord", 49, 99)
    assert state.plan.splits["train"][1].holds(98) and not state.plan.splits["train"][1].holds(99)
    finished = state.finished[FIRST]
    assert (finished.bytes, finished.crc32c, finished.stats["documents"]) == (108837, "i+5lWw==", 196)
    assert state.to_json() == LAYOUT_2


def test_layout_1_is_read_and_written_back_as_the_builders_always_did():
    state = BuildState.from_json(LAYOUT_1)
    assert state.finished == {FIRST: FinishedShard({"examples": 508})}   # size: read from the file
    # The builders added an empty "shards" to a layout-1 state and wrote it on.
    assert state.to_json() == LAYOUT_1[:-1] + ', "shards": {}}'
    # A plan of null (the Beam engine's, before its pipeline plans) is kept as null.
    assert BuildState("ab12", None).to_json() == (
        '{"fingerprint": "ab12", "plan": null, "done": {}, "shards": {}}')


def test_train_stats_sum_the_train_shards_whatever_their_layout():
    state = BuildState.from_json(LAYOUT_1)
    state.finished["train-00001-of-00003.tfrecord"] = FinishedShard({"examples": 2, "documents": 3}, 9, "x")
    state.finished["train-00002-of-00003.tfrecord"] = FinishedShard({"examples": 1}, 9, "y")
    assert state.train_stats(state.plan) == {"examples": 511, "documents": 3}


def test_the_plan_is_the_one_the_builders_recorded():
    c = builder.BuildConfig(output_dir="out", vocab="vocab.txt", docs_per_chunk=4, num_shards=3,
                            eval_fraction=0.2, source=sources.SourceConfig(inputs=("a.txt",)))
    plan = Plan.for_build(c, total_docs=596)
    assert plan.to_dict() == json.loads(LAYOUT_2)["plan"]
    assert Plan.from_dict(plan.to_dict()) == plan
    assert plan.files()[-1] == "eval-00000-of-00001.tfrecord"


def test_a_build_resumes_from_a_layout_2_state(corpus_dir, wordpiece_vocab, tmp_path):
    """A state file of the literal's form, for this corpus's build: the finished shard is kept
    with the size and checksum the state records, the others are written again."""
    out = tmp_path / "o"
    cfg = builder.BuildConfig(output_dir=str(out), vocab=wordpiece_vocab, progress=False,
                              instance=InstanceConfig(seq_len=64), docs_per_chunk=4, num_shards=3,
                              source=sources.SourceConfig(inputs=(str(corpus_dir / "en.txt"),)))
    m = builder.build(cfg)
    first = m.splits["train"].shards[0]
    os.remove(out / "manifest.json")
    for f in m.splits["train"].files[1:]:
        os.remove(out / f)
    state = json.loads(LAYOUT_2)
    state["fingerprint"], state["plan"] = m.fingerprint, None
    state["done"] = {first.file: dict(state["done"][FIRST], examples=first.examples)}
    state["shards"] = {first.file: {"bytes": first.bytes, "crc32c": first.crc32c}}
    (out / "_build_state.json").write_text(json.dumps(state))
    before = os.path.getmtime(out / first.file)
    resumed = builder.build(cfg)
    assert resumed.splits == m.splits
    assert os.path.getmtime(out / first.file) == before
    assert not (out / "_build_state.json").exists()
