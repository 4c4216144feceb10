import dataclasses
import gzip
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import builder, loader, sample_corpus, schema, sources
from data_pipeline.instances import InstanceConfig
from data_pipeline.manifest import Manifest, ManifestError


def _config(corpus_dir, vocab, out, inputs=("en.txt", "zh.txt"), **kw):
    source_kw = kw.pop("source_kw", {})
    inputs = tuple(i if ":" in i or os.path.isabs(i) else str(corpus_dir / i) for i in inputs)
    kw.setdefault("instance", InstanceConfig(seq_len=64))
    kw.setdefault("docs_per_chunk", 4)
    kw.setdefault("num_shards", 3)
    kw.setdefault("progress", False)
    return builder.BuildConfig(output_dir=str(out), vocab=vocab,
                               source=sources.SourceConfig(inputs=inputs, **source_kw), **kw)


def _bytes(out, manifest, split="train"):
    return [open(os.path.join(out, f), "rb").read() for f in manifest.splits[split].files]


@pytest.mark.parametrize("extra", [dict(mode="dynamic"), dict(mode="static", dupe_factor=2,
                                   instance=InstanceConfig(seq_len=64, layout="pairs"))])
def test_same_bytes_whatever_the_worker_count(corpus_dir, wordpiece_vocab, tmp_path, extra):
    m1 = builder.build(_config(corpus_dir, wordpiece_vocab, tmp_path / "w1", eval_fraction=0.2, **extra))
    m2 = builder.build(_config(corpus_dir, wordpiece_vocab, tmp_path / "w2", eval_fraction=0.2,
                               num_workers=2, **extra))
    assert _bytes(tmp_path / "w1", m1) == _bytes(tmp_path / "w2", m2)
    assert _bytes(tmp_path / "w1", m1, "eval") == _bytes(tmp_path / "w2", m2, "eval")
    assert m1.splits["train"].examples > 0 and m1.splits["eval"].examples > 0


def test_resume_rewrites_only_missing_shards_and_rerun_is_noop(corpus_dir, wordpiece_vocab, tmp_path):
    cfg = _config(corpus_dir, wordpiece_vocab, tmp_path / "o")
    m = builder.build(cfg)
    reference = _bytes(tmp_path / "o", m)
    # Simulate a crash after the first shard: state file back, later shards gone, a partial temp.
    done = {m.splits["train"].files[0]: {"examples": 1}}
    os.remove(tmp_path / "o" / "manifest.json")
    for f in m.splits["train"].files[1:]:
        os.remove(tmp_path / "o" / f)
    (tmp_path / "o" / (m.splits["train"].files[1] + ".tmp")).write_bytes(b"partial")
    first = tmp_path / "o" / m.splits["train"].files[0]
    before = os.path.getmtime(first)
    state = {"fingerprint": m.fingerprint, "plan": None, "done": done}
    (tmp_path / "o" / "_build_state.json").write_text(json.dumps(state))
    m2 = builder.build(cfg)
    assert _bytes(tmp_path / "o", m2)[1:] == reference[1:]
    assert os.path.getmtime(first) == before          # the finished shard was not rewritten
    assert not [n for n in os.listdir(tmp_path / "o") if ".tmp" in n]
    assert builder.build(cfg).fingerprint == m.fingerprint  # complete: nothing to do


def test_output_dir_of_a_different_build_is_refused(corpus_dir, wordpiece_vocab, tmp_path):
    builder.build(_config(corpus_dir, wordpiece_vocab, tmp_path / "o"))
    with pytest.raises(builder.BuildError, match="already holds shards of a different build"):
        builder.build(_config(corpus_dir, wordpiece_vocab, tmp_path / "o", seed=7))
    builder.build(_config(corpus_dir, wordpiece_vocab, tmp_path / "o", seed=7, overwrite=True))


def test_static_records_parse_with_google_feature_spec(corpus_dir, wordpiece_vocab, tmp_path):
    m = builder.build(_config(corpus_dir, wordpiece_vocab, tmp_path / "o", mode="static",
                              compress=True, instance=InstanceConfig(seq_len=64, layout="pairs")))
    google_spec = {  # written out as google-research/bert's run_pretraining.py declares it
        "input_ids": tf.io.FixedLenFeature([64], tf.int64),
        "input_mask": tf.io.FixedLenFeature([64], tf.int64),
        "segment_ids": tf.io.FixedLenFeature([64], tf.int64),
        "masked_lm_positions": tf.io.FixedLenFeature([20], tf.int64),
        "masked_lm_ids": tf.io.FixedLenFeature([20], tf.int64),
        "masked_lm_weights": tf.io.FixedLenFeature([20], tf.float32),
        "next_sentence_labels": tf.io.FixedLenFeature([1], tf.int64)}
    files = [str(tmp_path / "o" / f) for f in m.splits["train"].files]
    n, labels = 0, []
    for r in tf.data.TFRecordDataset(files, compression_type="GZIP"):
        ex = {k: v.numpy() for k, v in tf.io.parse_single_example(r, google_spec).items()}
        real = ex["input_mask"].sum()
        assert (ex["input_mask"][:real] == 1).all() and (ex["input_ids"][real:] == 0).all()
        w = ex["masked_lm_weights"] > 0
        assert w.sum() == min(20, max(1, round(real * 0.15))) or w.sum() < round(real * 0.15)
        assert (ex["masked_lm_positions"][w] < real).all()
        labels.append(int(ex["next_sentence_labels"][0]))
        n += 1
    assert n == m.splits["train"].examples and 0 < np.mean(labels) < 1


def test_inputs_jsonl_gz_glob_and_invalid_utf8(corpus_dir, wordpiece_vocab, tmp_path):
    lines = [json.dumps({"content": s}) for s in open(corpus_dir / "zh.txt", encoding="utf-8") if s.strip()]
    with gzip.open(tmp_path / "a.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write("\n".join(lines[:6]) + "\nnot json\n")
    (tmp_path / "b.txt").write_bytes(b"good line one here\nbad \xff\xfe byte line\n\nsecond doc\n" * 30)
    m = builder.build(_config(corpus_dir, wordpiece_vocab, tmp_path / "o",
                              inputs=(str(tmp_path / "*.gz"), str(tmp_path / "b.txt")),
                              max_bad_line_fraction=0.5, source_kw=dict(text_field="content")))
    assert m.stats["bad_json_lines"] == 1 and m.stats["invalid_utf8_lines"] == 30
    assert any("a.jsonl.gz:7" in p for p in m.stats["first_problems"])
    with pytest.raises(builder.BuildError, match="bad lines"):
        builder.build(_config(corpus_dir, wordpiece_vocab, tmp_path / "o2",
                              inputs=(str(tmp_path / "b.txt"),)))


@pytest.mark.parametrize("case, match", [
    ("empty", "holds no text"), ("missing", "matches no file"), ("seq_len", "seq_len=2 is too small"),
    ("vocab", "lacks the special token"), ("tfds", "cannot be opened"),
    ("workers", "--num_workers must be >= 1")])
def test_bad_inputs_fail_clearly_and_write_nothing(corpus_dir, wordpiece_vocab, tmp_path, case, match):
    (tmp_path / "empty.txt").write_text("  \n\n \t\n")
    (tmp_path / "bad_vocab.txt").write_text("[PAD]\nhello\n")
    kw = {"empty": dict(inputs=(str(tmp_path / "empty.txt"),)),
          "missing": dict(inputs=(str(tmp_path / "nope*.txt"),)),
          "seq_len": dict(instance=InstanceConfig(seq_len=2)),
          "vocab": dict(vocab=str(tmp_path / "bad_vocab.txt")),
          "tfds": dict(inputs=("tfds:no_such_dataset_xyz",)),
          "workers": dict(num_workers=0)}[case]
    vocab = kw.pop("vocab", wordpiece_vocab)
    with pytest.raises(builder.BuildError, match=match):
        builder.build(_config(corpus_dir, vocab, tmp_path / "out", **kw))
    assert not (tmp_path / "out").exists() or not [
        n for n in os.listdir(tmp_path / "out") if ".tfrecord" in n]


def test_tfds_input(wordpiece_vocab, corpus_dir, tmp_path):
    import tensorflow_datasets as tfds
    with tfds.testing.mock_data(num_examples=12, as_dataset_fn=None):
        m = builder.build(_config(corpus_dir, wordpiece_vocab, tmp_path / "o", inputs=("tfds:imdb_reviews",)))
    assert m.splits["train"].examples > 0 and m.stats["documents"] == 12


ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cli(module, *args):
    return subprocess.run([sys.executable, "-m", module] + list(args), cwd=ROOT, capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=ROOT), timeout=300)


@pytest.mark.parametrize("weight", ["-1", "abc", "nan", "inf", "0"])
def test_a_bad_mixing_weight_is_one_line_naming_the_input(corpus_dir, wordpiece_vocab, tmp_path, weight):
    """Read as part of the path before, it ended in "matches no file"."""
    entry = "wiki:%s:%s" % (corpus_dir / "en.txt", weight)
    message = "--input %r: weight %r is not a number > 0: weights must be finite and > 0" % (entry, weight)
    with pytest.raises(builder.BuildError, match=re.escape(message)):
        builder.build(_config(corpus_dir, wordpiece_vocab, tmp_path / "o", inputs=(entry,)))
    if weight == "nan":   # the launcher: exit 2, that one line
        done = _cli("launch.build_data", "--input=%s" % entry, "--vocab=%s" % wordpiece_vocab,
                    "--output_dir=%s" % (tmp_path / "cli"))
        assert done.returncode == 2 and done.stderr.splitlines()[0] == "build_data: error: " + message \
            + " (NAME:PATTERN:WEIGHT, e.g. wiki:wiki/*.txt:1.5; leave a source out rather than weigh it 0).", done.stderr


def test_dedup_is_counted_on_the_console_and_a_mostly_duplicate_or_too_small_build_warns(
        corpus_dir, wordpiece_vocab, tmp_path, capsys):
    (tmp_path / "same.txt").write_text("The same short document, again.\n\n" * 300)
    m = builder.build(_config(corpus_dir, wordpiece_vocab, tmp_path / "o", inputs=(str(tmp_path / "same.txt"),),
                              num_shards=2, progress=True, source_kw=dict(dedup="documents")))
    err = capsys.readouterr().err
    assert "  duplicates dropped (--dedup=documents): 299 of 300\n" in err, err
    assert ("build_data: warning: 299 of the 300 documents read (99%) were duplicates and were "
            "dropped (--dedup=documents): check the inputs" in err), err
    assert m.splits["train"].examples == 1
    assert ("build_data: warning: train: 1 example(s) in 1 shard(s), 0 of them empty, where "
            "--num_shards=2 were asked: the input is too small for that many shards.") in err, err
    # An ordinary build says nothing of the kind, and its shards are the same bytes with or
    # without dedup when nothing is duplicated.
    plain = builder.build(_config(corpus_dir, wordpiece_vocab, tmp_path / "p", inputs=("en.txt",),
                                  progress=True))
    deduped = builder.build(_config(corpus_dir, wordpiece_vocab, tmp_path / "d", inputs=("en.txt",),
                                    progress=True, source_kw=dict(dedup="documents")))
    err = capsys.readouterr().err
    assert "warning" not in err and "duplicates dropped (--dedup=documents): 0 of " in err, err
    assert _bytes(tmp_path / "p", plain) == _bytes(tmp_path / "d", deduped)


def test_a_file_named_with_brackets_and_a_comma_is_an_input(corpus_dir, tmp_path):
    """`a[1],b.txt` as a glob matches `a1,b.txt`, and --input's comma split cuts it in two: an
    existing file is taken as named first. Quoting the entry (CSV) keeps a comma too."""
    odd = tmp_path / "a[1],b.txt"
    odd.write_text((corpus_dir / "en.txt").read_text())
    (tmp_path / "a1,b.txt").write_text("a decoy the glob would match\n")
    assert sources.resolve_inputs(["%s/a[1]" % tmp_path, "b.txt"]) == [str(odd)]
    assert sources.resolve_inputs([str(odd)]) == [str(odd)]
    assert sources.resolve_inputs(["%s/a[[]1]*" % tmp_path]) == [str(odd)]   # the glob escape
    for flag in ("--input=%s" % odd, '--input="%s"' % odd):
        out = tmp_path / ("v%d" % len(flag)) / "vocab.txt"
        done = _cli("launch.build_vocab", flag, "--output=%s" % out, "--vocab_size=300",
                    "--min_frequency=1")
        assert done.returncode == 0, done.stderr
        assert "quick" in out.read_text() or len(out.read_text().splitlines()) == 300


def _records(out, manifest, keys):
    files = [str(out / f) for f in manifest.splits["train"].files]
    spec = schema.parse_spec(manifest.features)
    rows = [tf.io.parse_single_example(r, spec) for r in tf.data.TFRecordDataset(files)]
    return {k: np.stack([r[k].numpy() for r in rows]) for k in keys}


def test_chinese_whole_word_masking_with_jieba(corpus_dir, wordpiece_vocab, tmp_path):
    m = builder.build(_config(corpus_dir, wordpiece_vocab, tmp_path / "o", inputs=("zh.txt",),
                              segmenter="jieba"))
    rows = _records(tmp_path / "o", m, ["input_ids", "word_starts"])
    real = rows["input_ids"] > 4
    assert 0.3 < rows["word_starts"][real].mean() < 0.9  # words of several characters exist


@pytest.mark.parametrize("mode", ["dynamic", "static"])
@pytest.mark.parametrize("text", ["sample", "reviews"])
def test_rjieba_builds_the_bytes_jieba_builds(corpus_dir, wordpiece_vocab, tmp_path, request, mode, text):
    # The shipped sample, and 2,000 real shopping reviews: the same word starts, so the same shards.
    inputs = ("zh.txt",)
    if text == "reviews":
        reviews = tmp_path / "reviews.jsonl"
        reviews.write_text("\n".join(json.dumps({"text": t}, ensure_ascii=False)
                                     for t in request.getfixturevalue("zh_reviews")[:2000]),
                           encoding="utf-8")
        inputs = (str(reviews),)
    shards = {}
    for name in ("jieba", "rjieba"):
        m = builder.build(_config(corpus_dir, wordpiece_vocab, tmp_path / name, segmenter=name,
                                  inputs=inputs, mode=mode, docs_per_chunk=64))
        shards[name] = _bytes(tmp_path / name, m)
    assert shards["jieba"] == shards["rjieba"] and any(shards["jieba"])


def test_static_copies_are_masked_from_one_segmentation_and_one_packing(
        corpus_dir, wordpiece_vocab, tmp_path, monkeypatch):
    # dupe_factor copies cost masking and encoding only: each chunk is segmented once and, packed,
    # laid out once; the manifest still counts every copy's instances and tokens.
    from data_pipeline import chunks, segmenter
    calls = {"words": 0, "instances": 0}
    words, make = segmenter.Segmenter.words, chunks.make_instances

    def count(key, f):
        def counted(*args, **kwargs):
            calls[key] += 1
            return f(*args, **kwargs)
        return counted
    monkeypatch.setattr(segmenter.Segmenter, "words", count("words", words))
    monkeypatch.setattr(chunks, "make_instances", count("instances", make))
    one = builder.build(_config(corpus_dir, wordpiece_vocab, tmp_path / "one", inputs=("zh.txt",),
                                segmenter="rjieba", mode="static", dupe_factor=1, docs_per_chunk=2))
    seen = dict(calls)
    five = builder.build(_config(corpus_dir, wordpiece_vocab, tmp_path / "five", inputs=("zh.txt",),
                                 segmenter="rjieba", mode="static", dupe_factor=5, docs_per_chunk=2))
    assert calls == {k: 2 * v for k, v in seen.items()} and seen["words"] == 3  # 3 chunks
    assert five.stats["instances_made"] == 5 * one.stats["instances_made"]
    assert five.stats["tokens"] == 5 * one.stats["tokens"]
    assert five.splits["train"].examples == 5 * one.splits["train"].examples
    rows = _records(tmp_path / "five", five, ["input_mask", "masked_lm_positions"])
    masks = {m.tobytes() for m in rows["input_mask"]}
    assert len(masks) <= one.splits["train"].examples  # five copies of the same instances
    assert len({p.tobytes() for p in rows["masked_lm_positions"]}) > len(masks)  # masked anew


def test_dynamic_masks_of_chinese_take_whole_segmenter_words(corpus_dir, wordpiece_vocab, tmp_path):
    # The loader masks from the word starts the builder stored: a word the segmenter found is
    # masked entirely or not at all, in every epoch.
    m = builder.build(_config(corpus_dir, wordpiece_vocab, tmp_path / "o", inputs=("zh.txt",),
                              segmenter="rjieba", num_shards=1, instance=InstanceConfig(seq_len=128)))
    rows = _records(tmp_path / "o", m, ["input_ids", "word_starts"])
    n = len(rows["input_ids"])
    maskable = rows["input_ids"] > 4
    word = np.cumsum(rows["word_starts"].astype(bool) & maskable, axis=1)
    long_words_masked = 0
    for epoch in range(3):
        batch = next(iter(loader.make_dataset(str(tmp_path / "o"), batch_size=n, training=False,
                                              epoch=epoch)))
        masked = np.zeros_like(maskable)
        weights = batch["masked_lm_weights"].numpy() > 0
        for i, positions in enumerate(batch["masked_lm_positions"].numpy()):
            masked[i, positions[weights[i]]] = True
            chosen = set(word[i, masked[i]].tolist())
            in_chosen = maskable[i] & np.isin(word[i], list(chosen))
            np.testing.assert_array_equal(masked[i], in_chosen)  # whole words, nothing else
            long_words_masked += sum((word[i][maskable[i]] == w).sum() > 1 for w in chosen)
    assert long_words_masked > 20


def test_loader_batches_and_fresh_masks_per_epoch(corpus_dir, wordpiece_vocab, tmp_path):
    m = builder.build(_config(corpus_dir, wordpiece_vocab, tmp_path / "o"))
    Manifest.load(str(tmp_path / "o")).check(vocab_size=m.vocab.vocab_size, seq_len=64, task="mlm")
    with pytest.raises(ManifestError, match="seq_len=64 but the run uses seq_len=128"):
        m.check(seq_len=128)
    with pytest.raises(ManifestError, match="vocab_size=99"):
        dataclasses.replace(m, data_dir="d").check(vocab_size=99)
    n = m.splits["train"].examples
    once = lambda epoch: next(iter(loader.make_dataset(str(tmp_path / "o"), batch_size=n, training=False,
                                                      epoch=epoch)))
    a, b, a2 = once(0), once(1), once(0)
    assert a["input_ids"].shape == (n, 64) and a["masked_lm_positions"].shape == (n, 20)
    np.testing.assert_array_equal(a["input_ids"].numpy(), a2["input_ids"].numpy())
    assert (a["masked_lm_positions"].numpy() != b["masked_lm_positions"].numpy()).any()
    np.testing.assert_array_equal(a["input_mask"].numpy(), b["input_mask"].numpy())
    train = loader.make_dataset(str(tmp_path / "o"), batch_size=8, seed=1)
    batch = next(iter(train))
    assert batch["input_ids"].shape == (8, 64) and batch["masked_lm_weights"].dtype == tf.float32


def test_loader_reads_google_layout_records(corpus_dir, wordpiece_vocab, tmp_path):
    m = builder.build(_config(corpus_dir, wordpiece_vocab, tmp_path / "o", mode="static", dupe_factor=1))
    files = [str(tmp_path / "o" / f) for f in m.splits["train"].files]
    manifest = Manifest.google(files, seq_len=64, max_predictions=20)
    batch = next(iter(loader.make_dataset(manifest, batch_size=4, training=False)))
    assert batch["masked_lm_weights"].shape == (4, 20) and batch["input_mask"].shape == (4, 64)
