"""Export: Google names and shapes, the round trip to identical MLM probabilities, EMA and NSP,
and clear refusals (corrupt files, mismatched config, missing vocab, occupied output)."""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import sample_corpus
from downstream import build_transformer_model, load_finetune_tokenizer, sequence_padding
from pretrain import export
from pretrain.export_dir import ExportDir
from pretrain.google_checkpoint import CheckpointError, write_checkpoint
from pretrain.modeling import BertConfig, attention_bias, build_model, google_variables
from pretrain.trainer import Trainer
from tests.pretrain.conftest import tiny_config
from tests.tolerances import PROBABILITY

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def google_layout(c):
    """{name: shape} as docs/FORMATS.md §2 lists them (written out here, not taken from the code)."""
    h, v = c["hidden_size"], c["vocab_size"]
    names = {"bert/embeddings/word_embeddings": [v, h],
             "bert/embeddings/token_type_embeddings": [c["type_vocab_size"], h],
             "bert/embeddings/position_embeddings": [c["max_position_embeddings"], h],
             "bert/embeddings/LayerNorm/beta": [h], "bert/embeddings/LayerNorm/gamma": [h],
             "bert/pooler/dense/kernel": [h, h], "bert/pooler/dense/bias": [h],
             "cls/predictions/transform/dense/kernel": [h, h], "cls/predictions/transform/dense/bias": [h],
             "cls/predictions/transform/LayerNorm/beta": [h],
             "cls/predictions/transform/LayerNorm/gamma": [h],
             "cls/predictions/output_bias": [v]}
    for i in range(c["num_hidden_layers"]):
        p = "bert/encoder/layer_%d/" % i
        for part in ("query", "key", "value"):
            names.update({p + "attention/self/%s/kernel" % part: [h, h],
                          p + "attention/self/%s/bias" % part: [h]})
        names.update({p + "attention/output/dense/kernel": [h, h], p + "attention/output/dense/bias": [h],
                      p + "attention/output/LayerNorm/beta": [h], p + "attention/output/LayerNorm/gamma": [h],
                      p + "intermediate/dense/kernel": [h, c["intermediate_size"]],
                      p + "intermediate/dense/bias": [c["intermediate_size"]],
                      p + "output/dense/kernel": [c["intermediate_size"], h], p + "output/dense/bias": [h],
                      p + "output/LayerNorm/beta": [h], p + "output/LayerNorm/gamma": [h]})
    return names


def real_text_batch(tokenizer, max_len=32, rows=8):
    """Sentences of the project's sample corpus, English and Chinese, as padded model inputs."""
    sentences = [s for doc in sample_corpus.english_documents()[:3] + sample_corpus.chinese_documents()[:2]
                 for s in doc][:rows]
    pairs = [tokenizer.encode(s, maxlen=max_len) for s in sentences]
    return sequence_padding([p[0] for p in pairs]), sequence_padding([p[1] for p in pairs])


def reference_probabilities(model, ids, segments, kind="bidirectional"):
    """The pretraining model's own MLM probabilities (what the trainer optimises)."""
    bias = attention_bias(tf.cast(ids != 0, tf.int32), tf.constant(segments), kind)
    hidden, _ = model(tf.constant(ids), tf.constant(segments), bias, training=False)
    return tf.nn.softmax(model.mlm_logits(hidden)).numpy()


def test_round_trip_gives_identical_mlm_probabilities_on_real_text(trained_run, exported):
    _, trainer = trained_run
    reader = tf.train.load_checkpoint(os.path.join(exported, "bert_model.ckpt"))
    for name, variable in google_variables(trainer.model).items():   # the trained weights, exactly
        np.testing.assert_array_equal(reader.get_tensor(name), variable.numpy(), err_msg=name)
    directory = ExportDir(exported)
    bert = build_transformer_model(directory.config_path, directory.prefix, with_mlm=True)
    tokenizer = load_finetune_tokenizer(directory.vocab_path)
    ids, segments = real_text_batch(tokenizer)
    assert (ids == 0).any() and (ids == tokenizer.special_ids.sep).any()   # padding and [SEP] inside
    ours = bert.predict([ids, segments], verbose=0)
    reference = reference_probabilities(trainer.model, ids, segments)
    assert ours.shape == reference.shape == ids.shape + (2000,)
    diff = np.abs(ours - reference).max()
    print("round trip: max abs difference of MLM probabilities %.3g" % diff)
    assert diff <= 1e-5


def test_every_name_and_shape_follows_the_google_layout(trained_run, exported, mlm_data):
    with open(os.path.join(exported, "bert_config.json")) as f:
        config = json.load(f)
    assert set(config) == {"vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                           "intermediate_size", "hidden_act", "hidden_dropout_prob",
                           "attention_probs_dropout_prob", "max_position_embeddings",
                           "type_vocab_size", "initializer_range"}
    assert config["hidden_act"] == "gelu" and config["vocab_size"] == 2000
    shapes = tf.train.load_checkpoint(os.path.join(exported, "bert_model.ckpt")).get_variable_to_shape_map()
    assert shapes == google_layout(config)   # no optimizer slots, no global_step, no NSP (not trained)
    assert sorted(os.listdir(exported)) == ["bert_config.json", "bert_model.ckpt.data-00000-of-00001",
                                            "bert_model.ckpt.index", "export_manifest.json", "vocab.txt"]
    with open(os.path.join(exported, "export_manifest.json")) as f:
        manifest = json.load(f)
    for name, info in manifest["files"].items():
        with open(os.path.join(exported, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == info["sha256"], name
    with open(os.path.join(mlm_data, "manifest.json")) as f:
        assert manifest["vocab"]["sha256"] == json.load(f)["vocab"]["sha256"]
    assert manifest["source"]["step"] == 4 and manifest["heads"] == {
        "mlm": True, "pooler": True, "nsp": False, "pooler_trained": False}
    assert manifest["metrics"]["train"]["step"] == 4


def test_ema_weights_are_exported(trained_run, mlm_data, tmp_path):
    c = tiny_config(mlm_data, steps=2)
    c.optimizer.ema_decay = 0.5
    trainer = Trainer(c, str(tmp_path / "run"), progress=False)
    trainer.train()
    assert export.export(str(tmp_path / "run"), str(tmp_path / "ema"), ema=True).source["ema"]
    shadow_of = {id(v): a for v, a in zip(trainer.model.trainable_variables, trainer.state.ema.averages)}
    reader = tf.train.load_checkpoint(str(tmp_path / "ema" / "bert_model.ckpt"))
    for name, variable in google_variables(trainer.model).items():
        np.testing.assert_array_equal(reader.get_tensor(name), shadow_of[id(variable)].numpy(), err_msg=name)
    assert not np.array_equal(reader.get_tensor("bert/embeddings/word_embeddings"),
                              trainer.model.embeddings.word_embeddings.numpy())
    with pytest.raises(export.ExportError, match="holds no moving average"):
        export.export(trained_run[0], str(tmp_path / "no_ema"), ema=True)
    assert sorted(os.listdir(tmp_path)) == ["ema", "run"]   # nothing else written


@pytest.mark.parametrize("with_nsp,embedding_size", [(True, None), (False, 16)])
def test_nsp_head_and_factorized_embeddings_export_and_load(trained_run, tmp_path, with_nsp, embedding_size):
    """Checkpoints with the trainer's structure, written directly: one with NSP weights (as pair
    data with NSP gives), one with factorized embeddings. Keras 3 does not expose model.blocks to
    tf.train.Checkpoint, so a list of the variables stands in for the trainer's optimizer."""
    workdir = tmp_path / "run"
    (workdir / "checkpoints").mkdir(parents=True)
    run = json.loads(open(os.path.join(trained_run[0], "config.json")).read())
    run["model"]["embedding_size"] = embedding_size
    (workdir / "config.json").write_text(json.dumps(run))
    model = build_model(BertConfig.from_dict(run["model"]), with_nsp=with_nsp)
    checkpoint = tf.train.Checkpoint(model=model, variables=list(model.trainable_variables),
                                     step=tf.Variable(7, dtype=tf.int64))
    tf.train.CheckpointManager(checkpoint, str(workdir / "checkpoints"), 1).save(7)
    manifest = export.export(str(workdir), str(tmp_path / "out"))
    assert manifest.heads["nsp"] == with_nsp and manifest.source["step"] == 7
    directory = ExportDir(str(tmp_path / "out"))
    shapes = tf.train.load_checkpoint(directory.prefix).get_variable_to_shape_map()
    assert shapes.get("cls/seq_relationship/output_weights") == ([2, 32] if with_nsp else None)
    if embedding_size:
        assert json.loads(open(directory.config_path).read())["embedding_size"] == 16
        assert shapes["bert/embeddings/word_embeddings"] == [2000, 16]
        assert shapes["bert/encoder/embedding_hidden_mapping_in/kernel"] == [16, 32]
        assert shapes["cls/predictions/transform/dense/kernel"] == [32, 16]
    for name, variable in google_variables(model).items():
        np.testing.assert_array_equal(tf.train.load_variable(directory.prefix, name), variable.numpy(),
                                      err_msg=name)
    bert = build_transformer_model(directory.config_path, directory.prefix, with_mlm=True, with_nsp=with_nsp)
    ids, segments = real_text_batch(load_finetune_tokenizer(directory.vocab_path), rows=4)
    outputs = bert.predict([ids, segments], verbose=0)
    np.testing.assert_allclose(outputs[1] if with_nsp else outputs,
                               reference_probabilities(model, ids, segments), **PROBABILITY)
    if with_nsp:
        bias = attention_bias(tf.cast(ids != 0, tf.int32), tf.constant(segments), "bidirectional")
        _, pooled = model(tf.constant(ids), tf.constant(segments), bias, training=False)
        np.testing.assert_allclose(outputs[0], tf.nn.softmax(model.nsp_logits(pooled)).numpy(), **PROBABILITY)


def _copy_run(trained_run, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(trained_run[0], workdir)
    return workdir


def _left_behind(directory):
    return sorted(n for n in os.listdir(directory) if n != "run")


def test_corrupt_or_truncated_training_checkpoints_are_refused(trained_run, tmp_path):
    workdir = _copy_run(trained_run, tmp_path)
    data = workdir / "checkpoints" / "ckpt-4.data-00000-of-00001"
    blob = bytearray(data.read_bytes())
    data.write_bytes(bytes(blob[:len(blob) // 2]))
    with pytest.raises(export.ExportError, match="truncated or corrupt"):
        export.export(str(workdir), str(tmp_path / "out"))
    for i in range(0, len(blob), 4096):   # a flipped byte per 4 KiB: every large tensor is hit
        blob[i] ^= 0xFF
    data.write_bytes(bytes(blob))
    with pytest.raises(export.ExportError, match="Checksum does not match"):
        export.export(str(workdir), str(tmp_path / "out"))
    (workdir / "checkpoints" / "ckpt-2.index").write_bytes(b"not an index")
    with pytest.raises(export.ExportError, match="Cannot open checkpoint .*ckpt-2"):
        export.export(str(workdir), str(tmp_path / "out"), step=2)
    assert _left_behind(tmp_path) == []   # no output, no staging directory


def test_corrupt_or_truncated_exports_are_refused_by_the_loader(exported, tmp_path):
    broken = tmp_path / "export"
    shutil.copytree(exported, broken)
    directory = ExportDir(str(broken))
    data = broken / "bert_model.ckpt.data-00000-of-00001"
    data.write_bytes(data.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or corrupt: reading"):
        build_transformer_model(directory.config_path, directory.prefix)
    (broken / "bert_model.ckpt.index").write_bytes(b"\0" * 10)
    with pytest.raises(CheckpointError, match="Cannot open checkpoint"):
        build_transformer_model(directory.config_path, directory.prefix)


def test_config_and_checkpoint_shape_mismatch(trained_run, exported, tmp_path):
    workdir = _copy_run(trained_run, tmp_path)
    run = json.loads((workdir / "config.json").read_text())
    run["model"]["intermediate_size"] = 48
    (workdir / "config.json").write_text(json.dumps(run))
    with pytest.raises(export.ExportError, match=r"intermediate/dense/kernel with shape \[32, 64\], but "
                                                 r"config.json's model section gives \[32, 48\]"):
        export.export(str(workdir), str(tmp_path / "out"))
    assert _left_behind(tmp_path) == []
    config = json.loads(open(os.path.join(exported, "bert_config.json")).read())
    (tmp_path / "bert_config.json").write_text(json.dumps(dict(config, intermediate_size=48)))
    with pytest.raises(CheckpointError, match=r"intermediate/dense/kernel in .* has shape \[32, 64\], "
                                              r"but the model built from the config needs \[32, 48\]"):
        build_transformer_model(str(tmp_path / "bert_config.json"), os.path.join(exported, "bert_model.ckpt"))
    (tmp_path / "bert_config.json").write_text(json.dumps(dict(config, num_hidden_layers=3)))
    with pytest.raises(CheckpointError, match="It has 2 layers but the config says num_hidden_layers=3"):
        build_transformer_model(str(tmp_path / "bert_config.json"), os.path.join(exported, "bert_model.ckpt"))


def test_an_export_needs_nothing_but_the_run_directory(trained_run, mlm_data, tmp_path):
    """The run copied its vocabulary when it started: the data may move or go."""
    workdir = _copy_run(trained_run, tmp_path)
    record = json.loads((workdir / "vocab" / "vocab.json").read_text())
    assert record["file"] == "vocab.txt" and record["sha256"] == json.loads(
        open(os.path.join(mlm_data, "manifest.json")).read())["vocab"]["sha256"]
    run = json.loads((workdir / "config.json").read_text())
    run["data"]["train_dir"] = str(tmp_path / "deleted")
    (workdir / "config.json").write_text(json.dumps(run))
    manifest = export.export(str(workdir), str(tmp_path / "out"))
    assert manifest.vocab.source_path == str(workdir / "vocab" / "vocab.txt")
    assert (tmp_path / "out" / "vocab.txt").read_bytes() == (workdir / "vocab" / "vocab.txt").read_bytes()


def test_missing_vocab_is_a_clear_error(trained_run, mlm_data, wordpiece_vocab, tmp_path):
    """A run from before runs kept their vocabulary: export looks for the data's."""
    workdir = _copy_run(trained_run, tmp_path)
    shutil.rmtree(workdir / "vocab")
    data = tmp_path / "data"
    shutil.copytree(mlm_data, data)
    manifest = json.loads((data / "manifest.json").read_text())
    manifest["vocab"]["path"] = str(tmp_path / "moved" / "vocab.txt")
    (data / "manifest.json").write_text(json.dumps(manifest))
    run = json.loads((workdir / "config.json").read_text())
    run["data"]["train_dir"] = str(data)
    (workdir / "config.json").write_text(json.dumps(run))
    with pytest.raises(export.ExportError, match="moved/vocab.txt .* does not exist here. Pass --vocab"):
        export.export(str(workdir), str(tmp_path / "out"))
    (tmp_path / "other.txt").write_text(open(wordpiece_vocab).read().replace("[unused0]", "[unused9]"))
    with pytest.raises(export.ExportError, match="is not the vocabulary the run was trained with"):
        export.export(str(workdir), str(tmp_path / "out"), vocab=str(tmp_path / "other.txt"))
    assert not (tmp_path / "out").exists()
    export.export(str(workdir), str(tmp_path / "out"), vocab=wordpiece_vocab)   # the right copy
    with pytest.raises(CheckpointError, match="does not exist"):
        load_finetune_tokenizer(str(tmp_path / "nowhere" / "vocab.txt"))


def test_an_output_holding_something_else_is_refused(trained_run, exported, tmp_path):
    workdir = trained_run[0]
    index = os.path.join(exported, "bert_model.ckpt.index")
    before = os.stat(index).st_mtime_ns
    assert export.export(workdir, exported).source["step"] == 4          # same export: nothing to do
    assert os.stat(index).st_mtime_ns == before
    with pytest.raises(export.ExportError, match="already holds a different export \\(step 4"):
        export.export(workdir, exported, step=2)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(export.ExportError, match="is not empty and holds no export"):
        export.export(workdir, str(tmp_path / "busy"))
    assert os.listdir(tmp_path / "busy") == ["notes.txt"]
    (tmp_path / "empty").mkdir()
    assert export.export(workdir, str(tmp_path / "empty"), step=2).source["step"] == 2
    assert sorted(os.listdir(tmp_path)) == ["busy", "empty"]   # no staging directory left


def test_loaders_explain_training_checkpoints_and_missing_heads(trained_run, exported, tmp_path):
    config = os.path.join(exported, "bert_config.json")
    with pytest.raises(CheckpointError, match="is a training checkpoint .* python -m launch.export"):
        build_transformer_model(config, os.path.join(trained_run[0], "checkpoints", "ckpt-4"))
    reader = tf.train.load_checkpoint(os.path.join(exported, "bert_model.ckpt"))
    encoder_only = {n: reader.get_tensor(n) for n in reader.get_variable_to_shape_map()
                    if not n.startswith("cls/")}
    write_checkpoint(encoder_only, str(tmp_path / "bert_model.ckpt"))
    with pytest.raises(CheckpointError, match="saved without the mlm head"):
        build_transformer_model(config, str(tmp_path / "bert_model.ckpt"), with_mlm=True)
    with pytest.raises(CheckpointError, match="saved without the nsp head"):
        build_transformer_model(config, str(tmp_path / "bert_model.ckpt"), with_nsp=True)
    build_transformer_model(config, str(tmp_path / "bert_model.ckpt"), with_pool=True)   # enough


def test_command_line(trained_run, tmp_path):
    done = subprocess.run([sys.executable, "-m", "launch.export", "--workdir=%s" % trained_run[0],
                           "--output=%s" % (tmp_path / "2"), "--step=2"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Exported step 2" in done.stderr and "bert_model.ckpt.index" in done.stdout
    assert json.loads((tmp_path / "2" / "export_manifest.json").read_text())["source"]["step"] == 2
    recorded = open(os.path.join(trained_run[0], "command.txt")).read().splitlines()[-1]
    assert "-m launch.export --workdir=%s --output=%s --step=2" % (trained_run[0], tmp_path / "2") in recorded
