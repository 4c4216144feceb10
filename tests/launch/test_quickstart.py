"""The README's first command, as a new user runs it (read from README.md, its --workdir moved to a
temporary directory, shortened with --steps): corpus, vocabulary, shards, a masked batch,
pretraining, the held-out accuracy; no TensorFlow start-up noise; a second run resumes the finished
run instead of training again; a bad --steps is one line."""

import os
import signal
import subprocess
import sys

from tests import doc_commands
from tests.tf_noise import env_without_log_level, start_up_noise

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _quickstart(*args):
    return subprocess.run([sys.executable, "-m", "launch.quickstart"] + list(args), cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env=env_without_log_level(PYTHONPATH=ROOT))


def _readme_command(workdir):
    """The flags of the README's main job (`python -m launch.quickstart ...`), --workdir replaced."""
    (main,), _ = doc_commands.readme_first_commands()
    assert main.module == "launch.quickstart" and any(a.startswith("--workdir=") for a in main.args), main
    return ["--workdir=%s" % workdir if a.startswith("--workdir=") else a for a in main.args]


def test_quickstart_trains_reports_and_resumes(tmp_path):
    workdir = str(tmp_path / "quickstart")
    done = _quickstart(*_readme_command(workdir), "--steps=4")
    assert done.returncode == 0, done.stderr[-3000:]
    assert not start_up_noise(done.stderr), start_up_noise(done.stderr)
    assert "held-out MLM accuracy" in done.stdout and "unigram baseline" in done.stdout
    assert "predict" in done.stdout and "[MASK]" in done.stdout          # the masked batch shown
    assert "finished at step 4" in done.stderr
    for name in ("corpus.txt", "vocab.txt", "data_mlm_128/manifest.json", "run/config.json",
                 "run/metrics.jsonl", "run/checkpoints/checkpoint"):
        assert os.path.exists(os.path.join(workdir, name)), name
    again = _quickstart("--workdir=%s" % workdir, "--steps=4")
    assert again.returncode == 0, again.stderr[-3000:]
    assert "resum" in again.stderr.lower() and "finished at step 4" in again.stderr
    rows = open(os.path.join(workdir, "run", "metrics.jsonl")).read().splitlines()
    assert sum('"split": "train"' in r for r in rows) == 1       # not trained a second time
    with open(os.path.join(workdir, "corpus.txt"), "a") as f:   # as after a new version's docs
        f.write("A sentence the first build did not have.\n")
    changed = _quickstart("--workdir=%s" % workdir, "--steps=4")
    assert changed.returncode == 2 and "use a new --workdir" in changed.stderr
    assert "Traceback" not in changed.stderr


def test_quickstart_refuses_a_bad_step_count(tmp_path):
    done = _quickstart("--workdir=%s" % tmp_path, "--steps=0")
    assert done.returncode != 0 and "steps" in done.stderr and "Traceback" not in done.stderr


def test_ctrl_c_saves_and_says_how_to_resume(tmp_path):
    workdir = str(tmp_path / "quickstart")
    run = subprocess.Popen([sys.executable, "-m", "launch.quickstart", "--workdir=%s" % workdir,
                            "--steps=2000"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                           text=True, env=env_without_log_level(PYTHONPATH=ROOT))
    seen = []
    for line in run.stderr:                     # the first progress line: training has started
        seen.append(line)
        if line.startswith("step "):
            run.send_signal(signal.SIGINT)
            break
    rest = run.communicate(timeout=300)[1]
    stderr = "".join(seen) + rest
    assert run.returncode == 130, stderr[-3000:]
    assert "re-run the command to resume" in stderr and "Traceback" not in stderr
    checkpoints = os.listdir(os.path.join(workdir, "run", "checkpoints"))
    assert any(name.startswith("ckpt-") for name in checkpoints), checkpoints
