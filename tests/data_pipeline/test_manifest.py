"""manifest.json through `Manifest`: what the builder records, what older builders wrote (still
read), what a newer one writes (refused), and the shard check against it."""

import dataclasses
import json
import os
import shutil

import pytest

from data_pipeline import builder, loader, sources
from data_pipeline.instances import InstanceConfig
from data_pipeline.manifest import MANIFEST_FILE, Manifest, ManifestError
from data_pipeline.tokenizer import VocabRecord, load_tokenizer
from storage.fs import crc32c as crc32c_of


@pytest.fixture(scope="module")
def built(corpus_dir, wordpiece_vocab, tmp_path_factory):
    out = tmp_path_factory.mktemp("manifest_data")
    return builder.build(builder.BuildConfig(
        output_dir=str(out), vocab=wordpiece_vocab, progress=False, num_shards=3, docs_per_chunk=8,
        eval_fraction=0.2, instance=InstanceConfig(seq_len=32),
        source=sources.SourceConfig(inputs=(str(corpus_dir / "en.txt"),))))


def test_every_shard_is_recorded_with_its_size_and_checksum(built):
    m = Manifest.load(built.data_dir)
    assert m == built and m.format_version == 2
    for split in ("train", "eval"):
        assert m.splits[split].examples == sum(s.examples for s in m.splits[split].shards) > 0
        for shard, path in zip(m.splits[split].shards, m.paths(split)):
            assert shard.bytes == os.path.getsize(path) and shard.crc32c == crc32c_of(path)
    assert m.verify(checksums=True) == []


def test_a_manifest_of_an_older_builder_still_loads(built, tmp_path):
    """Format 1 (no per-shard sizes or checksums, no format_version) as the first builder wrote it."""
    old = tmp_path / "old"
    shutil.copytree(built.data_dir, old)
    d = json.load(open(old / MANIFEST_FILE))
    d.pop("format_version")
    d.pop("sources")
    for split in d["splits"].values():
        split.pop("shards")
    (old / MANIFEST_FILE).write_text(json.dumps(d))
    m = Manifest.load(str(old))
    assert m.format_version == 1 and m.splits["train"].files == built.splits["train"].files
    assert m.verify(checksums=True) == []                   # sizes unknown: existence only
    os.remove(old / m.splits["train"].files[0])
    assert m.verify() == [(m.paths("train")[0], "missing")]
    batch = next(iter(loader.make_dataset(dataclasses.replace(m, data_dir=built.data_dir),
                                          batch_size=4, training=False)))
    assert batch["input_ids"].shape == (4, 32)


@pytest.mark.parametrize("edit,message", [
    (lambda d: d.update(format_version=99), "written by a newer version of this project"),
    (lambda d: d.pop("splits"), "is not a manifest this code can read"),
])
def test_unreadable_manifests_are_refused_clearly(built, tmp_path, edit, message):
    d = json.load(open(os.path.join(built.data_dir, MANIFEST_FILE)))
    edit(d)
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(d))
    with pytest.raises(ManifestError, match=message):
        Manifest.load(str(tmp_path))
    (tmp_path / MANIFEST_FILE).write_text("{not json")
    with pytest.raises(ManifestError, match="is not valid JSON"):
        Manifest.load(str(tmp_path))


def test_verify_names_truncated_and_changed_shards(built, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(built.data_dir, copy)
    m = Manifest.load(str(copy))
    first, second = m.paths("train")[:2]
    with open(first, "r+b") as f:
        f.truncate(10)
    raw = bytearray(open(second, "rb").read())
    raw[-5] ^= 1
    open(second, "wb").write(bytes(raw))
    assert [p for p, _ in m.verify()] == [first]             # sizes: without reading the data
    problems = dict(m.verify(checksums=True))
    assert problems[first].startswith("10 bytes, %d when built" % m.splits["train"].shards[0].bytes)
    assert problems[second].startswith("CRC32C ")


def test_the_vocabulary_path_is_recorded_absolute_and_old_relative_ones_still_resolve(
        corpus_dir, wordpiece_vocab, tmp_path, monkeypatch):
    """--vocab as typed (relative) named nothing from another working directory (a run started
    elsewhere). It is recorded absolute now; a manifest that holds a relative path is read
    against the working directory as before, then against the data directory."""
    (tmp_path / "project" / "vocab").mkdir(parents=True)
    shutil.copy(wordpiece_vocab, tmp_path / "project" / "vocab" / "vocab.txt")
    monkeypatch.chdir(tmp_path / "project")
    m = builder.build(builder.BuildConfig(
        output_dir="data", vocab="vocab/vocab.txt", progress=False, num_shards=1,
        instance=InstanceConfig(seq_len=32), source=sources.SourceConfig(inputs=(str(corpus_dir / "en.txt"),))))
    recorded = json.load(open(tmp_path / "project" / "data" / MANIFEST_FILE))["vocab"]["path"]
    assert recorded == m.vocab.path == str(tmp_path / "project" / "vocab" / "vocab.txt")
    monkeypatch.chdir(tmp_path)
    assert os.path.exists(Manifest.load(str(tmp_path / "project" / "data")).vocab.path)

    # A manifest of an older build: the path as typed.
    d = json.load(open(tmp_path / "project" / "data" / MANIFEST_FILE))
    d["vocab"]["path"] = "vocab/vocab.txt"
    (tmp_path / "project" / "data" / MANIFEST_FILE).write_text(json.dumps(d))
    monkeypatch.chdir(tmp_path / "project")                        # where it was built: as before
    assert Manifest.load("data").vocab.path == "vocab/vocab.txt"
    monkeypatch.chdir(tmp_path)                                    # elsewhere: not found, kept as is
    assert Manifest.load("project/data").vocab.path == "vocab/vocab.txt"
    shutil.copytree(tmp_path / "project" / "vocab", tmp_path / "project" / "data" / "vocab")
    assert Manifest.load("project/data").vocab.path == os.path.join("project/data", "vocab/vocab.txt")
    assert os.path.exists(Manifest.load("project/data").vocab.path)


def test_one_vocabulary_record_writes_each_files_keys_and_inverts_the_replacements_once(built):
    """The data manifest's "vocab" and a run's vocab.json keep their keys, in order; the ids MLM
    masking draws, stored as their complement, are the tokenizer's."""
    d = json.load(open(os.path.join(built.data_dir, MANIFEST_FILE)))["vocab"]
    record = VocabRecord.from_dict(d)
    assert list(record.to_dict().items()) == list(d.items()) and d["not_random_replacements"]
    assert record.random_replacement_ids == tuple(load_tokenizer(d["path"]).random_replacement_ids().tolist())
    assert list(load_tokenizer(d["path"]).describe().to_dict()) == list(d)[:6]   # no replacements
    copied = dataclasses.replace(record, file="vocab.txt", source_path=d["path"])   # a run's copy
    assert list(copied.to_dict()) == list(d) + ["file", "source_path"]
    assert VocabRecord.from_dict(copied.to_dict()) == copied
    older = {k: v for k, v in d.items() if k != "not_random_replacements"}   # all but specials drawn
    assert VocabRecord.from_dict(older).to_dict() == dict(older, not_random_replacements=[])
