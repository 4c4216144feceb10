"""KerasHub presets (pretrain.keras_hub_format, `launch.export --format=keras_hub`): the files and
weights written, one clear refusal per model KerasHub's BERT cannot hold, and KerasHub itself
loading the preset and giving our ids and outputs.

The KerasHub tests run tests/export/keras_hub_check.py with this Python and PYTHONPATH set to the
directory BERT_KERAS_HUB_PATH names (default /tmp/bert-tf-pretrain-keras-hub), which holds
keras-hub and the packages it needs beyond the project's (requirements-keras-hub.txt). They are
skipped, saying how to create it, where there is none.

The trained model is the export tests' tiny MLM run, declared hidden_act=gelu_new with a cased
vocabulary (`keras_hub_run`): what KerasHub's BERT can hold. Activations and case folding carry
no weights, so both sides compute that one declared model from the same trained weights.
"""

import json
import os
import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import sample_corpus
from data_pipeline.tokenizer import load_tokenizer
from downstream import load_finetune_tokenizer
from pretrain import export, google_checkpoint, keras_hub_format
from pretrain.export_dir import EXPORT_MANIFEST, ExportDir
from pretrain.keras_hub_format import KerasHubFormatError
from pretrain.modeling import BertConfig, attention_bias, build_model, google_variables
from pretrain.rundir import RunDir
from tests.export.test_hf_format import SENTENCES

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
KERAS_HUB_PATH = os.environ.get("BERT_KERAS_HUB_PATH", "/tmp/bert-tf-pretrain-keras-hub")
# BertMaskedLM's probabilities against ours: its head's exact GELU and LayerNorm epsilon 1e-5 (ours:
# gelu_new, 1e-12; KerasHub fixes both) moved them by 1e-6 on the trained test model and by 1e-4
# with weights drawn from N(0, 0.3). The backbone, with our head, is held to PROBABILITY (1e-5).
MASKED_LM_TOLERANCE = 1e-4
KERAS_HUB_SETUP = ("python -m pip install --target /tmp/bert-tf-pretrain-keras-hub --no-deps "
                   "-r requirements-keras-hub.txt")


def launch_export(*args):
    return subprocess.run([sys.executable, "-m", "launch.export"] + list(args), cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"))


def _edit_json(path, edit):
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    edit(d)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(d, f)


@pytest.fixture(scope="module")
def keras_hub_run(trained_run, tmp_path_factory):
    """A copy of the trained MLM run whose config.json says hidden_act gelu_new and whose
    vocabulary record says lower_case false."""
    workdir = str(tmp_path_factory.mktemp("runs") / "cased")
    shutil.copytree(trained_run[0], workdir)
    _edit_json(os.path.join(workdir, "config.json"), lambda d: d["model"].update(hidden_act="gelu_new"))
    _edit_json(RunDir(workdir).vocab_record, lambda d: d.update(lower_case=False))
    return workdir


@pytest.fixture(scope="module")
def exported_keras_hub(keras_hub_run, tmp_path_factory):
    """The command line's export of that run with --format=google,keras_hub."""
    output = str(tmp_path_factory.mktemp("exports") / "cased" / "4")
    done = launch_export("--workdir=%s" % keras_hub_run, "--output=%s" % output, "--format=google,keras_hub")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "keras_hub/model.weights.h5" in done.stdout
    return output


# ------------------------------------------------------------------------------ the files

def test_google_and_keras_hub_in_one_command(keras_hub_run, exported_keras_hub, tmp_path):
    """The Google layout at the top is the bytes of a Google-only export of the same step; the
    manifest lists keras_hub/ and its files; a Google-only manifest has no `formats`."""
    google_only = str(tmp_path / "google")
    export.export(keras_hub_run, google_only)
    assert "formats" not in json.loads(open(os.path.join(google_only, EXPORT_MANIFEST)).read())
    for name in os.listdir(google_only):
        if name != EXPORT_MANIFEST:
            assert open(os.path.join(exported_keras_hub, name), "rb").read() == \
                open(os.path.join(google_only, name), "rb").read(), name
    manifest = ExportDir(exported_keras_hub).manifest
    assert manifest.formats == {"google": ".", "keras_hub": "keras_hub"}
    assert sorted(n for n in manifest.files if n.startswith("keras_hub/")) == [
        "keras_hub/" + n for n in ("README.md", "assets/tokenizer/vocabulary.txt", "config.json",
                                   "metadata.json", "model.weights.h5", "preprocessor.json",
                                   "task.json", "task.weights.h5", "tokenizer.json")]
    with pytest.raises(export.ExportError, match="already holds this export, without keras_hub"):
        export.export(keras_hub_run, google_only, formats="keras_hub")
    again = launch_export("--workdir=%s" % keras_hub_run, "--output=%s" % exported_keras_hub,
                          "--format=keras_hub")
    assert again.returncode == 0 and "already holds this export" in again.stderr


def test_configs_vocabulary_and_weights(exported_keras_hub):
    """config.json is BertBackbone's, tokenizer.json a cased BertTokenizer, the vocabulary ours
    token for token, and every weight of the checkpoint (NSP aside) is in a .weights.h5 file,
    reshaped where KerasHub's attention keeps heads apart."""
    source = ExportDir(exported_keras_hub)
    directory = os.path.join(exported_keras_hub, "keras_hub")
    config = json.load(open(os.path.join(directory, "config.json")))
    assert config["registered_name"] == "keras_hub>BertBackbone"
    ours = source.config
    assert [config["config"][k] for k in ("vocabulary_size", "num_layers", "num_heads", "hidden_dim",
                                          "intermediate_dim", "max_sequence_length", "num_segments")] \
        == [ours.vocab_size, ours.num_hidden_layers, ours.num_attention_heads, ours.hidden_size,
            ours.intermediate_size, ours.max_position_embeddings, ours.type_vocab_size]
    tokenizer = json.load(open(os.path.join(directory, "tokenizer.json")))["config"]
    assert (tokenizer["lowercase"], tokenizer["strip_accents"], tokenizer["oov_token"]) == \
        (False, False, "[UNK]")
    task = json.load(open(os.path.join(directory, "task.json")))
    assert task["registered_name"] == "keras_hub>BertMaskedLM" and task["config"]["backbone"] == config
    with open(os.path.join(directory, "assets", "tokenizer", "vocabulary.txt"), encoding="utf-8") as f:
        assert [line.rstrip() for line in f] == list(load_tokenizer(source.require_vocab()).vocab)
    stored = {}
    for name in ("model.weights.h5", "task.weights.h5"):
        with h5py.File(os.path.join(directory, name), "r") as f:
            f.visititems(lambda path, node: stored.update({(name, path): node[()]})
                         if isinstance(node, h5py.Dataset) else None)
    values = {name: source.reader.get_tensor(name) for name in source.variables}
    for google, file, group, index, shape in keras_hub_format._layout(source.config):
        value = stored.pop((file, "%s/vars/%s" % (group, index)))
        assert value.dtype == np.float32
        np.testing.assert_array_equal(value.reshape(values[google].shape), values[google], err_msg=google)
    assert sorted(path for _, path in stored) == ["optimizer/vars/0", "optimizer/vars/1"]
    np.testing.assert_array_equal(
        stored[("task.weights.h5", "optimizer/vars/0")], 0)   # no step taken: what a fresh task saves
    query = values["bert/encoder/layer_1/attention/self/query/kernel"]
    with h5py.File(os.path.join(directory, "model.weights.h5"), "r") as f:
        heads = f["layers/transformer_encoder_1/_self_attention_layer/query_dense/vars/0"][()]
    np.testing.assert_array_equal(heads[:, 1, :], query[:, 16:])   # head 1: output units 16..31
    card = open(os.path.join(directory, "README.md"), encoding="utf-8").read()
    assert "library_name: keras-hub" in card and "- step: 4" in card
    assert "`pooled_output` comes from its initial weights" in card   # MLM without NSP


# ------------------------------------------------------------------------- clear refusals

def _config(**changes):
    return BertConfig(**dict(dict(vocab_size=7, hidden_size=8, num_hidden_layers=1, num_attention_heads=2,
                                  intermediate_size=16, max_position_embeddings=16,
                                  hidden_act="gelu_new"), **changes))


@pytest.mark.parametrize("case,expected", [
    (dict(hidden_act="gelu"), "hidden_act is 'gelu', but KerasHub's BertBackbone always applies the "
                              "tanh approximation of GELU"),
    (dict(hidden_act="relu"), "hidden_act is 'relu'"),
    (dict(embedding_size=4), r"the embeddings are factorized \(embedding_size=4, hidden_size=8\)"),
    (dict(kind="sentencepiece"), "the vocabulary is sentencepiece, and KerasHub's BertTokenizer is "
                                 "WordPiece only"),
    (dict(lower_case=True), "the vocabulary is lower-cased, and KerasHub's BertTokenizer lower-cases "
                            "with NFKC case folding"),
    (dict(task="lm"), "the run trained a causal LM, and KerasHub's BERT has no causal mask"),
])
def test_what_keras_hub_bert_cannot_hold_is_refused(case, expected):
    case = dict(case)
    kind, lower_case = case.pop("kind", "wordpiece"), case.pop("lower_case", False)
    task = case.pop("task", "mlm")
    keras_hub_format.check_exportable(_config(), "wordpiece", False, "unilm")   # what it can hold
    with pytest.raises(KerasHubFormatError, match="KerasHub's BERT cannot hold this model: " + expected) as e:
        keras_hub_format.check_exportable(_config(**case), kind, lower_case, task)
    assert "\n" not in str(e.value) and str(e.value).endswith("Export --format=hf instead (transformers "
                                                              "holds it).")


def test_the_command_line_refuses_in_one_line_before_writing(trained_run, tmp_path):
    """The trained run as it is (exact GELU, lower-cased vocabulary): both reasons, one line,
    exit status 2, no output."""
    done = launch_export("--workdir=%s" % trained_run[0], "--output=%s" % (tmp_path / "out"),
                         "--format=keras_hub")
    assert done.returncode == 2 and os.listdir(tmp_path) == []
    lines = [line for line in done.stderr.splitlines() if line.startswith("export: error:")]
    assert len(lines) == 1 and lines[0].startswith(
        "export: error: --format=keras_hub: KerasHub's BERT cannot hold this model: hidden_act is 'gelu'")
    assert "the vocabulary is lower-cased" in lines[0]


def test_bad_vocabularies_and_outputs_are_refused(tmp_path):
    config = _config()
    values = {k: v.numpy() for k, v in google_variables(build_model(config, with_nsp=False)).items()}
    vocab = tmp_path / "vocab.txt"
    vocab.write_bytes(b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\rb\nc\n")   # one token: "a\rb"
    with pytest.raises(KerasHubFormatError, match=r"vocab.txt has the token 'a\\rb', which KerasHub's "
                                                  r"vocabulary file \(a token per line, right-stripped\)"):
        keras_hub_format.write_keras_hub_dir(str(tmp_path / "a"), values, config, str(vocab), False, "mlm")
    vocab.write_bytes(b"[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nb\nc\n")
    with pytest.raises(KerasHubFormatError, match="hidden_act is 'gelu'"):
        keras_hub_format.write_keras_hub_dir(str(tmp_path / "a"), values, _config(hidden_act="gelu"),
                                             str(vocab), False, "mlm")
    del values["bert/pooler/dense/bias"]
    with pytest.raises(KerasHubFormatError, match="1 weight\\(s\\) are missing: bert/pooler/dense/bias"):
        keras_hub_format.write_keras_hub_dir(str(tmp_path / "a"), values, config, str(vocab), False, "mlm")
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "x").write_text("")
    with pytest.raises(KerasHubFormatError, match="b already exists and is not an empty directory"):
        keras_hub_format.write_keras_hub_dir(str(tmp_path / "b"), values, config, str(vocab), False, "mlm")


# ------------------------------------------------------------------- against KerasHub itself

@pytest.fixture(scope="session")
def keras_hub_path():
    if not os.path.isdir(KERAS_HUB_PATH):
        pytest.skip("no keras-hub at %s (set BERT_KERAS_HUB_PATH); create it with: %s"
                    % (KERAS_HUB_PATH, KERAS_HUB_SETUP))
    probe = subprocess.run([sys.executable, "-c",
                            "import keras_hub, tensorflow_text; print(keras_hub.__version__)"],
                           capture_output=True, text=True, timeout=300,
                           env=dict(os.environ, PYTHONPATH=KERAS_HUB_PATH, TF_CPP_MIN_LOG_LEVEL="2"))
    if probe.returncode != 0 or probe.stdout.strip() != keras_hub_format.KERAS_HUB_VERSION:
        pytest.skip("%s does not give keras-hub %s with tensorflow-text (%s); create it with: %s"
                    % (KERAS_HUB_PATH, keras_hub_format.KERAS_HUB_VERSION,
                       (probe.stdout + probe.stderr).strip()[-200:], KERAS_HUB_SETUP))
    return KERAS_HUB_PATH


def _texts():
    """SENTENCES (English, Chinese, accents, full-width punctuation, a pair) and lines of the sample
    corpus in both languages."""
    documents = sample_corpus.chinese_documents() + sample_corpus.english_documents()[:20]
    return list(SENTENCES) + [(s, None) for doc in documents for s in doc]


def test_keras_hub_loads_our_export(exported_keras_hub, keras_hub_path, tmp_path):
    """BertTokenizer.from_preset gives our ids; BertBackbone.from_preset our hidden states, pooled
    output and (with our head) MLM probabilities within 1e-5; BertMaskedLM.from_preset our
    probabilities within MASKED_LM_TOLERANCE; save_to_preset of what it loaded writes what we wrote."""
    source = ExportDir(exported_keras_hub)
    tokenizer = load_finetune_tokenizer(source.require_vocab(), lower_case=source.lower_case)
    model = build_model(source.config, with_nsp=False)
    google_checkpoint.load_weights(model, source.prefix)
    cases, arrays = [], {}
    for a, b in _texts():
        ids, segments = tokenizer.encode(a, b)
        if len(ids) > source.config.max_position_embeddings:   # longer than the model takes
            continue
        n = len(cases)
        cases.append({"a": a, "b": b, "ids": ids, "segments": segments})
        ids, segments = tf.constant([ids]), tf.constant([segments])
        hidden, pooled = model(ids, segments, attention_bias(tf.ones_like(ids), segments, "bidirectional"))
        arrays.update({"hidden%d" % n: hidden.numpy()[0], "pooled%d" % n: pooled.numpy()[0],
                       "probs%d" % n: tf.nn.softmax(model.mlm_logits(hidden)).numpy()[0]})
    with open(tmp_path / "cases.json", "w", encoding="utf-8") as f:
        json.dump(cases, f, ensure_ascii=False)
    np.savez(tmp_path / "ours.npz", **arrays)
    done = subprocess.run([sys.executable, os.path.join(HERE, "keras_hub_check.py"), "load",
                           os.path.join(exported_keras_hub, "keras_hub"), str(tmp_path / "cases.json"),
                           str(tmp_path / "ours.npz"), str(MASKED_LM_TOLERANCE)],
                          capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=keras_hub_path, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    print(done.stdout)   # what was checked, and the largest differences
    assert len(cases) >= 20
    assert "BertTokenizer, BertBackbone, BertMaskedLM: %d cases" % len(cases) in done.stdout
