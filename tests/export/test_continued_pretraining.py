"""--config.init_checkpoint: a new run starts from Google-layout weights (here: an export), once;
a checkpoint with another vocabulary is refused, or remapped by token when asked. A transformers
directory (our export's hf/) starts a run the same way, with the same checks, local or gs:// (a
GCS emulator on loopback)."""

import json
import re
import shutil

import numpy as np
import pytest
import tensorflow as tf

from pretrain import hf_format
from pretrain.google_checkpoint import write_checkpoint
from pretrain.modeling import google_variables
from pretrain.trainer import TrainError, Trainer
from tests.pretrain.conftest import tiny_config


def _trainer(data, workdir, init, vocab_map="", steps=2):
    c = tiny_config(data, steps=steps)
    c.init_checkpoint, c.init_vocab_map = init, vocab_map
    return Trainer(c, str(workdir), progress=False)


def test_a_new_run_starts_from_the_checkpoint_then_resumes_its_own(mlm_data, exported, tmp_path):
    reader = tf.train.load_checkpoint(exported + "/bert_model.ckpt")
    trainer = _trainer(mlm_data, tmp_path / "run", exported)   # an export directory is accepted
    assert trainer.restore() == 0
    for name, variable in google_variables(trainer.model).items():
        np.testing.assert_array_equal(variable.numpy(), reader.get_tensor(name), err_msg=name)
    trainer.train()
    trained = trainer.model.embeddings.word_embeddings.numpy()
    resumed = _trainer(mlm_data, tmp_path / "run", exported)
    assert resumed.restore() == 2                               # its own checkpoint, not the export
    np.testing.assert_array_equal(resumed.model.embeddings.word_embeddings.numpy(), trained)
    assert not np.array_equal(trained, reader.get_tensor("bert/embeddings/word_embeddings"))


def test_another_vocabulary_is_refused_or_remapped_by_token(mlm_data, exported, tmp_path):
    swapped = tmp_path / "swapped"
    shutil.copytree(exported, swapped)
    tokens = (swapped / "vocab.txt").read_text(encoding="utf-8").split("\n")
    tokens[100], tokens[200] = tokens[200], tokens[100]
    (swapped / "vocab.txt").write_text("\n".join(tokens), encoding="utf-8")
    with pytest.raises(TrainError, match="differs from the one the data was built with.*first "
                                         "difference at id 100.*init_vocab_map=by_token"):
        _trainer(mlm_data, tmp_path / "a", str(swapped)).restore()
    remapped = _trainer(mlm_data, tmp_path / "b", str(swapped), vocab_map="by_token")
    remapped.restore()
    ours = remapped.model.embeddings.word_embeddings.numpy()
    theirs = tf.train.load_variable(str(swapped / "bert_model.ckpt"), "bert/embeddings/word_embeddings")
    np.testing.assert_array_equal(ours[100], theirs[200])   # row of the same token string
    np.testing.assert_array_equal(ours[200], theirs[100])
    np.testing.assert_array_equal(ours[5], theirs[5])

    reader = tf.train.load_checkpoint(exported + "/bert_model.ckpt")
    values = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()}
    for name in ("bert/embeddings/word_embeddings", "cls/predictions/output_bias"):
        values[name] = np.concatenate([values[name], values[name][:5]])   # 2005 rows
    write_checkpoint(values, str(tmp_path / "bigger" / "bert_model.ckpt"))
    with pytest.raises(TrainError, match="has a 2005-token vocabulary but the data was tokenized "
                                         "with 2000 tokens"):
        _trainer(mlm_data, tmp_path / "c", str(tmp_path / "bigger" / "bert_model.ckpt")).restore()


def test_a_run_starts_from_a_transformers_directory(mlm_data, exported_hf, tmp_path):
    """export --format=hf -> init_checkpoint=OUTPUT/hf: the run's initial weights are the export's
    (the pooler, which an MLM export leaves out of hf/, keeps its initial values)."""
    reader = tf.train.load_checkpoint(exported_hf + "/bert_model.ckpt")
    trainer = _trainer(mlm_data, tmp_path / "run", exported_hf + "/hf")
    assert trainer.restore() == 0
    for name, variable in google_variables(trainer.model).items():
        if not name.startswith("bert/pooler/"):
            np.testing.assert_array_equal(variable.numpy(), reader.get_tensor(name), err_msg=name)


def _hf_copy(exported_hf, tmp_path, name):
    copy = tmp_path / name
    shutil.copytree(exported_hf + "/hf", copy)
    return copy


@pytest.mark.parametrize("case,message", [
    ("pickled", r"config.init_checkpoint: \S+ holds pytorch_model.bin, pickled PyTorch weights"),
    ("gpt2", "config.init_checkpoint: .*model_type 'gpt2' is not a BERT encoder"),
    ("missing", "config.init_checkpoint: .* lacks 1 tensor.*bert.encoder.layer.1.output.dense.weight"),
    ("vocab", "config.init_checkpoint: The vocabulary beside init_checkpoint .* differs from the one "
              "the data was built with.*first difference at id 100"),
    ("layers", "config.init_checkpoint: The run's model config differs from .*config.json "
               "\\(num_hidden_layers: run 2, checkpoint 1\\)")])
def test_transformers_directories_it_cannot_use_are_one_error(mlm_data, exported_hf, tmp_path, case, message):
    d = _hf_copy(exported_hf, tmp_path, case)
    config = json.loads((d / "config.json").read_text())
    tensors = hf_format.read_safetensors(str(d / "model.safetensors"))
    if case == "pickled":
        (d / "model.safetensors").unlink()
        (d / "pytorch_model.bin").write_bytes(b"not opened")
    elif case == "gpt2":
        (d / "config.json").write_text(json.dumps(dict(config, model_type="gpt2")))
    elif case in ("missing", "layers"):
        from safetensors.numpy import save_file

        drop = "bert.encoder.layer.1." if case == "layers" else "bert.encoder.layer.1.output.dense.weight"
        save_file({k: v for k, v in tensors.items() if not k.startswith(drop)}, str(d / "model.safetensors"))
        if case == "layers":
            (d / "config.json").write_text(json.dumps(dict(config, num_hidden_layers=1)))
    else:
        tokens = (d / "vocab.txt").read_text(encoding="utf-8").split("\n")
        tokens[100], tokens[200] = tokens[200], tokens[100]
        (d / "vocab.txt").write_text("\n".join(tokens), encoding="utf-8")
    with pytest.raises(TrainError, match=message):
        _trainer(mlm_data, tmp_path / "run", str(d)).restore()


# ------------------------------------------------------------- a transformers directory on GCS

def _upload(directory, url):
    from storage import gcs

    names = sorted(p.name for p in directory.iterdir())
    gcs.upload_directory(str(directory), url, names)


def test_a_run_starts_from_a_transformers_directory_on_gcs(mlm_data, exported_hf, gcs_emulator, tmp_path):
    """init_checkpoint=gs://.../hf: the files it reads are copied (and no others), and the run
    starts from the same weights as from the local directory; the log names the gs:// directory."""
    from pretrain.init_checkpoint import init_from_checkpoint

    d = _hf_copy(exported_hf, tmp_path, "hf")
    (d / "pytorch_model.bin").write_bytes(b"never opened, never copied")   # beside the safetensors
    url = "gs://%s/models/hf" % gcs_emulator
    _upload(d, url)
    assert hf_format.download_hf_dir(url, str(tmp_path / "copy")) == [
        "config.json", "model.safetensors", "tokenizer_config.json", "vocab.txt"]
    local = _trainer(mlm_data, tmp_path / "local", str(d))
    local.restore()
    remote = _trainer(mlm_data, tmp_path / "remote", url + "/")
    lines = []
    init_from_checkpoint(remote.model, url + "/", remote.manifest.vocab, log=lines.append)
    for (name, a), b in zip(google_variables(local.model).items(), google_variables(remote.model).values()):
        if not name.startswith("bert/pooler/"):   # not in hf/: each run keeps its initial values
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=name)
    assert lines[-1].startswith("init_checkpoint: ") and " variables loaded from %s;" % url in lines[-1]


@pytest.mark.parametrize("case,message", [
    ("pickled", r"config.init_checkpoint: {url} holds pytorch_model.bin, pickled PyTorch weights, "
                r"which are never opened .*\n    gcloud storage cp -r {url} \. && python -c .*torch.load\("
                r"'hf/pytorch_model.bin', .* && gcloud storage cp hf/model.safetensors {url}/$"),
    ("gpt2", r"config.init_checkpoint: {url}/config.json: model_type 'gpt2' is not a BERT encoder"),
    ("truncated", r"config.init_checkpoint: {url}/model.safetensors is truncated or corrupt"),
    ("vocab", r"config.init_checkpoint: The vocabulary beside init_checkpoint \({url}/vocab.txt\) differs"),
    ("bucket", r"config.init_checkpoint: gs://missing-bucket/models/hf: not found")])
def test_gcs_transformers_directories_it_cannot_use_are_one_error_naming_the_file(
        mlm_data, exported_hf, gcs_emulator, tmp_path, case, message):
    d = _hf_copy(exported_hf, tmp_path, "hf")
    url = "gs://%s/models/%s/hf" % (gcs_emulator, case)
    if case == "pickled":
        (d / "model.safetensors").rename(d / "pytorch_model.bin")
    elif case == "gpt2":
        config = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps(dict(config, model_type="gpt2")))
    elif case == "truncated":
        data = (d / "model.safetensors").read_bytes()
        (d / "model.safetensors").write_bytes(data[:-100])
    elif case == "vocab":
        tokens = (d / "vocab.txt").read_text(encoding="utf-8").split("\n")
        tokens[100], tokens[200] = tokens[200], tokens[100]
        (d / "vocab.txt").write_text("\n".join(tokens), encoding="utf-8")
    else:
        url = "gs://missing-bucket/models/hf"
    if case != "bucket":
        _upload(d, url)
    with pytest.raises(TrainError, match=message.format(url=re.escape(url))) as e:
        _trainer(mlm_data, tmp_path / "run", url).restore()
    assert str(e.value).count("\n") <= 1 and "init-hf-" not in str(e.value)   # no temporary copy
