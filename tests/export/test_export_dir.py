"""The export directory as a type: the files an export writes are the bytes they have always been
(the manifest gains format_version), older manifests load, a directory without a vocabulary is one
clear error from every loader and launcher, and a loader reads the manifest and opens the
checkpoint once."""

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

from pretrain import export, google_checkpoint
from pretrain.export_dir import EXPORT_MANIFEST, ExportDir, ExportManifest
from pretrain.google_checkpoint import CheckpointError
from pretrain.modeling import BertConfig, build_model, google_variables
from storage import fs

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "the", "a", "model", "text",
          "##s", "##ing", "un", "中", "文", ","]
# sha256 of what `export_model` wrote for `_fixed_model` at commit c707d84 (before the manifest had
# a format_version). The manifest's: with "created" and vocab.source_path (a time and a temporary
# path) replaced by "-".
BEFORE = {
    "bert_config.json": "38c4bfd204b5bd9768ada2049ef29783ba4950e9af02a340cb4e477daea83b6f",
    "bert_model.ckpt.data-00000-of-00001": "f8597bef079df6b6ebe817ce1c8ca30ec0681711b66fd0ed6067c7435ffa8748",
    "bert_model.ckpt.index": "15a91e50b5febf10172fcb6daf4661506622d7866cc78527c26f191ab6e0d1eb",
    "vocab.txt": "8f4b4d3da81e11451f0e0c362c7a6fc70517a0127ecdac24f3895c3aadc10945",
    EXPORT_MANIFEST: "0d53de0f3da3dfe96f3a54e87637eafeadcabc69cfddf763a95d14d9b75feff0",
}
OLD_KEYS = {"format", "created", "source", "task", "heads", "bert_config", "vocab", "checkpoint",
            "variables", "metrics", "files", "run_config"}


def _fixed_model():
    """A 1-layer model whose weights come from NumPy's seeded generator: the same on every machine."""
    model = build_model(BertConfig(vocab_size=len(TOKENS), hidden_size=8, num_hidden_layers=1,
                                   num_attention_heads=2, intermediate_size=16, max_position_embeddings=16))
    rng = np.random.RandomState(0)
    for _, variable in sorted(google_variables(model).items()):
        variable.assign(rng.standard_normal(variable.shape).astype(np.float32))
    return model


def test_an_export_is_byte_identical_to_before_but_for_the_format_version(tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(TOKENS) + "\n")
    out = tmp_path / "export"
    manifest = export.export_model(_fixed_model(), str(out), str(vocab), "unilm", {"export": "base"},
                                   metrics={"eval": {"rougeL": 50.0}}, settings={"epochs": 1})
    assert sorted(os.listdir(out)) == sorted(BEFORE)
    for name in sorted(BEFORE):
        if name != EXPORT_MANIFEST:
            assert hashlib.sha256((out / name).read_bytes()).hexdigest() == BEFORE[name], name
    text = (out / EXPORT_MANIFEST).read_text()
    assert '\n  "format_version": 1,\n' in text and manifest.format_version == 1
    old = re.sub(r'"(created|source_path)": "[^"]*"', r'"\1": "-"',
                 text.replace('  "format_version": 1,\n', "", 1))
    assert hashlib.sha256(old.encode()).hexdigest() == BEFORE[EXPORT_MANIFEST], old
    assert json.loads(text) == manifest.to_json() and set(manifest.to_json()) == OLD_KEYS | {"format_version"}


def test_exporting_the_same_step_again_writes_the_same_bytes(trained_run, exported, tmp_path):
    again = export.export(trained_run[0], str(tmp_path / "again"))
    first = ExportDir(exported).manifest
    for name in os.listdir(exported):
        if name != EXPORT_MANIFEST:
            assert (tmp_path / "again" / name).read_bytes() == open(os.path.join(exported, name), "rb").read()
    assert dict(again.to_json(), created=None) == dict(first.to_json(), created=None)


def test_a_manifest_without_a_version_loads_and_unknown_keys_are_kept(exported, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(exported, old)
    d = json.loads((old / EXPORT_MANIFEST).read_text())
    d.pop("format_version")
    (old / EXPORT_MANIFEST).write_text(json.dumps(d, indent=2))
    opened = ExportDir(str(old))
    assert opened.manifest.format_version == 0 and set(d) == OLD_KEYS
    assert opened.lower_case is True and opened.task == "mlm" and opened.vocab_path == str(old / "vocab.txt")
    assert opened.manifest.vocab.special_ids.mask == d["vocab"]["special_ids"]["mask"]
    assert dict(opened.manifest.to_json(), format_version=None) == dict(d, format_version=None)
    newer = dict(d, format_version=7, signed_by={"key": "k1"})   # a later writer's manifest
    assert ExportManifest.from_json(newer).to_json() == newer
    (old / EXPORT_MANIFEST).write_text(json.dumps({k: v for k, v in d.items() if k != "heads"}))
    with pytest.raises(CheckpointError, match="is not an export manifest this code can read .*heads"):
        ExportDir(str(old))
    (old / EXPORT_MANIFEST).write_text("{")
    with pytest.raises(CheckpointError, match="export_manifest.json is not valid JSON"):
        ExportDir(str(old))


@pytest.fixture
def release(exported, tmp_path):
    """The export as a Google release without its vocab.txt: no manifest, no vocabulary."""
    directory = tmp_path / "release"
    shutil.copytree(exported, directory)
    os.remove(directory / "vocab.txt")
    os.remove(directory / EXPORT_MANIFEST)
    return str(directory)


def test_a_directory_without_a_vocabulary_is_one_clear_error_from_every_loader(release, exported, tmp_path):
    from downstream.classifier import finetune_classifier
    from downstream.generation import load_decoder
    from downstream.simbert import SimBERT

    message = "%s holds no vocabulary \\(no vocab.txt\\). Copy the vocabulary" % re.escape(release)
    rows = [("a text", "x"), ("another", "y")]
    for load in (lambda: SimBERT.from_export(release), lambda: load_decoder(release),
                 lambda: finetune_classifier(release, rows, rows, log=lambda text: None)):
        with pytest.raises(CheckpointError, match=message):
            load()
    assert ExportDir(release).manifest is None and ExportDir(release).vocab_path is None
    partial = tmp_path / "partial"   # an export whose vocabulary file was lost
    shutil.copytree(exported, partial)
    os.remove(partial / "vocab.txt")
    with pytest.raises(CheckpointError, match="its export_manifest.json names vocab.txt, which is missing"):
        ExportDir(str(partial)).require_vocab()


@pytest.mark.parametrize("launcher", ["generate", "finetune_classifier", "finetune_seq2seq"])
def test_the_launchers_print_that_error_in_one_line(launcher, release, tmp_path):
    (tmp_path / "in.jsonl").write_text(json.dumps({"text": "a", "source": "a", "target": "b"}) + "\n")
    (tmp_path / "rows.csv").write_text("text,label\na text,x\nanother,y\n")
    args = {"generate": ["--input=%s" % (tmp_path / "in.jsonl"), "--output=%s" % (tmp_path / "out.jsonl")],
            "finetune_classifier": ["--csv=%s" % (tmp_path / "rows.csv")],
            "finetune_seq2seq": ["--train=%s" % (tmp_path / "in.jsonl"), "--eval=%s" % (tmp_path / "in.jsonl"),
                                 "--output=%s" % (tmp_path / "out"), "--max_source_len=8",
                                 "--max_target_len=4"]}[launcher]
    done = subprocess.run([sys.executable, "-m", "launch." + launcher, "--export=%s" % release] + args,
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    assert "%s: error: %s holds no vocabulary (no vocab.txt)" % (launcher, release) in done.stderr


def test_a_loader_reads_the_manifest_and_opens_the_checkpoint_once(exported, monkeypatch):
    from downstream.generation import load_decoder

    calls = {"manifest": 0, "resolve": 0, "open_reader": 0}
    read_bytes, resolve = fs.read_bytes, google_checkpoint.resolve
    open_reader = google_checkpoint.open_reader

    def counted(name, function):
        def call(path, *args, **kwargs):
            calls[name] += name != "manifest" or path.endswith(EXPORT_MANIFEST)
            return function(path, *args, **kwargs)
        return call

    monkeypatch.setattr(fs, "read_bytes", counted("manifest", read_bytes))
    monkeypatch.setattr(google_checkpoint, "resolve", counted("resolve", resolve))
    monkeypatch.setattr(google_checkpoint, "open_reader", counted("open_reader", open_reader))
    load_decoder(exported)
    assert calls == {"manifest": 1, "resolve": 1, "open_reader": 1}
