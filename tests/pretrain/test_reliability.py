"""What a run promises when things break: an unreadable checkpoint is skipped (and kept), shards
that differ from the manifest are named (or left out when asked), repeated metrics rows are
dropped on resume, every report has a time, and the ETA counts this process's own pace."""

import glob
import json
import os
import resource
import shutil
import socket

import numpy as np
import pytest

from data_pipeline import builder, sources
from data_pipeline.instances import InstanceConfig
from data_pipeline.manifest import Manifest
from pretrain import distribute, reporting
from pretrain.rundir import RunDir
from pretrain.trainer import TrainError, Trainer
from tests.conftest import mirrored
from tests.pretrain.conftest import tiny_config


def _weights(trainer):
    return [v.numpy() for v in trainer.model.weights]


def _data_copy(mlm_data, tmp_path):
    copy = tmp_path / "data"
    shutil.copytree(mlm_data, copy)
    return str(copy), Manifest.load(str(copy))


def test_an_unreadable_newest_checkpoint_is_skipped_and_kept(mlm_data, six_step_runs, tmp_path, capsys):
    full, cut_copy = six_step_runs    # a run to step 6, and one cut at step 4
    workdir = cut_copy(tmp_path / "run")                                       # ckpt-2, ckpt-4
    data = glob.glob(os.path.join(workdir, "checkpoints", "ckpt-4.data-*"))[0]
    with open(data, "r+b") as f:
        f.truncate(os.path.getsize(data) // 2)                                 # a torn write
    resumed = Trainer(tiny_config(mlm_data, steps=6), workdir, progress=True)
    result = resumed.train()
    err = capsys.readouterr().err
    assert "Checkpoint %s cannot be read" % RunDir(workdir).checkpoint(4) in err
    assert "Resumed from %s (step 2)" % RunDir(workdir).checkpoint(2) in err
    assert result.step == 6
    for a, b in zip(full, _weights(resumed)):   # the run still ends where it should
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
    kept = glob.glob(os.path.join(workdir, "checkpoints", "ckpt-4.unreadable-*.data-*"))
    assert len(kept) == 1 and os.path.getsize(kept[0]) == os.path.getsize(data) // 2
    assert RunDir(workdir).checkpoint_steps()[-1] == 6


def test_a_run_whose_checkpoints_are_all_unreadable_refuses_to_start_over(mlm_data, tmp_path):
    workdir = str(tmp_path / "run")
    Trainer(tiny_config(mlm_data, steps=2), workdir, progress=False).train()
    for index in glob.glob(os.path.join(workdir, "checkpoints", "ckpt-*.index")):
        open(index, "wb").close()
    with pytest.raises(TrainError, match="None of the checkpoints in .* can be read"):
        Trainer(tiny_config(mlm_data, steps=4), workdir, progress=False).train()


def test_a_truncated_shard_is_named_or_left_out_when_asked(mlm_data, tmp_path):
    data_dir, manifest = _data_copy(mlm_data, tmp_path)
    shard = manifest.paths("train")[1]
    with open(shard, "r+b") as f:
        f.truncate(100)
    with pytest.raises(TrainError) as e:
        Trainer(tiny_config(data_dir), str(tmp_path / "run"), progress=False)
    assert "1 shard(s) of %s do not match its manifest: %s: 100 bytes, %d when built (truncated " \
           "or replaced)" % (data_dir, shard, manifest.splits["train"].shards[1].bytes) in str(e.value)
    assert "--config.data.skip_bad_shards=true" in str(e.value)
    c = tiny_config(data_dir, steps=2)
    c.data.skip_bad_shards = True
    trainer = Trainer(c, str(tmp_path / "run"), progress=False)
    assert trainer.skipped_shards == [shard] and trainer.manifest.paths("train") == [manifest.paths("train")[0]]
    result = trainer.train()
    assert result.step == 2 and result.metrics["skipped_shards"] == 1


def test_a_shard_with_changed_bytes_is_named_when_read_then_left_out(mlm_data, tmp_path):
    """Same size, flipped bytes: found when the records are read (CRC), named by its checksum."""
    data_dir, manifest = _data_copy(mlm_data, tmp_path)
    shard = manifest.paths("train")[0]
    raw = bytearray(open(shard, "rb").read())
    raw[len(raw) // 2] ^= 0xFF
    open(shard, "wb").write(bytes(raw))
    steps = 4 * manifest.splits["train"].examples // 8     # every record is read (4 passes)
    with pytest.raises(TrainError) as e:
        Trainer(tiny_config(data_dir, steps=steps, steps_per_loop=50, checkpoint_every=1000),
                str(tmp_path / "run"), progress=False).train()
    assert "reading the train data failed" in str(e.value)
    assert "these shards differ from the manifest: %s: CRC32C" % shard in str(e.value)
    c = tiny_config(data_dir, steps=4, steps_per_loop=2)
    c.data.skip_bad_shards = True      # the relaunch checks every shard's CRC32C and leaves it out
    trainer = Trainer(c, str(tmp_path / "run"), progress=False)
    assert trainer.skipped_shards == [shard]
    result = trainer.train()
    assert result.step == 4 and result.metrics["skipped_shards"] == 1


def test_repeated_metrics_rows_are_dropped_and_every_row_has_a_time(mlm_data, tmp_path, capsys):
    workdir = str(tmp_path / "run")
    c = tiny_config(mlm_data, steps=4, eval_every=2)
    Trainer(c, workdir, progress=False).train()
    rundir = RunDir(workdir)
    with open(rundir.metrics, "a") as f:   # written by a run killed before it checkpointed step 6
        f.write(json.dumps({"split": "train", "step": 6, "loss": 1.0, "time": 9.0}) + "\n")
    Trainer(tiny_config(mlm_data, steps=6, eval_every=2), workdir, progress=True).train()
    assert "Dropped 1 metrics row(s) after step 4" in capsys.readouterr().err
    rows = rundir.metrics_rows()
    assert [r["step"] for r in rows if r["split"] == "train"] == [2, 4, 6]
    assert [r["step"] for r in rows if r["split"] == "eval"] == [2, 4, 6]
    assert all(r["time"] > 0 for r in rows)                  # eval rows too (they were all 0)
    assert [r for r in rows if r["split"] == "train"][-1]["loss"] != 1.0


def test_the_eta_counts_the_steps_of_this_process(tmp_path, capsys, monkeypatch):
    reporter = reporting.Reporter(RunDir(str(tmp_path)), total_steps=1_000_000, enabled=True,
                                  progress=True)
    now = [1000.0]   # a clock of our own: a loaded machine must not move the ETA
    monkeypatch.setattr(reporting.time, "time", lambda: now[0])
    reporter.start(500_000)                      # a run resumed half-way
    now[0] += 10.0                               # ... that has run 100 steps in 10 s since
    metrics = {"loss": 1.0, "mlm_accuracy": 0.5, "lr": 1e-4, "examples_per_s": 1.0, "tokens_per_s": 1.0}
    reporter.report(metrics, "train", 500_100)
    # 499,900 steps left at 0.1 s each: 13:53:10 (not the 0:00:10 of "elapsed / all steps").
    assert "ETA 13:53:" in capsys.readouterr().err


def test_counters_travel_through_float32_collectives_exactly():
    """The stop and resume-step agreement all-gathers float32 pairs (NCCL has no int32
    all-reduce, TPUs no int64): large steps must come back exactly."""
    for value in (0, 1, (1 << 24) - 1, 1 << 24, 2 ** 40 + 12345, (1 << 48) - 1):
        np.testing.assert_array_equal(distribute.gather_int(mirrored(2), value), [value, value])
    with pytest.raises(ValueError):
        distribute.gather_int(mirrored(2), 1 << 48)


def test_a_full_disk_while_checkpointing_is_one_error_and_leaves_no_partial_checkpoint(mlm_data, tmp_path):
    """Files stop growing at 64 KiB (RLIMIT_FSIZE: a write past it fails, as on a full disk): the
    first checkpoint's data file cannot be written."""
    workdir = str(tmp_path / "run")
    trainer = Trainer(tiny_config(mlm_data, steps=2), workdir, progress=False)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        with pytest.raises(TrainError) as e:
            trainer.train()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    message = str(e.value)
    assert "\n" not in message and message.startswith(
        "cannot save the checkpoint of step 2 in %s (" % RunDir(workdir).checkpoints), message
    assert "its partial files were removed" in message and "it resumes from the start" in message
    assert not [n for n in os.listdir(RunDir(workdir).checkpoints) if n.startswith("ckpt-")]
    assert RunDir(workdir).checkpoint_steps() == []


def test_build_data_overwrite_refuses_the_data_of_a_live_run_and_a_resume_refuses_a_rebuild(
        mlm_data, corpus_dir, wordpiece_vocab, tmp_path):
    data_dir, manifest = _data_copy(mlm_data, tmp_path)
    rebuild = builder.BuildConfig(   # `build_data --overwrite` with another seed
        output_dir=data_dir, vocab=wordpiece_vocab, progress=False, num_shards=2, docs_per_chunk=16,
        eval_fraction=0.2, instance=InstanceConfig(seq_len=32), seed=1, overwrite=True,
        source=sources.SourceConfig(inputs=(str(corpus_dir / "en.txt"), str(corpus_dir / "zh.txt"))))
    workdir = str(tmp_path / "run")
    trainer = Trainer(tiny_config(data_dir, steps=2), workdir, progress=False)
    save, refused = trainer.checkpoints.save, []

    def rebuild_then_save(step, weights):
        with pytest.raises(builder.BuildError) as e:
            builder.build(rebuild)
        refused.append(str(e.value))
        return save(step, weights)

    trainer.checkpoints.save = rebuild_then_save
    trainer.train()
    assert len(refused) == 1
    assert refused[0].startswith("--overwrite would replace the data that a run reads: %s is read by "
                                 "pid %d on %s (launch.pretrain into %s, started " % (
                                     data_dir, os.getpid(), socket.gethostname(), workdir))
    assert Manifest.load(data_dir).fingerprint == manifest.fingerprint
    assert RunDir(workdir).data_build() == {"train_dir": data_dir, "fingerprint": manifest.fingerprint}

    rebuilt = builder.build(rebuild)   # the run has ended: the overwrite goes ahead
    assert rebuilt.fingerprint != manifest.fingerprint
    with pytest.raises(TrainError) as e:
        Trainer(tiny_config(data_dir, steps=4), workdir, progress=False)
    assert "%s holds another data build (%s) than the one this run trained on (build %s of %s). " \
           "Rebuild the original data there" % (data_dir, rebuilt.fingerprint, manifest.fingerprint,
                                                 data_dir) in str(e.value)
    assert "new --workdir" in str(e.value)


def test_a_run_stops_when_its_data_is_rebuilt_while_it_trains(mlm_data, tmp_path):
    data_dir, manifest = _data_copy(mlm_data, tmp_path)
    workdir = str(tmp_path / "run")
    trainer = Trainer(tiny_config(data_dir, steps=6, eval_every=4), workdir, progress=False)
    save = trainer.checkpoints.save

    def save_then_rebuild(step, weights):   # a rebuild finishes by writing its manifest
        path = save(step, weights)
        record = json.load(open(os.path.join(data_dir, "manifest.json")))
        record["fingerprint"] = "0123456789abcdef"
        json.dump(record, open(os.path.join(data_dir, "manifest.json"), "w"))
        return path

    trainer.checkpoints.save = save_then_rebuild
    with pytest.raises(TrainError) as e:
        trainer.train()
    assert str(e.value).startswith("%s was rebuilt while this run trained on it (build %s; now "
                                   "0123456789abcdef). The run stopped without saving"
                                   % (data_dir, manifest.fingerprint))
    assert RunDir(workdir).checkpoint_steps() == [2]
    assert [r["split"] for r in RunDir(workdir).metrics_rows()] == ["train", "train"]   # no eval at 4
