"""UniLM, SimBERT and causal-LM samples: layout, truncation, pairs across replicas, bad records."""

import json
import os

import numpy as np
import pytest

from data_pipeline import builder, loader, sample_corpus, sources, tasks
from data_pipeline.instances import InstanceConfig
from data_pipeline.manifest import ManifestError
from data_pipeline.tokenizer import load_tokenizer
from tests.conftest import mirrored


def _build(vocab, out, inputs, task, seq_len=64, **kw):
    kw.setdefault("docs_per_chunk", 4)
    kw.setdefault("num_shards", 3)
    return builder.build(builder.BuildConfig(
        output_dir=str(out), vocab=vocab, progress=False,
        source=sources.SourceConfig(inputs=tuple(inputs)), task=task,
        instance=InstanceConfig(seq_len=seq_len), **kw))


def _rows(out, batch_size=8, **kw):
    ds = loader.make_dataset(str(out), batch_size=batch_size, training=False, **kw)
    batches = [{k: v.numpy() for k, v in b.items()} for b in ds]
    return {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}


def _parts(ids, special):
    """Splits [CLS] a [SEP] b [SEP] pad... into (a, b)."""
    assert ids[0] == special.cls
    seps = np.flatnonzero(ids == special.sep)
    assert len(seps) == 2, ids
    return list(ids[1:seps[0]]), list(ids[seps[0] + 1:seps[1]])


# ------------------------------------------------------------------------------------- UniLM

def test_unilm_layout_segments_and_target_mask_on_real_text(wordpiece_vocab, seq2seq_jsonl, tmp_path):
    m = _build(wordpiece_vocab, tmp_path / "u", [seq2seq_jsonl],
               tasks.TaskConfig(task="unilm", max_target_len=40), seq_len=96)
    tok = load_tokenizer(wordpiece_vocab)
    sp = tok.special_ids
    rows = _rows(tmp_path / "u")
    records = sample_corpus.seq2seq_records()
    targets = {tuple(tok.encode(r["target"])[:40]) for r in records}
    assert len(rows["input_ids"]) == m.splits["train"].examples == len(records)
    for ids, seg, mask, tmask in zip(rows["input_ids"], rows["segment_ids"], rows["input_mask"],
                                     rows["target_mask"]):
        n = int(mask.sum())
        assert (ids[n:] == sp.pad).all() and (ids[:n] != sp.pad).all()
        source, target = _parts(ids[:n], sp)
        assert tuple(target) in targets                         # a target keeps its beginning
        assert source                                           # the source is cut first, never empty
        assert (seg[:len(source) + 2] == 0).all() and (seg[len(source) + 2:n] == 1).all()
        assert (seg[n:] == 0).all()
        np.testing.assert_array_equal(tmask, (seg == 1) & (mask == 1))
    assert m.stats["sources_truncated"] > 0                  # long documents, seq 96
    assert m.stats["targets_truncated"] == sum(len(tok.encode(r["target"])) > 40 for r in records)


def test_unilm_truncation_policy_counts_cuts(wordpiece_vocab, tmp_path):
    tok = load_tokenizer(wordpiece_vocab)
    long_target = " ".join(["pretraining data pipeline"] * 10)
    path = sample_corpus.write_jsonl(str(tmp_path / "t.jsonl"), [
        {"source": "a short source", "target": long_target},
        {"source": " ".join(["masked language model"] * 20), "target": "short target"}])
    task = tasks.TaskConfig(task="unilm", max_target_len=8, max_source_len=10)
    m = _build(wordpiece_vocab, tmp_path / "o", [path], task, seq_len=32)
    rows = _rows(tmp_path / "o")
    n_target = len(tok.encode(long_target))
    st = m.stats
    assert st["targets_truncated"] == 1 and st["target_tokens_cut"] == n_target - 8
    assert st["sources_truncated"] == 1
    assert st["source_tokens_cut"] == len(tok.encode(" ".join(["masked language model"] * 20))) - 10
    for ids, mask in zip(rows["input_ids"], rows["input_mask"]):
        source, target = _parts(ids[:mask.sum()], tok.special_ids)
        assert len(source) <= 10 and len(target) <= 8
    by_target = {tuple(_parts(i[:k.sum()], tok.special_ids)[1]) for i, k in zip(rows["input_ids"],
                                                                                  rows["input_mask"])}
    assert tuple(tok.encode(long_target)[:8]) in by_target    # the target keeps its beginning


def test_unilm_from_text_splits_inside_the_real_length(corpus_dir, wordpiece_vocab, tmp_path):
    m = _build(wordpiece_vocab, tmp_path / "t", [str(corpus_dir / "en.txt"), str(corpus_dir / "zh.txt")],
               tasks.TaskConfig(task="unilm", unilm_from="text"), seq_len=48)
    sp = load_tokenizer(wordpiece_vocab).special_ids
    rows = _rows(tmp_path / "t")
    assert m.splits["train"].examples == len(rows["input_ids"]) > 50
    points = []
    for ids, mask in zip(rows["input_ids"], rows["input_mask"]):
        n = int(mask.sum())
        source, target = _parts(ids[:n], sp)
        assert source and target                     # the split point is inside the real text
        assert sp.pad not in source + target
        points.append(len(source) / (len(source) + len(target)))
    assert 0.3 < np.mean(points) < 0.7               # drawn across the segment, not at one end


# ------------------------------------------------------------------------------------ causal LM

def test_lm_windows_are_the_document_stream(corpus_dir, wordpiece_vocab, tmp_path):
    _build(wordpiece_vocab, tmp_path / "lm", [str(corpus_dir / "zh.txt")], tasks.TaskConfig(task="lm"),
           seq_len=32, num_shards=1, docs_per_chunk=100)
    tok = load_tokenizer(wordpiece_vocab)
    sp = tok.special_ids
    rows = _rows(tmp_path / "lm", batch_size=100)
    full = rows["input_mask"].all(axis=1)
    assert full[:-1].all()                            # only the chunk's last window is padded
    docs = sample_corpus.chinese_documents()
    stream = sorted(tuple(tok.encode(s)) for d in docs for s in d)
    got = rows["input_ids"][rows["input_mask"] == 1]
    assert (got == sp.sep).sum() == len(docs)          # one separator per document
    sentences = [tuple(x) for x in np.split(got, np.flatnonzero(got == sp.sep) + 1) if len(x)]
    assert len(sentences) == len(docs)
    assert sorted(sum((list(s[:-1]) for s in sentences), [])) == sorted(sum((list(s) for s in stream), []))
    np.testing.assert_array_equal(rows["target_mask"][:, 0], 0)
    np.testing.assert_array_equal(rows["target_mask"][:, 1:], rows["input_mask"][:, 1:])


# -------------------------------------------------------------------------------------- SimBERT

def _groups_build(vocab, groups_jsonl, out, **kw):
    return _build(vocab, out, [groups_jsonl], tasks.TaskConfig(task="simbert"), seq_len=48, **kw)


def _assert_partnered(ids, sp, members_of=None):
    assert len(ids) % 2 == 0
    for k in range(0, len(ids), 2):
        a1, b1 = _parts(ids[k][ids[k] != sp.pad], sp)
        a2, b2 = _parts(ids[k + 1][ids[k + 1] != sp.pad], sp)
        # Both orders of one pair (each side possibly cut differently by the joint truncation).
        assert a1[:min(len(a1), len(b2))] == b2[:min(len(a1), len(b2))]
        assert b1[:min(len(b1), len(a2))] == a2[:min(len(b1), len(a2))]
        assert a1 != b1


def test_simbert_pairs_per_group_and_new_pairs_each_epoch(wordpiece_vocab, groups_jsonl, tmp_path):
    m = _groups_build(wordpiece_vocab, groups_jsonl, tmp_path / "g")
    sp = load_tokenizer(wordpiece_vocab).special_ids
    groups = m.splits["train"].examples
    epochs = [_rows(tmp_path / "g", batch_size=8, epoch=e) for e in range(4)]
    for rows in epochs:
        assert len(rows["input_ids"]) == 2 * groups
        _assert_partnered(rows["input_ids"], sp)
        np.testing.assert_array_equal(rows["target_mask"],
                                      (rows["segment_ids"] == 1) & (rows["input_mask"] == 1))
    again = _rows(tmp_path / "g", batch_size=8, epoch=2)
    np.testing.assert_array_equal(again["input_ids"], epochs[2]["input_ids"])   # deterministic
    changed = [(epochs[0]["input_ids"] != e["input_ids"]).any(axis=1).mean() for e in epochs[1:]]
    assert min(changed) > 0.3                      # most groups (>= 3 members) draw another pair
    assert m.stats["groups_too_small"] == 0


@pytest.mark.parametrize("replicas", [1, 2, 4])
@pytest.mark.parametrize("how", ["distribute_dataset", "from_function"])
def test_simbert_partners_stay_together_on_every_replica(wordpiece_vocab, groups_jsonl, tmp_path,
                                                         replicas, how):
    out = tmp_path / "g"
    _groups_build(wordpiece_vocab, groups_jsonl, out)
    sp = load_tokenizer(wordpiece_vocab).special_ids
    strategy = mirrored(replicas)
    global_batch = 4 * replicas
    loader.check_pair_batching(global_batch, replicas)
    if how == "distribute_dataset":
        dist = strategy.experimental_distribute_dataset(
            loader.make_dataset(str(out), batch_size=global_batch, seed=3))
    else:
        def fn(ctx):
            return loader.make_dataset(str(out), batch_size=ctx.get_per_replica_batch_size(global_batch),
                                       seed=3, input_context=ctx)
        dist = strategy.distribute_datasets_from_function(fn)
    seen = 0
    for step, batch in zip(range(6), dist):
        for local in strategy.experimental_local_results(batch["input_ids"]):
            _assert_partnered(local.numpy(), sp)
            seen += 1
    assert seen == 6 * replicas


def test_pair_batching_that_splits_partners_is_refused(wordpiece_vocab, groups_jsonl, tmp_path):
    with pytest.raises(ManifestError, match="partner rows"):
        loader.check_pair_batching(6, num_replicas=2)        # 3 rows per replica
    with pytest.raises(ManifestError, match="partner rows"):
        loader.check_pair_batching(8, num_replicas=2, micro_batches=4)
    loader.check_pair_batching(8, num_replicas=2, micro_batches=2)
    _groups_build(wordpiece_vocab, groups_jsonl, tmp_path / "g")
    with pytest.raises(ManifestError, match="partner rows"):
        loader.make_dataset(str(tmp_path / "g"), batch_size=7)


# ------------------------------------------------------------------------- determinism, bad input

@pytest.mark.parametrize("task,fixture", [(tasks.TaskConfig(task="unilm", max_target_len=32), "seq2seq_jsonl"),
                                          (tasks.TaskConfig(task="simbert"), "groups_jsonl"),
                                          (tasks.TaskConfig(task="lm"), None),
                                          (tasks.TaskConfig(task="unilm", unilm_from="text"), None)])
def test_same_bytes_whatever_the_worker_count(request, corpus_dir, wordpiece_vocab, tmp_path, task, fixture):
    inputs = ([request.getfixturevalue(fixture)] if fixture
              else [str(corpus_dir / "en.txt"), str(corpus_dir / "zh.txt")])
    m1 = _build(wordpiece_vocab, tmp_path / "a", inputs, task, eval_fraction=0.2)
    m2 = _build(wordpiece_vocab, tmp_path / "b", inputs, task, eval_fraction=0.2, num_workers=2)
    for split in ("train", "eval"):
        assert m1.splits[split].examples > 0
        assert m2.splits[split].files == m1.splits[split].files
        for f in m1.splits[split].files:
            assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def _bad_lines():
    return [json.dumps({"source": "a good source text", "target": "a good target"}),
            "this line is not JSON",
            json.dumps({"source": "no target field here"}),
            json.dumps({"source": "an empty target", "target": "   "}),
            json.dumps({"source": "fine again", "target": "also fine"}),
            "[1, 2, 3]"]


def test_bad_unilm_records_stop_the_build_by_default(wordpiece_vocab, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(_bad_lines()) + "\n")
    out = tmp_path / "o"
    with pytest.raises(builder.BuildError) as e:
        _build(wordpiece_vocab, out, [str(path)], tasks.TaskConfig(task="unilm"))
    message = str(e.value)
    assert "4 bad records" in message and "--on_bad_record=skip" in message
    for line, reason in ((2, "not a JSON object"), (3, "no 'target' field"), (4, "empty target")):
        assert "bad.jsonl:%d %s" % (line, reason) in message
    assert not [n for n in os.listdir(out) if "tfrecord" in n] if out.exists() else True


def test_bad_unilm_records_are_skipped_and_counted_on_request(wordpiece_vocab, tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(_bad_lines()) + "\n")
    m = _build(wordpiece_vocab, tmp_path / "o", [str(path)],
               tasks.TaskConfig(task="unilm", on_bad_record="skip"))
    assert m.splits["train"].examples == 2
    assert m.stats["bad_records_skipped"] == 4


def test_target_longer_than_the_budget_is_a_bad_record(wordpiece_vocab, tmp_path):
    path = sample_corpus.write_jsonl(str(tmp_path / "t.jsonl"), [
        {"source": "fine source", "target": "fine target"},
        {"source": "short", "target": " ".join(["pretraining"] * 40)}])
    out = tmp_path / "o"
    with pytest.raises(builder.BuildError, match=r"t\.jsonl:2 target of \d+ tokens leaves no room"):
        _build(wordpiece_vocab, out, [path], tasks.TaskConfig(task="unilm"), seq_len=16)
    assert not [n for n in os.listdir(out) if "tfrecord" in n or n.startswith("_")]
    m = _build(wordpiece_vocab, tmp_path / "skip", [path],
               tasks.TaskConfig(task="unilm", on_bad_record="skip"), seq_len=16)
    assert m.splits["train"].examples == 1 and m.stats["bad_records_skipped"] == 1


def test_simbert_groups_of_duplicates_and_singletons(wordpiece_vocab, tmp_path):
    path = sample_corpus.write_jsonl(str(tmp_path / "g.jsonl"), [
        {"text": "how do I train BERT", "synonyms": ["how to pretrain BERT", "training BERT"]},
        {"text": "alone", "synonyms": []},
        {"text": "same", "synonyms": ["same", "same"]},
        {"synonyms": ["no text field"]}])
    with pytest.raises(builder.BuildError) as e:
        _build(wordpiece_vocab, tmp_path / "o", [path], tasks.TaskConfig(task="simbert"))
    assert "g.jsonl:3 group of 3 duplicates only" in str(e.value)
    assert "g.jsonl:4 no 'text' field" in str(e.value)
    m = _build(wordpiece_vocab, tmp_path / "s", [path],
               tasks.TaskConfig(task="simbert", on_bad_record="skip"))
    assert m.splits["train"].examples == 1
    assert m.stats["groups_too_small"] == 1 and m.stats["bad_records_skipped"] == 2


def test_structured_tasks_refuse_plain_text_and_static_mode(corpus_dir, wordpiece_vocab, tmp_path):
    with pytest.raises(builder.BuildError, match="reads JSON lines"):
        _build(wordpiece_vocab, tmp_path / "o", [str(corpus_dir / "en.txt")],
               tasks.TaskConfig(task="simbert"))
    with pytest.raises(builder.BuildError, match="--mode=static"):
        _build(wordpiece_vocab, tmp_path / "o", [str(corpus_dir / "en.txt")],
               tasks.TaskConfig(task="lm"), mode="static")
    with pytest.raises(builder.BuildError, match="max_target_len"):
        _build(wordpiece_vocab, tmp_path / "o", [str(corpus_dir / "en.txt")],
               tasks.TaskConfig(task="unilm", unilm_from="text", max_target_len=100), seq_len=32)
