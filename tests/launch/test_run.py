"""launch.run with small stand-in programs (no TensorFlow): environment and TF_CONFIG per worker,
nodes joining through the master, restarts, signals, and bad input refused before any start."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Writes its environment to OUT/rank<RANK>.json, prints to stdout and stderr.
DUMP = """
import json, os, sys
keys = ["TF_CONFIG", "RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "NODE_RANK",
        "MASTER_ADDR", "MASTER_PORT", "RESTART_COUNT", "CUDA_VISIBLE_DEVICES"]
info = {k: os.environ.get(k) for k in keys}
info["argv"] = sys.argv[2:]
with open(os.path.join(sys.argv[1], "rank%s.json" % os.environ["RANK"]), "w") as f:
    json.dump(info, f)
print("hello from rank", os.environ["RANK"])
print("a warning", file=sys.stderr)
"""
# Rank 1 is killed (kill -9) in its first FAILS attempts while rank 0 waits; then both succeed.
FLAKY = """
import os, signal, sys, time
rank, attempt = int(os.environ["RANK"]), int(os.environ["RESTART_COUNT"])
print("rank %d attempt %d" % (rank, attempt), flush=True)
if attempt < int(sys.argv[1]):
    if rank == 1:
        time.sleep(0.3)
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)
"""
# Stands in for a trainer: on SIGTERM it "checkpoints" (writes a file) and exits 0, unless told
# to ignore the signal.
STOPPABLE = """
import os, signal, sys, time
out, ignore = sys.argv[1], sys.argv[2] == "ignore"
def stop(*_):
    open(os.path.join(out, "stopped%s" % os.environ["RANK"]), "w").close()
    sys.exit(0)
signal.signal(signal.SIGTERM, signal.SIG_IGN if ignore else stop)
open(os.path.join(out, "started%s" % os.environ["RANK"]), "w").close()
time.sleep(60)
"""


@pytest.fixture
def programs(tmp_path):
    paths = {}
    for name, text in (("dump", DUMP), ("flaky", FLAKY), ("stoppable", STOPPABLE)):
        paths[name] = str(tmp_path / ("%s.py" % name))
        with open(paths[name], "w") as f:
            f.write(text)
    return paths


def launch_run(*args, env=None, wait=True):
    cmd = [sys.executable, "-m", "launch.run"] + [str(a) for a in args]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=ROOT, **(env or {})))
    if not wait:
        return proc
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def ranks(out_dir):
    return {int(n[4:-5]): json.load(open(os.path.join(out_dir, n)))
            for n in os.listdir(out_dir) if n.startswith("rank") and n.endswith(".json")}


# ------------------------------------------------------------------------ environment

@pytest.mark.parametrize("gpus_per_proc,devices", [("1", ["4", "5", "6"]), ("0", ["4,5,6,7"] * 3)])
def test_every_worker_gets_the_cluster_its_rank_and_its_gpus(programs, tmp_path, master_port,
                                                             gpus_per_proc, devices):
    code, out, err = launch_run("--nproc_per_node=3", "--master_port=%d" % master_port,
                                "--gpus_per_proc=%s" % gpus_per_proc, programs["dump"], tmp_path,
                                "--nproc_per_node=9", "-m", "x",
                                env={"CUDA_VISIBLE_DEVICES": "4,5,6,7"})
    assert code == 0, err
    workers = ["127.0.0.1:%d" % (master_port + i) for i in (1, 2, 3)]
    got = ranks(tmp_path)
    assert sorted(got) == [0, 1, 2]
    for rank, info in got.items():
        assert json.loads(info["TF_CONFIG"]) == {"cluster": {"worker": workers},
                                                 "task": {"type": "worker", "index": rank}}
        assert (info["RANK"], info["LOCAL_RANK"], info["WORLD_SIZE"], info["LOCAL_WORLD_SIZE"],
                info["NODE_RANK"], info["RESTART_COUNT"]) == (str(rank), str(rank), "3", "3", "0", "0")
        assert (info["MASTER_ADDR"], info["MASTER_PORT"]) == ("127.0.0.1", str(master_port))
        assert info["CUDA_VISIBLE_DEVICES"] == devices[rank]
        assert info["argv"] == ["--nproc_per_node=9", "-m", "x"]     # the program's, untouched
    assert sorted(out.splitlines()) == ["[rank %d] hello from rank %d" % (r, r) for r in range(3)]
    assert err.count("a warning") == 3 and "all 3 worker(s) finished" in err


def test_worker_hosts_place_this_node_in_the_cluster(programs, tmp_path, master_port):
    code, out, err = launch_run("--worker_hosts=node-a,127.0.0.1:%d" % (master_port + 1),
                                "--node_rank=1", "--nproc_per_node=2", "--master_port=20000",
                                "--log_dir=%s" % (tmp_path / "logs"), "--tee",
                                programs["dump"], tmp_path)
    assert code == 0, err
    got = ranks(tmp_path)
    assert sorted(got) == [2, 3]
    assert json.loads(got[3]["TF_CONFIG"])["cluster"]["worker"] == [
        "node-a:20001", "node-a:20002",
        "127.0.0.1:%d" % (master_port + 1), "127.0.0.1:%d" % (master_port + 2)]
    assert (got[3]["LOCAL_RANK"], got[3]["NODE_RANK"], got[3]["MASTER_ADDR"]) == ("1", "1", "node-a")
    assert "[rank 3] hello from rank 3" in out                          # --tee
    log = (tmp_path / "logs" / "rank_3.log").read_text()
    assert "attempt 0" in log and "hello from rank 3\n" in log and "a warning\n" in log
    assert "node 1: 2 worker(s)" in (tmp_path / "logs" / "launcher.log").read_text()


def test_nodes_learn_each_others_address_through_the_master(programs, tmp_path, master_port):
    common = ["--nnodes=2", "--nproc_per_node=1", "--master_addr=127.0.0.1",
              "--master_port=%d" % master_port, "--join_timeout=60", programs["dump"], tmp_path]
    node1 = launch_run("--node_rank=1", *common, wait=False)   # may start before the master
    time.sleep(0.5)
    code, _, err = launch_run("--node_rank=0", *common)
    out1, err1 = node1.communicate(timeout=60)
    assert code == 0 and node1.returncode == 0, err + err1
    assert "node 1 joined from 127.0.0.1" in err
    got = ranks(tmp_path)
    for rank in (0, 1):
        tf_config = json.loads(got[rank]["TF_CONFIG"])
        assert tf_config["cluster"]["worker"] == ["127.0.0.1:%d" % (master_port + 1)] * 2
        assert tf_config["task"]["index"] == rank and got[rank]["WORLD_SIZE"] == "2"


# ---------------------------------------------------------------------------- supervision

def test_a_killed_worker_restarts_every_worker(programs, tmp_path, master_port):
    code, out, err = launch_run("--nproc_per_node=2", "--master_port=%d" % master_port,
                                "--max_restarts=2", programs["flaky"], 2)
    assert code == 0, err
    assert err.count("rank 1: killed by SIGKILL") == 2 and err.count("rank 0: killed by SIGKILL") == 2
    assert "restarting all workers (restart 2 of 2)" in err and "all 2 worker(s) finished" in err
    assert "[rank 0] rank 0 attempt 2" in out


def test_the_launcher_gives_up_after_max_restarts(programs, tmp_path, master_port):
    code, _, err = launch_run("--nproc_per_node=2", "--master_port=%d" % master_port,
                              "--max_restarts=1", programs["flaky"], 5)
    assert code == 1
    assert "giving up after 1 restart(s) (--max_restarts=1)" in err


def test_a_worker_refusing_its_config_is_not_restarted(tmp_path, master_port):
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nprint('pretrain: error: bad config', file=sys.stderr)\nsys.exit(2)\n")
    code, _, err = launch_run("--nproc_per_node=2", "--master_port=%d" % master_port,
                              "--max_restarts=3", bad)
    assert code == 1
    assert "not restarting" in err and "restarting all workers" not in err


@pytest.mark.parametrize("signum,behaviour,code", [(signal.SIGTERM, "stop", 128 + signal.SIGTERM),
                                                   (signal.SIGINT, "stop", 128 + signal.SIGINT),
                                                   (signal.SIGTERM, "ignore", 1)])
def test_signals_are_forwarded_as_sigterm(programs, tmp_path, master_port, signum, behaviour, code):
    proc = launch_run("--nproc_per_node=2", "--master_port=%d" % master_port, "--stop_timeout=2",
                      programs["stoppable"], tmp_path, behaviour, wait=False)
    deadline = time.time() + 60
    while not all((tmp_path / ("started%d" % r)).exists() for r in (0, 1)):
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    stopped = [(tmp_path / ("stopped%d" % r)).exists() for r in (0, 1)]
    if behaviour == "stop":
        assert stopped == [True, True] and "every worker exited cleanly" in err
    else:
        assert stopped == [False, False] and "killing worker(s) 0, 1, still running" in err


# A worker that leaves a child holding its stdout and stderr, then fails (attempt 0) or finishes.
LINGERING = """
import os, subprocess, sys
out, attempt = sys.argv[1], int(os.environ["RESTART_COUNT"])
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
with open(os.path.join(out, "child%d" % attempt), "w") as f:
    f.write(str(child.pid))
sys.exit(1 if attempt == 0 else 0)
"""


def _alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"   # a zombie is dead
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="reads /proc")
def test_processes_a_worker_leaves_behind_neither_block_nor_outlive_it(tmp_path, master_port):
    """Its output pipes stay open while its child lives: the launcher must not wait for EOF on
    them before restarting, or finishing; the child goes with the worker's process group."""
    program = tmp_path / "lingering.py"
    program.write_text(LINGERING)
    started = time.time()
    proc = launch_run("--nproc_per_node=1", "--master_port=%d" % master_port, "--max_restarts=1",
                      program, tmp_path, wait=False)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    assert proc.returncode == 0, err
    assert time.time() - started < 20, "the launcher waited for the worker's child"
    assert "restarting all workers (restart 1 of 1)" in err and "all 1 worker(s) finished" in err
    children = [int((tmp_path / ("child%d" % a)).read_text()) for a in (0, 1)]
    deadline = time.time() + 5
    while any(_alive(pid) for pid in children) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in children)


def test_a_stop_signal_while_waiting_to_restart_starts_no_new_workers(tmp_path, master_port):
    """Attempt 0 fails while its port is held (by the test), so the launcher waits for the port
    before restarting; SIGTERM then must end the launcher, not start workers only to stop them."""
    program = tmp_path / "fail.py"
    program.write_text("import os, sys, time\n"
                       "open(os.path.join(sys.argv[1], 'attempt%s' % os.environ['RESTART_COUNT']), 'w').close()\n"
                       "time.sleep(1)\nsys.exit(1)\n")
    proc = launch_run("--nproc_per_node=1", "--master_port=%d" % master_port, "--max_restarts=3",
                      program, tmp_path, wait=False)
    deadline = time.time() + 30
    while not (tmp_path / "attempt0").exists():
        assert time.time() < deadline and proc.poll() is None, proc.communicate()
        time.sleep(0.02)
    held = _listening(master_port + 1)   # the worker's port, busy when the launcher restarts
    try:
        time.sleep(2)   # the worker has failed by now (after 1 s); the launcher waits for the port
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        held.close()
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "rank 0: exit code 1" in err
    assert not (tmp_path / "attempt1").exists() and "attempt 1:" not in err


# -------------------------------------------------------------------------------- bad input

def _listening(port):
    s = socket.socket()
    s.bind(("", port))
    s.listen(1)
    return s


@pytest.mark.parametrize("args,message", [
    ([], "no program to run"),
    (["-m"], "`-m` needs a module name"),
    (["-m", "launch.no_such_module"], "no module named 'launch.no_such_module'"),
    (["no_such_script.py"], "neither a flag of launch.run nor a Python script"),
    (["--nproc_per_node=0", "SCRIPT"], "--nproc_per_node must be at least 1, got 0"),
    (["--nproc_per_node=two", "SCRIPT"], "must be a number or 'gpu'"),
    (["--nnodes=2", "--node_rank=2", "SCRIPT"], "--node_rank must be in 0..1 (--nnodes=2), got 2"),
    (["--nnodes=0", "SCRIPT"], "--nnodes must be at least 1"),
    (["--worker_hosts=a,b:x", "SCRIPT"], "entry 'b:x': the port must be a number"),
    (["--worker_hosts=a,b:70000", "SCRIPT"], "entry 'b:70000': the port must be a number in 1-65535"),
    (["--worker_hosts=a,,b", "SCRIPT"], "entry '': expected host or host:port"),
    (["--worker_hosts=a b", "SCRIPT"], "entry 'a b': expected host or host:port"),
    (["--worker_hosts=a:1,a:1", "SCRIPT"], "names a:1 more than once"),
    (["--worker_hosts=a,b", "--nnodes=3", "SCRIPT"], "names 2 host(s) but --nnodes=3"),
    (["--nproc_per_node=3", "SCRIPT"], "3 workers x 1 GPU(s) each need 3 GPUs but this host has 2"),
    (["--nproc_per_node=gpu", "--gpus_per_proc=3", "SCRIPT"],
     "--nproc_per_node=gpu: --gpus_per_proc=3 but this host has 2 GPU(s)"),
    (["--nnodes=2", "--node_rank=1", "--master_addr=no-such-host.invalid", "SCRIPT"],
     "cannot resolve --master_addr 'no-such-host.invalid'"),
    (["--nnodes=2", "--node_rank=1", "--join_timeout=1", "SCRIPT"],
     "cannot reach the master at 127.0.0.1:PORT within 1 s"),
    (["--nproc_per_node=2", "BUSY+2", "SCRIPT"], "worker port(s) PORT+2 are in use"),
    (["--nnodes=2", "BUSY+0", "SCRIPT"], "the master port PORT is in use"),
])
def test_bad_input_is_refused_before_any_worker_starts(programs, tmp_path, master_port, args, message):
    busy = [_listening(master_port + int(a[5:])) for a in args if a.startswith("BUSY+")]
    args = [programs["dump"] if a == "SCRIPT" else a for a in args if not a.startswith("BUSY+")]
    if not any(a.startswith("--master_port") for a in args):
        args.insert(0, "--master_port=%d" % master_port)
    if programs["dump"] in args:
        args.append(str(tmp_path))
    message = message.replace("PORT+2", str(master_port + 2)).replace("PORT", str(master_port))
    started = time.time()
    code, out, err = launch_run(*args, env={"CUDA_VISIBLE_DEVICES": "0,1"})
    for s in busy:
        s.close()
    assert code == 2, err
    assert "launch.run: error: " in err and message in err, err
    assert not ranks(tmp_path) and not out                     # no worker ran
    assert time.time() - started < 30
