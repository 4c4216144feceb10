import shutil

import pytest

from configs import base
from data_pipeline import builder, sources, tasks
from data_pipeline.instances import InstanceConfig


@pytest.fixture(scope="session")
def mlm_data(corpus_dir, wordpiece_vocab, tmp_path_factory):
    out = tmp_path_factory.mktemp("mlm_data")
    builder.build(builder.BuildConfig(
        output_dir=str(out), vocab=wordpiece_vocab, progress=False, num_shards=2, docs_per_chunk=16,
        eval_fraction=0.2, instance=InstanceConfig(seq_len=32),
        source=sources.SourceConfig(inputs=(str(corpus_dir / "en.txt"), str(corpus_dir / "zh.txt")))))
    return str(out)


def tiny_config(data_dir, **train):
    c = base.get_config()
    c.model.update(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                   max_position_embeddings=64)
    c.data.train_dir = data_dir
    c.data.shuffle_buffer = 100
    c.train.update(global_batch_size=8, steps=4, steps_per_loop=2, checkpoint_every=2,
                   eval_every=0, eval_steps=2, clip_norm=1.0)
    c.train.update(**train)
    c.optimizer.update(learning_rate=1e-3, warmup_steps=2, decay_steps=100)
    return c


@pytest.fixture(scope="session")
def six_step_runs(mlm_data, tmp_path_factory):
    """tiny_config's run trained to step 6 uninterrupted, and the same run cut at step 4, made once
    for the resume tests: (the uninterrupted run's final weights, a function that copies the cut
    run's workdir (ckpt-2, ckpt-4, metrics of steps 2 and 4) to a path and returns it, for a test
    to resume or break its own copy)."""
    from pretrain.trainer import Trainer

    root = tmp_path_factory.mktemp("six_step_runs")
    full = Trainer(tiny_config(mlm_data, steps=6), str(root / "full"), progress=False)
    full.train()
    weights = [v.numpy() for v in full.model.weights]
    Trainer(tiny_config(mlm_data, steps=4), str(root / "cut"), progress=False).train()

    def cut_copy(path):
        shutil.copytree(root / "cut", path)
        return str(path)
    return weights, cut_copy


def _task_data(tmp_path_factory, name, inputs, task, **kw):
    out = tmp_path_factory.mktemp(name)
    builder.build(builder.BuildConfig(
        output_dir=str(out), vocab=kw.pop("vocab"), progress=False, num_shards=2, docs_per_chunk=16,
        instance=kw.pop("instance", InstanceConfig(seq_len=32)), task=task,
        source=sources.SourceConfig(inputs=tuple(inputs)), **kw))
    return str(out)


@pytest.fixture(scope="session")
def task_data(corpus_dir, wordpiece_vocab, seq2seq_jsonl, groups_jsonl, tmp_path_factory):
    """{name: data directory} for every sample type the trainer takes: MLM packed and in sentence
    pairs (NSP), UniLM, causal LM and SimBERT groups, all seq 32."""
    text = (str(corpus_dir / "en.txt"), str(corpus_dir / "zh.txt"))
    return {
        "mlm_pairs": _task_data(tmp_path_factory, "pairs", text, tasks.TaskConfig(),
                                vocab=wordpiece_vocab, instance=InstanceConfig(seq_len=32, layout="pairs")),
        "unilm": _task_data(tmp_path_factory, "unilm", [seq2seq_jsonl],
                            tasks.TaskConfig(task="unilm", max_target_len=12), vocab=wordpiece_vocab),
        "lm": _task_data(tmp_path_factory, "lm", text, tasks.TaskConfig(task="lm"), vocab=wordpiece_vocab),
        "simbert": _task_data(tmp_path_factory, "simbert", [groups_jsonl], tasks.TaskConfig(task="simbert"),
                              vocab=wordpiece_vocab),
    }
