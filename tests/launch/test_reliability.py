"""The entry points under abuse, as a user meets it: one run per workdir (and a killed holder does
not block the relaunch), Ctrl-C saves, one build per output directory, workers that die with
their parent, garbage for a vocabulary (WordPiece or SentencePiece), an unwritable output or a
full disk, typos that fail before TensorFlow loads, and no start-up noise."""

import dataclasses
import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from data_pipeline import builder, sources, tfrecord
from data_pipeline.instances import InstanceConfig
from storage.lock import DirectoryLock
from tests.tf_noise import env_without_log_level, start_up_noise

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TINY = ["--config.model.hidden_size=32", "--config.model.num_hidden_layers=1",
        "--config.model.num_attention_heads=2", "--config.model.intermediate_size=64",
        "--config.model.max_position_embeddings=64", "--config.train.global_batch_size=8",
        "--config.train.steps_per_loop=2", "--config.train.eval_steps=1",
        "--config.optimizer.warmup_steps=2"]


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=ROOT, **extra)
    return env


def _pretrain(data, workdir, *args, **popen):
    cmd = [sys.executable, "-m", "launch.pretrain", "--config=configs/quickstart.py",
           "--config.data.train_dir=%s" % data, "--workdir=%s" % workdir] + TINY + list(args)
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(TF_CPP_MIN_LOG_LEVEL="2"), **popen)


def _wait_for(path, proc, seconds=180):
    deadline = time.time() + seconds
    while not os.path.exists(path) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert os.path.exists(path), proc.communicate()[1][-3000:] if proc.poll() is not None else path


def test_a_second_run_on_a_workdir_is_refused_and_a_killed_one_does_not_block(mlm_data, tmp_path):
    workdir = tmp_path / "run"
    first = _pretrain(mlm_data, workdir, "--config.train.steps=100000",
                      "--config.train.checkpoint_every=100000")
    try:
        _wait_for(workdir / "metrics.jsonl", first)
        second = _pretrain(mlm_data, workdir, "--config.train.steps=4")
        _, err = second.communicate(timeout=180)
        assert second.returncode == 2, err[-2000:]
        assert "pretrain: error: %s is in use by pid %d on %s (launch.pretrain" % (
            workdir, first.pid, socket.gethostname()) in err
    finally:
        first.send_signal(signal.SIGKILL)
        first.communicate()
    relaunch = _pretrain(mlm_data, workdir, "--config.train.steps=4")
    _, err = relaunch.communicate(timeout=300)
    assert relaunch.returncode == 0, err[-3000:]
    assert "Taking over the lock of %s from pid %d" % (workdir, first.pid) in err


def test_ctrl_c_checkpoints_at_the_loop_boundary_and_a_relaunch_resumes(mlm_data, tmp_path):
    workdir = tmp_path / "run"
    proc = _pretrain(mlm_data, workdir, "--config.train.steps=100000",
                     "--config.train.checkpoint_every=100000")
    _wait_for(workdir / "metrics.jsonl", proc)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=180)
    assert proc.returncode == 130, err[-2000:]
    assert "Interrupted (Ctrl-C): checkpoint saved at step" in err and "Traceback" not in err
    step = int(err.split("Interrupted (Ctrl-C): checkpoint saved at step ")[1].split(";")[0])
    assert step % 2 == 0 and os.path.exists(workdir / "checkpoints" / ("ckpt-%d.index" % step))
    resumed = _pretrain(mlm_data, workdir, "--config.train.steps=%d" % (step + 2))
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0 and "(step %d)" % step in err, err[-2000:]


def _config(corpus_dir, vocab, out, **kw):
    return builder.BuildConfig(output_dir=str(out), vocab=vocab, progress=False, num_shards=3,
                               docs_per_chunk=4, instance=InstanceConfig(seq_len=64),
                               source=sources.SourceConfig(inputs=(str(corpus_dir / "en.txt"),)), **kw)


def test_a_build_warns_when_the_vocabulary_does_not_cover_the_text(corpus_dir, wordpiece_vocab, tmp_path,
                                                                    capsys):
    """Korean under the tests' English + Chinese vocabulary is mostly [UNK]: the summary says so
    (the shards and the manifest's fields are what they would be without the count)."""
    korean = tmp_path / "ko.txt"
    korean.write_text("".join("안녕하세요 세계 %d 좋은 아침입니다.\n오늘은 데이터를 만듭니다.\n\n" % i
                              for i in range(40)), encoding="utf-8")
    config = dataclasses.replace(_config(corpus_dir, wordpiece_vocab, tmp_path / "ko"), progress=True,
                                 source=sources.SourceConfig(inputs=(str(korean),)))
    manifest = builder.build(config)
    assert "of the tokens of the training text are [UNK]" in capsys.readouterr().err
    assert "unknown_tokens" not in manifest.stats and "tokens_read" not in manifest.stats
    builder.build(dataclasses.replace(_config(corpus_dir, wordpiece_vocab, tmp_path / "en"), progress=True))
    assert "[UNK]" not in capsys.readouterr().err


def test_a_second_build_on_an_output_directory_is_refused(corpus_dir, wordpiece_vocab, tmp_path):
    out = tmp_path / "data"
    holder = DirectoryLock(str(out), "launch.build_data").acquire()
    try:
        with pytest.raises(builder.BuildError, match="another build writes here: .* is in use by pid "
                                                     "%d" % os.getpid()):
            builder.build(_config(corpus_dir, wordpiece_vocab, out))
    finally:
        holder.release()
    assert builder.build(_config(corpus_dir, wordpiece_vocab, out)).splits["train"].examples > 0


def _children(pid):
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            return [int(c) for c in f.read().split()]
    except OSError:
        return []


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM])
def test_build_workers_die_with_the_build(corpus_dir, wordpiece_vocab, tmp_path, signum):
    big = tmp_path / "big.txt"
    text = (corpus_dir / "en.txt").read_text()
    with open(big, "w") as f:
        for _ in range(400):
            f.write(text + "\n")
    proc = subprocess.Popen([sys.executable, "-m", "launch.build_data", "--input=%s" % big,
                             "--vocab=%s" % wordpiece_vocab, "--output_dir=%s" % (tmp_path / "out"),
                             "--num_workers=2", "--noprogress"], cwd=ROOT, env=_env(),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while len(_children(proc.pid)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    workers = _children(proc.pid)
    assert len(workers) >= 2, "the build ended before its workers could be seen"
    proc.send_signal(signum)
    proc.wait(timeout=30)
    deadline = time.time() + 10
    while any(os.path.exists("/proc/%d" % w) and _state(w) != "Z" for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert not [w for w in workers if os.path.exists("/proc/%d" % w) and _state(w) != "Z"]


def _state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return "Z"


def test_build_vocab_refuses_binary_garbage_and_never_exceeds_the_size(corpus_dir, tmp_path):
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(os.urandom(200_000))
    done = subprocess.run([sys.executable, "-m", "launch.build_vocab", "--input=%s" % garbage,
                           "--output=%s" % (tmp_path / "v" / "vocab.txt"), "--vocab_size=1000"],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "invalid UTF-8 or JSON, more than --max_bad_line_fraction" in done.stderr
    assert not os.path.exists(tmp_path / "v" / "vocab.txt")
    zh = str(corpus_dir / "zh.txt")        # more distinct characters than the size asked
    done = subprocess.run([sys.executable, "-m", "launch.build_vocab", "--input=%s" % zh,
                           "--output=%s" % (tmp_path / "zh" / "vocab.txt"), "--vocab_size=120",
                           "--min_frequency=1"], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert len(open(tmp_path / "zh" / "vocab.txt", encoding="utf-8").read().splitlines()) == 120


def test_build_vocab_sentencepiece_refuses_binary_garbage_as_wordpiece_does(tmp_path):
    """SentencePiece fails on binary input with an error of its own (more characters than the
    vocabulary size); the is-this-text check is what the user is shown."""
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(os.urandom(200_000))
    done = subprocess.run([sys.executable, "-m", "launch.build_vocab", "--kind=sentencepiece",
                           "--input=%s" % garbage, "--output=%s" % (tmp_path / "v" / "sp.model"),
                           "--vocab_size=1000"], cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "invalid UTF-8 or JSON, more than --max_bad_line_fraction" in done.stderr, done.stderr
    assert "INTERNAL" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert not os.path.exists(tmp_path / "v" / "sp.model")


def test_an_unwritable_output_fails_before_reading_the_input(corpus_dir, wordpiece_vocab):
    start = time.time()
    with pytest.raises(builder.BuildError, match="cannot write to --output_dir=/proc/no/such/dir"):
        builder.build(_config(corpus_dir, wordpiece_vocab, "/proc/no/such/dir"))
    assert time.time() - start < 5


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(corpus_dir, wordpiece_vocab, tmp_path,
                                                             monkeypatch):
    writes = []
    real = tfrecord.RecordFile.write

    def full(self, framed):
        writes.append(1)
        if len(writes) > 3:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(self, framed)

    monkeypatch.setattr(tfrecord.RecordFile, "write", full)
    out = tmp_path / "data"
    with pytest.raises(builder.BuildError) as e:
        builder.build(_config(corpus_dir, wordpiece_vocab, out))
    message = str(e.value)
    assert "\n" not in message and "No space left on device" in message
    assert "cannot write %s" % out in message and ".tfrecord.tmp" in message
    assert not [n for n in os.listdir(out) if ".tmp" in n]
    assert not os.path.exists(out / "manifest.json")


def test_a_mistyped_setting_fails_before_tensorflow_loads(tmp_path):
    for args, message in ((["--config.data.train_dir=/no/such/data"], "/no/such/data has no manifest.json"),
                          (["--config.train.steps_per_loop=0"], "train.steps_per_loop=0: must be an integer >= 1"),
                          (["--config.train.nonsense=1"], "--config.train.nonsense: no such field"),
                          (["--config.train.keep_checkpoints=0", "--config.train.checkpoint_every=0"],
                           "train.checkpoint_every=0")):
        done = subprocess.run([sys.executable, "-X", "importtime", "-m", "launch.pretrain",
                               "--config=configs/quickstart.py", "--workdir=%s" % tmp_path] + args,
                              cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and message in done.stderr, done.stderr[-2000:]
        assert " tensorflow\n" not in done.stderr and "| tensorflow" not in done.stderr
        assert "Traceback" not in done.stderr


def test_no_tensorflow_start_up_noise_unless_asked(mlm_data, tmp_path):
    env = env_without_log_level(PYTHONPATH=ROOT)
    cmd = [sys.executable, "-m", "launch.pretrain", "--config=configs/quickstart.py",
           "--config.data.train_dir=%s" % mlm_data, "--workdir=%s" % (tmp_path / "run"),
           "--config.train.steps=2"] + TINY
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert not start_up_noise(done.stderr), start_up_noise(done.stderr)
    verbose = subprocess.run(cmd + ["--verbose", "--config.train.steps=4"], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
    # What TensorFlow prints depends on the CPU (oneDNN's line only where it enables oneDNN:
    # AVX-512 and newer); some of it must show.
    assert verbose.returncode == 0 and start_up_noise(verbose.stderr), verbose.stderr[-2000:]
    rows = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    assert [r["step"] for r in rows if r["split"] == "train"] == [2, 4]


def _one_line_error(done, program):
    """The command failed with exit 2 and one line of error (no traceback, no escaped text)."""
    lines = [line for line in done.stderr.strip().splitlines() if not line.startswith("import time:")]
    assert done.returncode == 2 and len(lines) == 1, done.stderr[-3000:]
    assert lines[0].startswith("%s: error: " % program) and "\\n" not in lines[0] and "\\'" not in lines[0]
    return lines[0]


def _run(module, *args):
    """`python -m module args` as a user runs it (TensorFlow's start-up noise hidden), with the
    modules it imports listed (-X importtime)."""
    return subprocess.run([sys.executable, "-X", "importtime", "-m", module] + list(args), cwd=ROOT,
                          env=env_without_log_level(PYTHONPATH=ROOT), capture_output=True, text=True,
                          timeout=120)


def _tensorflow_loaded(done):
    return " tensorflow\n" in done.stderr or "| tensorflow" in done.stderr


def test_a_mistyped_config_section_names_the_flag_and_the_closest_field(tmp_path):
    done = _run("launch.pretrain", "--config=configs/quickstart.py", "--workdir=%s" % tmp_path,
                "--config.trian.steps=3")
    assert _one_line_error(done, "pretrain") == ("pretrain: error: --config.trian.steps: no such field "
                                                 "in the config; did you mean --config.train.steps?")
    # build_data's default config takes its overrides as its flag is defined, not when flags parse
    done = _run("launch.build_data", "--config.instanse.seq_len=64")
    assert _one_line_error(done, "build_data") == (
        "build_data: error: --config.instanse.seq_len: no such field in the config; did you mean "
        "--config.instance.seq_len?")


@pytest.mark.parametrize("module", ["launch.pretrain", "launch.build_data"])
def test_a_config_file_missing_or_not_compiling_is_one_line(tmp_path, module):
    program = module.split(".")[1]
    bad = tmp_path / "bad.py"
    bad.write_text("from configs import base\n\ndef get_config(:\n    return base.get_config()\n")
    extra = ["--workdir=%s" % (tmp_path / "run")] if program == "pretrain" else []
    line = _one_line_error(_run(module, "--config=%s" % bad, *extra), program)
    assert line.startswith("%s: error: %s, line 3: " % (program, bad)) and "get_config(:" in line
    missing = tmp_path / "missing.py"
    for override in ([], ["--config.seed=1"]):
        done = _run(module, "--config=%s" % missing, *(extra + override))
        assert _one_line_error(done, program) == "%s: error: --config=%s: no such file (the configs " \
                                                 "are in configs/)." % (program, missing)


def test_a_second_pretrain_is_refused_before_tensorflow_loads_and_writes_nothing(mlm_data, tmp_path):
    workdir = tmp_path / "run"
    holder = DirectoryLock(str(workdir), "launch.pretrain").acquire()
    (workdir / "command.txt").write_text("the holder's command\n")
    try:
        done = _run("launch.pretrain", "--config=configs/quickstart.py",
                    "--config.data.train_dir=%s" % mlm_data, "--workdir=%s" % workdir)
    finally:
        holder.release()
    line = _one_line_error(done, "pretrain")
    assert "%s is in use by pid %d on %s (launch.pretrain" % (
        workdir, os.getpid(), socket.gethostname()) in line
    assert not _tensorflow_loaded(done)
    assert (workdir / "command.txt").read_text() == "the holder's command\n"
    assert sorted(os.listdir(workdir)) == ["command.txt"]


def test_an_unwritable_workdir_fails_before_tensorflow_loads(mlm_data):
    # /proc refuses new directories even to root (which ignores chmod).
    done = _run("launch.pretrain", "--config=configs/quickstart.py",
                "--config.data.train_dir=%s" % mlm_data, "--workdir=/proc/no/such/run")
    line = _one_line_error(done, "pretrain")
    assert line.startswith("pretrain: error: cannot write to --workdir=/proc/no/such/run: ")
    assert not _tensorflow_loaded(done)


def test_a_second_export_to_one_output_is_refused_naming_the_holder(tmp_path):
    workdir, output = tmp_path / "run", tmp_path / "exports" / "1"
    workdir.mkdir()
    (workdir / "config.json").write_text("{}")
    holder = DirectoryLock(str(output), "launch.export",
                           path=str(tmp_path / "exports" / ".1.lock")).acquire()
    try:
        done = _run("launch.export", "--workdir=%s" % workdir, "--output=%s" % output)
    finally:
        holder.release()
    assert "export: error: %s is in use by pid %d on %s (launch.export" % (
        output, os.getpid(), socket.gethostname()) in _one_line_error(done, "export")
    assert not os.path.exists(output)


def test_quickstart_with_a_file_for_its_workdir_is_one_line(tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("not a directory")
    assert _one_line_error(_run("launch.quickstart", "--workdir=%s" % afile), "quickstart") == \
        "quickstart: error: cannot use --workdir=%s as a directory: File exists" % afile


def test_a_second_ctrl_c_quits_at_once_while_a_loop_runs(mlm_data, tmp_path):
    """Both Ctrl-C land inside one long loop (a tf.function), where Python runs no handler: the
    second must still end the process at once, not at the loop boundary with a checkpoint."""
    workdir = tmp_path / "run"
    proc = _pretrain(mlm_data, workdir, "--config.train.steps=1000000",
                     "--config.train.steps_per_loop=600", "--config.train.checkpoint_every=1000000")
    _wait_for(workdir / "metrics.jsonl", proc, seconds=300)
    row = json.loads(open(workdir / "metrics.jsonl").readline())
    loop_seconds = 600 * 8 / row["examples_per_s"]
    assert loop_seconds > 1.5, "the loop is too short to land both Ctrl-C in it: %.1f s" % loop_seconds
    time.sleep(loop_seconds / 5)                 # inside the second loop
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    sent = time.time()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert time.time() - sent < loop_seconds / 2, (time.time() - sent, loop_seconds)
    assert "Second Ctrl-C: stopped at once, without a checkpoint" in err and "checkpoint saved" not in err
    assert not os.path.exists(workdir / "checkpoints" / "checkpoint")
