"""launch.run with real training: 2 MultiWorkerMirrored workers on this machine (1 CPU each) train
like one process, survive a kill -9 of one worker, and checkpoint on SIGTERM."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from data_pipeline import loader
from pretrain import distribute
from pretrain.trainer import TrainError, Trainer
from tests.launch import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
STEPS = 60          # long enough to be stopped in the middle after the first progress line
_LAUNCHED = []


@pytest.fixture(autouse=True)
def _no_launcher_left_running():
    yield
    for proc in _LAUNCHED:   # after a failed assertion: its workers die with it (PR_SET_PDEATHSIG)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    _LAUNCHED.clear()


def _launch(run, master_port, data_dir, *overrides, max_restarts=0):
    """launch.run with 2 workers training tests/launch/tiny.py into `run`; output in run/logs."""
    os.makedirs(run / "logs", exist_ok=True)
    cmd = [sys.executable, "-m", "launch.run", "--nproc_per_node=2", "--master_port=%d" % master_port,
           "--max_restarts=%d" % max_restarts, "--log_dir=%s" % (run / "logs"), "--stop_timeout=60",
           "-m", "launch.pretrain", "--config=tests/launch/tiny.py:%s" % data_dir,
           "--config.train.steps=%d" % STEPS, "--workdir=%s" % run] + list(overrides)
    env = dict(os.environ, PYTHONPATH=ROOT, CUDA_VISIBLE_DEVICES="")   # CPU, like the reference
    with open(run / "logs" / "launcher.out", "ab") as out:
        _LAUNCHED.append(subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=env))
    return _LAUNCHED[-1]


def _log(run, name="launcher.out"):
    path = run / "logs" / name
    return path.read_text(errors="replace") if path.exists() else ""


def _logs(run):
    return "\n".join("--- %s\n%s" % (n, _log(run, n)[-3000:])
                     for n in ("launcher.out", "rank_0.log", "rank_1.log"))


def _wait_for(condition, what, timeout=240):
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out waiting for %s" % what
        time.sleep(0.05)


def _train_steps(run):
    path = run / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.exists() else []
    reports = [json.loads(x) for x in lines if x.endswith("}")]   # not a line being written
    return [r["step"] for r in reports if r["split"] == "train"]


def _assert_same_weights(checkpoint, reference):
    """Every variable of the two checkpoints (model, optimizer slots, step), to round-off."""
    def variables(path):   # save_counter counts this process's saves, which may differ
        return sorted(n for n, _ in tf.train.list_variables(path)
                      if n.endswith("VARIABLE_VALUE") and not n.startswith("save_counter"))
    got, want = tf.train.load_checkpoint(checkpoint), tf.train.load_checkpoint(reference)
    names = variables(reference)
    assert len(names) > 100 and names == variables(checkpoint)
    for name in names:
        np.testing.assert_allclose(got.get_tensor(name), want.get_tensor(name), rtol=1e-4, atol=1e-6,
                                   err_msg=name)


def _reference(data_dir, workdir, streams=None):
    """The same config trained by this (single) process on CPU; returns its final checkpoint.
    `streams`: per-worker datasets whose rows one update concatenates (worker_split="files")."""
    c = tiny.get_config(data_dir)
    c.train.steps, c.distribute.name = STEPS, "default"
    t = Trainer(c, str(workdir), strategy=distribute.make_strategy("one_device", device="/cpu:0"),
                progress=False)
    if streams:
        t.iterator = iter(tf.data.Dataset.zip(tuple(streams(t.manifest, c))).map(
            lambda *parts: {k: tf.concat([p[k] for p in parts], 0) for k in parts[0]}))
    t.train()
    return tf.train.latest_checkpoint(str(workdir / "checkpoints"))


@pytest.fixture(scope="module")
def rows_reference(mlm_data, tmp_path_factory):
    return _reference(mlm_data, tmp_path_factory.mktemp("reference_rows"))


def _file_streams(manifest, c):
    """What each of 2 workers reads with worker_split="files": its own file(s), 4 rows a batch."""
    return [loader.make_dataset(manifest, batch_size=c.train.global_batch_size // 2, seed=c.seed,
                                shuffle_buffer=c.data.shuffle_buffer,
                                input_context=tf.distribute.InputContext(2, worker, 2))
            for worker in (0, 1)]


def test_two_workers_train_like_one_process(mlm_data, tmp_path, master_port, rows_reference):
    run = tmp_path / "run"
    launcher = _launch(run, master_port, mlm_data, "--config.data.worker_split=rows")
    assert launcher.wait(timeout=300) == 0, _logs(run)
    assert "all 2 worker(s) finished" in _log(run), _logs(run)
    assert "finished at step %d" % STEPS in _log(run, "rank_0.log")
    checkpoint = tf.train.latest_checkpoint(str(run / "checkpoints"))
    assert checkpoint.endswith("ckpt-%d" % STEPS)
    _assert_same_weights(checkpoint, rows_reference)


def test_killed_worker_restarts_every_worker_and_resumes_exactly(mlm_data, tmp_path, master_port):
    """worker_split="files" (the default): each worker restores its own data position."""
    run = tmp_path / "run"
    launcher = _launch(run, master_port, mlm_data, max_restarts=1)
    _wait_for(lambda: "rank 1 pid" in _log(run), "the workers to start")
    rank1 = int(re.search(r"rank 1 pid (\d+)", _log(run)).group(1))
    _wait_for(lambda: (run / "checkpoints" / "ckpt-8.index").exists() or launcher.poll() is not None,
              "a checkpoint")
    os.kill(rank1, signal.SIGKILL)
    reached = max(_train_steps(run))
    assert reached < STEPS, "the run finished before the kill; make it longer"
    assert launcher.wait(timeout=300) == 0, _logs(run)
    out = _log(run)
    assert "rank 1: killed by SIGKILL" in out and "restarting all workers (restart 1 of 1)" in out, out
    assert re.search(r"attempt 1: rank 0 pid \d+, rank 1 pid \d+", out), out
    resumed = int(re.search(r"Resumed from \S+ckpt-(\d+) \(step", _log(run, "rank_0.log")).group(1))
    assert reached - 4 <= resumed <= reached          # at most one checkpoint interval (4) repeated
    steps = _train_steps(run)
    assert steps[-1] == STEPS and steps[steps.index(reached) + 1] == resumed + 2
    assert sorted(os.listdir(run / "checkpoints" / "data-worker-1-of-2"))   # its own data position
    reference = _reference(mlm_data, tmp_path / "reference", streams=_file_streams)
    _assert_same_weights(tf.train.latest_checkpoint(str(run / "checkpoints")), reference)
    # One process cannot take over the two workers' data positions.
    c = tiny.get_config(mlm_data)
    c.train.steps, c.distribute.name = STEPS + 4, "default"
    with pytest.raises(TrainError, match=r"reading their own files \(data-worker-0-of-2, "
                                         r"data-worker-1-of-2, .*resume it with that many workers"):
        Trainer(c, str(run), progress=False).train()


def test_sigterm_checkpoints_and_a_relaunch_resumes(mlm_data, tmp_path, master_port, rows_reference):
    run = tmp_path / "run"
    args = ("--config.data.worker_split=rows", "--config.train.checkpoint_every=1000")
    launcher = _launch(run, master_port, mlm_data, *args)
    _wait_for(lambda: _train_steps(run) or launcher.poll() is not None, "training to start")
    launcher.send_signal(signal.SIGTERM)
    assert launcher.wait(timeout=120) == 128 + signal.SIGTERM, _logs(run)
    out = _log(run)
    assert "rank 0: exit code 0" in out and "rank 1: exit code 0" in out, out
    saved = int(re.search(r"Preempted \(SIGTERM\): checkpoint saved at step (\d+)",
                          _log(run, "rank_0.log")).group(1))
    assert 0 < saved < STEPS
    assert tf.train.latest_checkpoint(str(run / "checkpoints")).endswith("ckpt-%d" % saved)

    relaunch = _launch(run, master_port, mlm_data, *args)
    assert relaunch.wait(timeout=300) == 0, _logs(run)
    assert "Resumed from %s (step %d)" % (run / "checkpoints" / ("ckpt-%d" % saved), saved) \
        in _log(run, "rank_0.log")
    _assert_same_weights(tf.train.latest_checkpoint(str(run / "checkpoints")), rows_reference)


def test_single_process_strategies_and_bad_worker_splits_are_refused(mlm_data, tmp_path, monkeypatch):
    """launch.run sets TF_CONFIG: a single-process strategy would train W separate models."""
    monkeypatch.setenv("TF_CONFIG", '{"cluster": {"worker": ["localhost:1", "localhost:2"]}, '
                                    '"task": {"type": "worker", "index": 1}}')
    for name in ("default", "mirrored"):
        with pytest.raises(distribute.StrategyError, match="TF_CONFIG describes 2 workers but "
                           "strategy '%s' trains in this process alone" % name):
            distribute.make_strategy(name)
    monkeypatch.delenv("TF_CONFIG")
    c = tiny.get_config(mlm_data)
    c.distribute.name, c.data.worker_split = "default", "lines"
    with pytest.raises(TrainError, match="data.worker_split='lines': must be one of files, rows"):
        Trainer(c, str(tmp_path / "run"), progress=False)
