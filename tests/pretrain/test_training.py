"""The training engine: masks, recompute with dropout, accumulation and replicas, SimBERT's global
negatives, resume, SIGTERM, and startup checks."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from pretrain import distribute, modeling, objectives
from pretrain.trainer import TrainError, Trainer
from tests.conftest import mirrored
from tests.pretrain.conftest import tiny_config
from tests.tolerances import UNIT

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _weights(trainer):
    return [v.numpy() for v in trainer.model.weights]


def _mirrored(n):
    return mirrored(n)


# ------------------------------------------------------------------------------------- masks

def test_unilm_and_causal_mask_tables():
    # [CLS] s1 s2 [SEP] t1 t2 [SEP] [PAD]
    segments = tf.constant([[0, 0, 0, 0, 1, 1, 1, 0]])
    input_mask = tf.constant([[1, 1, 1, 1, 1, 1, 1, 0]])
    allowed = modeling.attention_bias(input_mask, segments, "unilm")[0, 0].numpy() == 0
    idx = np.cumsum(segments.numpy()[0])
    expected = (idx[None, :] <= idx[:, None]) & (input_mask.numpy()[0][None, :] == 1)
    np.testing.assert_array_equal(allowed, expected)
    assert allowed[1, :4].all() and not allowed[1, 4:].any()       # source sees the whole source
    assert allowed[4, :5].all() and not allowed[4, 5:].any()       # t1 sees source and itself
    causal = modeling.attention_bias(input_mask, segments, "causal")[0, 0].numpy() == 0
    np.testing.assert_array_equal(causal, np.tril(np.ones((8, 8), bool)) & (input_mask.numpy()[0] == 1))
    full = modeling.attention_bias(input_mask, segments, "bidirectional")[0, 0].numpy() == 0
    np.testing.assert_array_equal(full, np.broadcast_to(input_mask.numpy()[0] == 1, (8, 8)))


# --------------------------------------------------------------------------------- recompute

@pytest.mark.parametrize("gathered", [False, True])
def test_recompute_gives_the_same_gradients_with_dropout_on(gathered):
    config = modeling.BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=3,
                                 num_attention_heads=4, intermediate_size=64,
                                 hidden_dropout_prob=0.3, attention_probs_dropout_prob=0.3)
    plain = modeling.build_model(config, with_nsp=False)
    recomputed = modeling.build_model(config, recompute=True, with_nsp=False)
    recomputed.set_weights(plain.get_weights())
    ids = tf.random.stateless_uniform([4, 16], [1, 2], 5, 50, dtype=tf.int32)
    segments = tf.zeros_like(ids)
    bias = modeling.attention_bias(tf.ones_like(ids), segments, "bidirectional")
    seed = tf.constant([7, 11], tf.int64)
    positions = tf.constant([[1, 4, 9], [0, 15, 15], [3, 2, 1], [7, 8, 12]]) if gathered else None

    @tf.function
    def grads(model, seed):
        pooler = {id(v) for v in model.pooler.weights}  # unused by this loss
        variables = [v for v in model.trainable_variables if id(v) not in pooler]
        with tf.GradientTape() as tape:
            hidden, _ = model(ids, segments, bias, seed=seed, training=True, positions=positions)
            loss = tf.reduce_sum(tf.square(model.mlm_logits(hidden)))
        return loss, tape.gradient(loss, variables)

    loss_a, grads_a = grads(plain, seed)
    loss_b, grads_b = grads(recomputed, seed)
    np.testing.assert_allclose(loss_a.numpy(), loss_b.numpy(), rtol=1e-6)
    for a, b in zip(grads_a, grads_b):
        np.testing.assert_allclose(tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(b).numpy(),
                                   rtol=1e-4, atol=1e-6)
    # Dropout is really on: another seed gives another loss.
    other, _ = grads(plain, tf.constant([7, 12], tf.int64))
    assert not np.isclose(other.numpy(), loss_a.numpy())


def test_last_block_at_masked_positions_only_equals_the_full_encoder():
    # The MLM loss asks the model for the masked positions only; the last block then computes
    # its queries, feed-forward and norms on those rows (+ [CLS]). Outputs, pooled output, loss
    # and every gradient must equal the full encoder's, gathered (dropout off: same function).
    config = modeling.BertConfig(vocab_size=60, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=4, intermediate_size=64,
                                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = modeling.build_model(config, with_nsp=True)
    ids = tf.random.stateless_uniform([3, 16], [3, 4], 5, 60, dtype=tf.int32)
    mask = tf.sequence_mask([16, 11, 5], 16, dtype=tf.int32)
    segments = tf.concat([tf.zeros([3, 8], tf.int32), tf.ones([3, 8], tf.int32)], axis=1)
    positions = tf.constant([[1, 15, 15, 0], [2, 3, 10, 0], [4, 1, 0, 0]])
    for kind in ("bidirectional", "unilm"):  # a row-dependent mask too
        bias = modeling.attention_bias(mask, segments, kind)

        def loss_of(gathered):
            with tf.GradientTape() as tape:
                hidden, pooled = model(ids, segments, bias, training=True,
                                       positions=positions if gathered else None)
                if not gathered:
                    hidden = tf.gather(hidden, positions, batch_dims=1)
                loss = (tf.reduce_sum(tf.square(model.mlm_logits(hidden)))
                        + tf.reduce_sum(tf.square(model.nsp_logits(pooled))))
            return hidden, pooled, loss, tape.gradient(loss, model.trainable_variables)

        full, gathered = loss_of(False), loss_of(True)
        np.testing.assert_allclose(gathered[0].numpy(), full[0].numpy(), **UNIT)   # other shapes
        np.testing.assert_allclose(gathered[1].numpy(), full[1].numpy(), **UNIT)
        np.testing.assert_allclose(gathered[2].numpy(), full[2].numpy(), rtol=1e-5)
        for a, b in zip(gathered[3], full[3]):
            np.testing.assert_allclose(tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(b).numpy(),
                                       rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------- accumulation, replicas

def _dropout_free_run(mlm_data, workdir, strategy, micro_batches):
    c = tiny_config(mlm_data, steps=3, steps_per_loop=3, micro_batches=micro_batches, checkpoint_every=1000)
    c.model.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    t = Trainer(c, str(workdir), strategy=strategy, progress=False)
    t.train()
    return _weights(t), t


@pytest.fixture(scope="module")
def one_big_batch(mlm_data, tmp_path_factory):
    """The weights after 3 steps of one batch of 8 on a single replica, without accumulation (the
    reference of both replica counts below, trained once)."""
    return _dropout_free_run(mlm_data, tmp_path_factory.mktemp("ref"), None, 1)[0]


@pytest.mark.parametrize("replicas", [1, 2])
def test_accumulation_equals_one_big_batch(mlm_data, one_big_batch, tmp_path, replicas):
    """k micro-batches of b == one batch of k*b, with dropout off, on 1 and 2 replicas; and the same
    weights as a single replica without accumulation (loss normalised by global counts)."""
    reference = one_big_batch
    strategy = _mirrored(replicas) if replicas > 1 else None
    accumulated, t = _dropout_free_run(mlm_data, tmp_path / "acc", strategy, 4 // replicas)
    assert t.strategy.num_replicas_in_sync == replicas
    assert int(t.optimizer.iterations.numpy()) == 3          # one update per k micro-batches
    for a, b in zip(reference, accumulated):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-6)


def test_simbert_similarity_uses_the_global_batch():
    """Loss summed over 2 replicas (each contrasting its rows with the gathered global batch)
    equals the loss of the whole batch on one replica."""
    pooled = tf.random.stateless_normal([8, 16], [3, 4])
    single = {}
    objectives._similarity(single, pooled, None)
    strategy = _mirrored(2)
    values = strategy.experimental_distribute_values_from_function(
        lambda ctx: pooled[4 * ctx.replica_id_in_sync_group:4 * (ctx.replica_id_in_sync_group + 1)])

    @tf.function
    def run(x):
        def fn(p):
            m = {}
            objectives._similarity(m, p, tf.distribute.get_replica_context())
            return m["similarity_loss"]
        return strategy.reduce("SUM", strategy.run(fn, args=(x,)), axis=None)

    np.testing.assert_allclose(run(values).numpy(), single["similarity_loss"].numpy(), rtol=1e-5)
    local_only = {}
    objectives._similarity(local_only, pooled[:4], None)
    assert not np.isclose(local_only["similarity_loss"].numpy() * 2, single["similarity_loss"].numpy())


# ------------------------------------------------------------------------------ resume, SIGTERM

def test_resumed_run_ends_with_the_weights_of_an_uninterrupted_run(mlm_data, six_step_runs, tmp_path):
    full, cut_copy = six_step_runs    # a run to step 6, and one cut at step 4
    # A new trainer (as after a crash): restores model, optimizer, step and the data iterator.
    second = Trainer(tiny_config(mlm_data, steps=6), cut_copy(tmp_path / "cut"), progress=False)
    result = second.train()
    assert result.step == 6
    for a, b in zip(full, _weights(second)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    lines = [json.loads(x) for x in open(tmp_path / "cut" / "metrics.jsonl")]
    assert [x["step"] for x in lines if x["split"] == "train"] == [2, 4, 6]


def test_sigterm_checkpoints_and_exits_cleanly(mlm_data, tmp_path):
    workdir = tmp_path / "run"
    cmd = [sys.executable, "-m", "launch.pretrain", "--config=configs/quickstart.py",
           "--config.data.train_dir=%s" % mlm_data, "--config.model.max_position_embeddings=64",
           "--config.model.hidden_size=32", "--config.model.intermediate_size=64",
           "--config.train.steps=100000", "--config.train.steps_per_loop=5",
           "--config.train.checkpoint_every=100000", "--config.train.global_batch_size=8",
           "--workdir=%s" % workdir]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    deadline = time.time() + 120
    while not (workdir / "metrics.jsonl").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0, out[-2000:]
    assert "Preempted (SIGTERM): checkpoint saved" in out
    ckpt = tf.train.latest_checkpoint(str(workdir / "checkpoints"))
    assert ckpt is not None and int(ckpt.rsplit("-", 1)[1]) % 5 == 0


# --------------------------------------------------------------------------- startup checks

def test_startup_checks(mlm_data, tmp_path):
    with pytest.raises(TrainError, match="divisible by replicas"):
        Trainer(tiny_config(mlm_data, global_batch_size=6, micro_batches=4), str(tmp_path / "a"),
                progress=False)
    c = tiny_config(mlm_data)
    c.task = "unilm"
    with pytest.raises(TrainError, match="holds 'mlm' samples but the run trains task 'unilm'"):
        Trainer(c, str(tmp_path / "b"), progress=False)
    c = tiny_config(mlm_data)
    c.model.vocab_size = 123
    with pytest.raises(TrainError, match="vocab_size=123"):
        Trainer(c, str(tmp_path / "c"), progress=False)
    Trainer(tiny_config(mlm_data, steps=2), str(tmp_path / "d"), progress=False).train()
    c = tiny_config(mlm_data, steps=2)
    c.model.num_hidden_layers = 3
    with pytest.raises(TrainError, match="different config \\(model differ\\)"):
        Trainer(c, str(tmp_path / "d"), progress=False)


@pytest.mark.parametrize("value,message", [("{not json", "not valid JSON"),
                                           ('{"cluster": {}}', "non-empty 'cluster'"),
                                           ('{"cluster": {"worker": ["a:1"]}, "task": {"type": "worker", '
                                            '"index": 3}}', "out of range"),
                                           ('{"cluster": {"worker": ["a"]}, "task": {"type": "worker", '
                                            '"index": 0}}', "has no port")])
def test_malformed_tf_config_is_refused(monkeypatch, value, message):
    monkeypatch.setenv("TF_CONFIG", value)
    with pytest.raises(distribute.StrategyError, match=message):
        distribute.make_strategy("multi_worker_mirrored")


def test_non_chief_checkpoint_dir_is_local_fixed_and_cleared_on_restart(tmp_path):
    chief = distribute.WorkerInfo("worker", 0, 2)
    assert distribute.checkpoint_dir(str(tmp_path / "ckpt"), chief) == (str(tmp_path / "ckpt"), None)
    worker = distribute.WorkerInfo("worker", 1, 2)
    path, tmp = distribute.checkpoint_dir(str(tmp_path / "ckpt"), worker)
    assert path == tmp and not path.startswith(str(tmp_path))
    open(os.path.join(path, "ckpt-4.index"), "w").close()  # left by a worker killed with -9
    again, _ = distribute.checkpoint_dir(str(tmp_path / "ckpt"), worker)
    assert again == path and os.listdir(path) == []
    other, _ = distribute.checkpoint_dir(str(tmp_path / "other"), worker)
    assert other != path
    for p in (path, other):
        os.rmdir(p)


def test_non_finite_updates_are_skipped_then_abort(mlm_data, tmp_path):
    c = tiny_config(mlm_data, steps=20, steps_per_loop=1, checkpoint_every=1, max_nonfinite_in_a_row=2,
                    clip_norm=0.0)
    c.optimizer.update(learning_rate=1e30, warmup_steps=0)
    t = Trainer(c, str(tmp_path / "nan"), progress=False)
    with pytest.raises(TrainError, match="non-finite"):
        t.train()
    assert int(t.state.nonfinite_total.numpy()) >= 1 or not all(np.isfinite(w).all() for w in _weights(t))
    for path in tf.io.gfile.glob(str(tmp_path / "nan" / "checkpoints" / "ckpt-*.index")):
        reader = tf.train.load_checkpoint(path[:-len(".index")])
        for name, dtype in reader.get_variable_to_dtype_map().items():
            if dtype.is_floating:
                assert np.isfinite(reader.get_tensor(name)).all(), name  # never a non-finite model


def test_a_model_only_checkpoint_holds_every_weight(tmp_path):
    """tf.train.Checkpoint follows attributes, not Keras's layer lists: every block must be there."""
    config = modeling.BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=3, num_attention_heads=2,
                                 intermediate_size=16, max_position_embeddings=16)
    import keras
    keras.utils.set_random_seed(1)
    saved = modeling.build_model(config)
    path = tf.train.Checkpoint(model=saved).save(str(tmp_path / "model"))
    keras.utils.set_random_seed(2)
    restored = modeling.build_model(config)
    tf.train.Checkpoint(model=restored).restore(path).assert_consumed()
    assert len(restored.weights) == 3 * 16 + 14   # blocks + embeddings, pooler and heads
    for a, b in zip(saved.weights, restored.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)


@pytest.mark.parametrize("precision", ["bfloat16", "float16"])
def test_mixed_precision_trains_with_float32_weights_and_mask(mlm_data, tmp_path, precision):
    """Compute in the low precision, weights and the -1e9 attention bias in float32 (float16
    cannot hold -1e9), with recompute on; the loss falls as in float32."""
    config = tiny_config(mlm_data, steps=12, steps_per_loop=12, checkpoint_every=12, precision=precision,
                         recompute=True)
    trainer = Trainer(config, str(tmp_path / precision), progress=False)
    assert trainer.model.compute_dtype == precision
    assert all(v.dtype == "float32" for v in trainer.model.weights)
    first = trainer.evaluate(2)["mlm_loss"]
    result = trainer.train()
    assert np.isfinite(result.metrics["loss"]) and result.metrics["nonfinite_updates"] == 0
    assert result.eval_metrics["mlm_loss"] < first
    if precision == "float16":
        assert result.metrics["loss_scale"] == 2.0 ** 15
