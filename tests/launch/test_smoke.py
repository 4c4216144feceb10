"""The main path end to end through the command-line entry points, as a user runs it: vocabulary,
shards, pretraining with the whole update compiled by XLA (as on a TPU), resume, export, and
loading the export for fine-tuning.

Marked `smoke`: .ci/run also runs this subset on the TensorFlow that TPU VMs run
(requirements-tpu.txt's version, CPU build), so the project is known to work on it.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--config.model.hidden_size=32", "--config.model.num_hidden_layers=2",
        "--config.model.num_attention_heads=2", "--config.model.intermediate_size=64",
        "--config.model.max_position_embeddings=64", "--config.train.global_batch_size=8",
        "--config.train.steps_per_loop=2", "--config.train.checkpoint_every=2",
        "--config.train.eval_every=0", "--config.train.eval_steps=2",
        "--config.train.jit_compile=true", "--config.optimizer.warmup_steps=2"]


def _cli(*args):
    done = subprocess.run([sys.executable, "-m"] + list(args), cwd=ROOT, capture_output=True,
                          text=True, timeout=600,
                          env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == 0, "%s failed:\n%s" % (args[0], done.stderr[-3000:])
    return done.stderr


@pytest.mark.smoke
def test_build_train_with_xla_resume_export_and_load(corpus_dir, tmp_path):
    corpus = "%s,%s" % (corpus_dir / "en.txt", corpus_dir / "zh.txt")
    vocab, data, run = tmp_path / "vocab.txt", tmp_path / "data", tmp_path / "run"
    _cli("launch.build_vocab", "--input=%s" % corpus, "--output=%s" % vocab, "--vocab_size=800",
         "--min_frequency=1")
    _cli("launch.build_data", "--input=%s" % corpus, "--vocab=%s" % vocab, "--output_dir=%s" % data,
         "--seq_len=32", "--num_shards=2", "--eval_fraction=0.2", "--docs_per_chunk=16", "--noprogress")
    train = ["launch.pretrain", "--config=configs/quickstart.py", "--config.data.train_dir=%s" % data,
             "--workdir=%s" % run] + TINY
    _cli(*train, "--config.train.steps=4")
    log = _cli(*train, "--config.train.steps=6")          # a second run resumes the first
    assert "Resumed from %s" % (run / "checkpoints" / "ckpt-4") in log
    rows = [json.loads(line) for line in open(run / "metrics.jsonl")]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert [r["step"] for r in train_rows] == [2, 4, 6]
    assert all(np.isfinite(r["loss"]) and r["nonfinite_updates"] == 0 for r in train_rows)
    assert any(r["split"] == "eval" and r["step"] == 6 for r in rows)

    export = tmp_path / "export"
    _cli("launch.export", "--workdir=%s" % run, "--output=%s" % export)
    manifest = json.load(open(export / "export_manifest.json"))
    assert manifest["source"]["step"] == 6

    from downstream import build_transformer_model, load_finetune_tokenizer
    from pretrain.export_dir import ExportDir

    directory = ExportDir(str(export))
    vocab_size = json.load(open(directory.config_path))["vocab_size"]
    model = build_transformer_model(directory.config_path, directory.prefix, with_mlm=True)
    tokenizer = load_finetune_tokenizer(directory.vocab_path)
    token_ids, segment_ids = tokenizer.encode("the data pipeline builds shards")
    probabilities = model.predict([np.array([token_ids]), np.array([segment_ids])], verbose=0)
    assert probabilities.shape == (1, len(token_ids), vocab_size)
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-4)
