"""The fine-tuning API: bert4keras's outputs and applications on an export, the tokenizer, Keras
saving, and the example classifier end to end."""

import json
import os
import subprocess
import sys

import keras
import pytest
import numpy as np
import tensorflow as tf

from downstream import build_transformer_model, load_finetune_tokenizer, sequence_padding
from pretrain.export_dir import ExportDir
from pretrain.modeling import google_variables
from tests.export.test_export import real_text_batch, reference_probabilities
from tests.tolerances import PROBABILITY, UNIT

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_unilm_and_lm_applications_match_the_pretraining_masks(trained_run, exported):
    directory = ExportDir(exported)
    tokenizer = load_finetune_tokenizer(directory.vocab_path)
    pairs = [tokenizer.encode("The loader reads shards.", "Masks are drawn per epoch.", maxlen=24),
             tokenizer.encode("数据分片", "动态掩码", maxlen=24)]
    ids, segments = sequence_padding([p[0] for p in pairs]), sequence_padding([p[1] for p in pairs])
    assert segments[0].max() == 1 and segments[0, 0] == 0
    for application, kind in (("unilm", "unilm"), ("lm", "causal"), ("encoder", "bidirectional")):
        bert = build_transformer_model(directory.config_path, directory.prefix, application=application,
                                       with_mlm=True)
        ours = bert.predict([ids, segments], verbose=0)
        np.testing.assert_allclose(ours, reference_probabilities(trained_run[1].model, ids, segments, kind),
                                   err_msg=application, **PROBABILITY)


def test_outputs_follow_bert4keras_conventions(exported):
    directory = ExportDir(exported)
    tokenizer = load_finetune_tokenizer(directory.vocab_path)
    ids, segments = real_text_batch(tokenizer, rows=3)
    encoder = build_transformer_model(directory.config_path, directory.prefix)
    sequence = encoder.predict([ids, segments], verbose=0)
    pooled = build_transformer_model(directory.config_path, directory.prefix, with_pool=True)
    both = build_transformer_model(directory.config_path, directory.prefix, with_pool=True, with_mlm="linear")
    pooled_out, (pooled_again, logits) = pooled.predict([ids, segments], verbose=0), both.predict(
        [ids, segments], verbose=0)
    assert sequence.shape == ids.shape + (32,) and pooled_out.shape == (3, 32)
    np.testing.assert_allclose(pooled_out, np.tanh(sequence[:, 0] @ tf.train.load_variable(
        directory.prefix, "bert/pooler/dense/kernel") + tf.train.load_variable(
        directory.prefix, "bert/pooler/dense/bias")), **UNIT)
    np.testing.assert_allclose(pooled_again, pooled_out, atol=1e-6)
    assert logits.shape == ids.shape + (2000,) and logits.min() < 0   # "linear": logits, not softmax
    # The heads a model does not output are frozen: fine-tuning would give them no gradient.
    assert sorted(w.path.split("/", 2)[2] for w in pooled.non_trainable_weights) == [
        "cls_predictions_output_bias", "cls_predictions_transform_LayerNorm/beta",
        "cls_predictions_transform_LayerNorm/gamma", "cls_predictions_transform_dense/bias",
        "cls_predictions_transform_dense/kernel"]
    # keep_tokens (bert4keras's simplified vocabulary): the kept rows, in the given order.
    keep = [0, 1, 2, 3, 4, 500, 42]
    small = build_transformer_model(directory.config_path, directory.prefix, keep_tokens=keep, with_mlm=True)
    table = google_variables(small.get_layer("bert").bert)["bert/embeddings/word_embeddings"].numpy()
    np.testing.assert_array_equal(table, tf.train.load_variable(
        directory.prefix, "bert/embeddings/word_embeddings")[keep])
    assert small.output.shape[-1] == len(keep)


def test_tokenizer_encodes_pairs_like_bert4keras(exported):
    tokenizer = load_finetune_tokenizer(ExportDir(exported).vocab_path)
    ids, segments = tokenizer.encode("masking draws new words", "every epoch of training data", maxlen=9)
    tokens = [tokenizer.id_to_token(i) for i in ids]
    assert len(ids) == 9 and tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2 and tokens[-1] == "[SEP]"
    assert segments == [0] * (tokens.index("[SEP]") + 1) + [1] * (8 - tokens.index("[SEP]"))
    assert tokenizer.decode(tokenizer.encode("the loader reads shards")[0]) == "the loader reads shards"
    assert tokenizer.decode(tokenizer.encode("数据分片")[0]) == "数据分片"


def test_a_finetuned_model_saves_and_loads_with_keras(exported, tmp_path):
    directory = ExportDir(exported)
    bert = build_transformer_model(directory.config_path, directory.prefix, with_pool=True)
    model = keras.Model(bert.inputs, keras.layers.Dense(2, activation="softmax")(bert.output))
    ids, segments = real_text_batch(load_finetune_tokenizer(directory.vocab_path), rows=2)
    model.save(tmp_path / "classifier.keras")
    again = keras.models.load_model(tmp_path / "classifier.keras")
    np.testing.assert_allclose(again.predict([ids, segments], verbose=0),
                               model.predict([ids, segments], verbose=0), atol=1e-6)


def test_the_example_classifier_beats_the_majority_baseline(exported, tmp_path):
    """launch.finetune_classifier on the project's sample CSV (which package a docstring sentence
    documents), from an export of a barely trained tiny model: the fine-tuning path end to end."""
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    cmd = [sys.executable, "-m", "launch.finetune_classifier", "--export=%s" % exported,
           "--write_sample_csv=%s" % (tmp_path / "sources.csv"), "--epochs=8", "--learning_rate=1e-3",
           "--max_len=48", "--metrics_json=%s" % (tmp_path / "result.json")]
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads((tmp_path / "result.json").read_text())
    print("classifier: held-out accuracy %.3f vs majority baseline %.3f"
          % (result["accuracy"], result["baseline"]))
    assert result["labels"] == ["data_pipeline", "pretrain"] and result["eval_rows"] >= 50
    assert "held-out accuracy" in out.stdout
    assert result["accuracy"] >= result["baseline"] + 0.1
    # English text the tests' vocabulary covers trains without the [UNK] warning (the Korean rows
    # of the next test get it).
    assert "fine-tuning on" in out.stderr and "warning" not in out.stderr, out.stderr[-2000:]


def test_the_classifier_refuses_one_class_and_rows_past_the_positions_and_warns_of_unk(exported, tmp_path):
    """Refusals come before training, as one line; text the vocabulary does not cover (Korean
    under the tests' English + Chinese vocabulary: every word is [UNK]) is trained on with a warning.
    Two command lines (each pays TensorFlow's start-up): one refusal, to show that the command turns
    the library's ValueError into one line and exit 2, and the Korean run; the other refusal is the
    library's own. That covered English text does not warn is checked by the example run above."""
    from downstream import classifier

    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")

    def run(rows, *flags):
        path = tmp_path / "rows.csv"
        path.write_text("text,label\n" + "".join("%s,%s\n" % r for r in rows), encoding="utf-8")
        return subprocess.run([sys.executable, "-m", "launch.finetune_classifier", "--export=%s" % exported,
                               "--csv=%s" % path, "--epochs=1"] + list(flags), cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)

    english = [("the loader reads shards number %d" % i, "a" if i % 2 else "b") for i in range(20)]
    done = run([(t, "same") for t, _ in english])
    assert done.returncode == 2 and "all have the label 'same': a classifier needs at least 2" in done.stderr
    assert "fine-tuning on" not in done.stderr and "Traceback" not in done.stderr
    logs = []
    with pytest.raises(ValueError, match="rows of --max_len=100 tokens exceed the model's "
                                         "max_position_embeddings=64"):
        classifier.finetune_classifier(exported, english[4:], english[:4], max_len=100, epochs=1,
                                       log=logs.append)
    assert not logs                      # refused before the "fine-tuning on" line and training
    done = run([("안녕하세요 세계 %s 좋은 아침" % t.split()[-1], label) for t, label in english], "--max_len=16")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "of the tokens of the training rows are [UNK]" in done.stderr


def test_the_names_that_moved_to_downstream_still_work_with_a_warning():
    """One release of grace: `pretrain.build_transformer_model`, `pretrain.load_tokenizer` and the
    old module paths (`pretrain.generation`, `pretrain.finetune`, ...) warn and give the new
    objects."""
    import importlib
    import sys

    import pretrain
    from downstream import backbone, generation, tokenization

    with pytest.warns(DeprecationWarning, match="pretrain.load_tokenizer moved to "
                      "downstream.load_finetune_tokenizer"):
        assert pretrain.load_tokenizer is tokenization.load_finetune_tokenizer
    with pytest.warns(DeprecationWarning, match="downstream.build_transformer_model"):
        assert pretrain.build_transformer_model is backbone.build_transformer_model
    for name in ("pretrain.generation", "pretrain.finetune"):
        sys.modules.pop(name, None)
    with pytest.warns(DeprecationWarning, match="pretrain.generation moved to downstream.generation"):
        assert importlib.import_module("pretrain.generation") is generation
    with pytest.warns(DeprecationWarning, match="downstream.backbone and downstream.tokenization"):
        old = importlib.import_module("pretrain.finetune")
    assert old.build_transformer_model is backbone.build_transformer_model
    assert old.sequence_padding is tokenization.sequence_padding
