"""storage.fs on local and remote paths (TensorFlow's in-memory ram:// file system stands in for
gs://: the same tf.io.gfile code path)."""

import os

import pytest

from storage import fs


def test_remote_directories_are_removed_with_what_they_hold():
    root = "ram://fs-test/run"
    fs.makedirs(root + "/checkpoints/data-worker-0-of-2")
    fs.write_bytes_atomic(root + "/checkpoints/data-worker-0-of-2/ckpt-4.index", b"x")
    fs.write_bytes_atomic(root + "/metrics.jsonl", b"{}\n")
    fs.remove(root)
    assert not fs.exists(root + "/metrics.jsonl") and not fs.exists(root)


def test_atomic_writes_copies_and_checksums(tmp_path):
    path = str(tmp_path / "a.json")
    fs.write_json_atomic(path, {"b": 1})
    assert fs.read_json(path) == {"b": 1}
    fs.copy(path, str(tmp_path / "b.json"))
    assert fs.sha256(str(tmp_path / "b.json")) == fs.sha256(path)
    remote = "ram://fs-test/copy.json"
    fs.copy(path, remote)
    assert fs.read_json(remote) == {"b": 1} and fs.sha256(remote) == fs.sha256(path)
    assert sorted(p.rsplit("/", 1)[1] for p in fs.glob(str(tmp_path / "*.json"))) == ["a.json", "b.json"]
    assert not [n for n in fs.listdir(str(tmp_path)) if ".tmp" in n]


def test_a_failed_atomic_write_or_rename_leaves_no_temporary_file(tmp_path):
    taken = tmp_path / "taken"                      # a directory where the file should go
    (taken / "inside").mkdir(parents=True)
    with pytest.raises(OSError):
        fs.write_bytes_atomic(str(taken), b"data")
    with pytest.raises(ValueError, match="the producer failed"):
        with fs.atomic_writer(str(tmp_path / "streamed.jsonl")) as f:
            f.write(b"half of it\n")
            raise ValueError("the producer failed")
    with pytest.raises(OSError):
        fs.copy(str(tmp_path / "no-such-source"), str(tmp_path / "copy"))
    assert sorted(os.listdir(tmp_path)) == ["taken"]
    with fs.atomic_writer(str(tmp_path / "streamed.jsonl")) as f:
        f.write(b"a\n")
        f.write(b"b\n")
    assert (tmp_path / "streamed.jsonl").read_bytes() == b"a\nb\n"
