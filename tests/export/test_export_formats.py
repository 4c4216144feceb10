"""`launch.export --format`: the Google layout at the top as before, a transformers directory in
hf/ beside it, both listed in the manifest's `formats`; a model HF BERT cannot hold is refused
before anything is written."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from pretrain import export, hf_format
from pretrain.export_dir import EXPORT_MANIFEST, ExportDir, ExportManifest
from pretrain.modeling import BertConfig, build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def launch_export(*args):
    return subprocess.run([sys.executable, "-m", "launch.export"] + list(args), cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"))


def test_google_and_hf_in_one_command(trained_run, exported, exported_hf):
    """exported_hf (conftest) is the command line's export with --format=google,hf."""
    google_only = ExportDir(exported).manifest
    manifest = ExportDir(exported_hf).manifest
    assert manifest.formats == {"google": ".", "hf": "hf"} and google_only.formats == {"google": "."}
    assert "formats" not in json.loads(open(os.path.join(exported, EXPORT_MANIFEST)).read())
    for name in os.listdir(exported):   # the Google layout at the top, byte for byte
        if name != EXPORT_MANIFEST:
            assert open(os.path.join(exported_hf, name), "rb").read() == \
                open(os.path.join(exported, name), "rb").read(), name
    hf_dir = os.path.join(exported_hf, "hf")
    assert sorted(n for n in manifest.files if n.startswith("hf/")) == \
        ["hf/" + n for n in sorted(os.listdir(hf_dir))]
    assert manifest.files["hf/model.safetensors"]["bytes"] == os.path.getsize(
        os.path.join(hf_dir, "model.safetensors"))
    values, config, vocab = hf_format.read_hf_dir(hf_dir)
    reader = tf.train.load_checkpoint(os.path.join(exported_hf, "bert_model.ckpt"))
    assert config == ExportDir(exported_hf).config
    assert sorted(values) == sorted(n for n in reader.get_variable_to_shape_map()
                                    if not n.startswith("bert/pooler/"))   # MLM: pooler untrained
    for name, value in values.items():
        np.testing.assert_array_equal(value, reader.get_tensor(name), err_msg=name)
    assert open(vocab, "rb").read() == open(ExportDir(exported_hf).vocab_path, "rb").read()
    assert json.load(open(os.path.join(hf_dir, "config.json")))["architectures"] == ["BertForMaskedLM"]
    card = open(os.path.join(hf_dir, "README.md"), encoding="utf-8").read()
    assert "- run: %s" % os.path.abspath(trained_run[0]) in card and "- step: 4" in card
    assert "- data: " in card and '"train_dir"' in card   # the run's config.json, as JSON
    # The manifest round-trips with its formats; asking again for what is there does nothing.
    assert ExportManifest.from_json(manifest.to_json()).formats == manifest.formats
    again = launch_export("--workdir=%s" % trained_run[0], "--output=%s" % exported_hf, "--format=hf")
    assert again.returncode == 0 and "already holds this export" in again.stderr


def test_a_google_only_export_asked_for_hf_is_refused(trained_run, exported):
    with pytest.raises(export.ExportError, match="already holds this export, without hf"):
        export.export(trained_run[0], exported, formats="google,hf")


def test_unknown_formats_and_factorized_embeddings_are_refused_before_writing(trained_run, tmp_path):
    done = launch_export("--workdir=%s" % trained_run[0], "--output=%s" % (tmp_path / "x"),
                         "--format=google,onnx")
    assert done.returncode == 2 and not (tmp_path / "x").exists()
    assert done.stderr.strip().splitlines()[-1].startswith("export: error: --format=google,onnx: "
                                                            "unknown format onnx")
    model = build_model(BertConfig(vocab_size=6, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                   intermediate_size=16, max_position_embeddings=16, embedding_size=4))
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\n")
    with pytest.raises(export.ExportError, match="--format=hf: This model has factorized embeddings"):
        export.export_model(model, str(tmp_path / "f"), str(tmp_path / "vocab.txt"), "mlm", {},
                            formats=("google", "hf"))
    assert sorted(os.listdir(tmp_path)) == ["vocab.txt"]   # no output, no staging directory left


def test_the_command_line_refuses_factorized_embeddings_in_one_line(trained_run, tmp_path):
    workdir = tmp_path / "run"
    (workdir / "checkpoints").mkdir(parents=True)
    run = json.loads(open(os.path.join(trained_run[0], "config.json")).read())
    run["model"]["embedding_size"] = 16
    (workdir / "config.json").write_text(json.dumps(run))
    model = build_model(BertConfig.from_dict(run["model"]))
    tf.train.CheckpointManager(tf.train.Checkpoint(model=model), str(workdir / "checkpoints"), 1).save(1)
    done = launch_export("--workdir=%s" % workdir, "--output=%s" % (tmp_path / "out"), "--format=hf")
    assert done.returncode == 2 and not (tmp_path / "out").exists()
    lines = [line for line in done.stderr.splitlines() if line.startswith("export: error:")]
    assert len(lines) == 1 and "factorized embeddings (embedding_size=16, hidden_size=32" in lines[0]


def test_sentence_transformers_needs_a_trained_pooler(trained_run, tmp_path):
    """An MLM run without NSP never trained its pooler: refused, nothing left behind. (SimBERT
    exports: tests/export/test_hf_format.py, against sentence-transformers itself.)"""
    with pytest.raises(export.ExportError, match=r"--format=sentence_transformers: this run \(task mlm, "
                                                 "no NSP\\) never trained its pooler"):
        export.export(trained_run[0], str(tmp_path / "st"), formats="sentence_transformers")
    assert os.listdir(tmp_path) == []
    assert export.format_dirs("sentence_transformers") == {"google": ".", "hf": "hf",
                                                           "sentence_transformers": "hf"}
