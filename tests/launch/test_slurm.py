"""launch.run --slurm inside a stand-in Slurm: fake `srun` and `scontrol` on PATH start two
"nodes" on this machine, each a launcher that finds the others through Slurm's variables."""

import json
import os
import stat
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

SCONTROL = """#!/bin/sh
# scontrol show hostnames <list>: one host per node of the fake allocation.
[ "$1 $2" = "show hostnames" ] || exit 1
for i in $(seq 1 "$FAKE_NODES"); do echo 127.0.0.1; done
"""
SRUN = """#!/bin/sh
# srun [options] command...: the command once per node, with Slurm's per-node variables.
while [ "${1#--}" != "$1" ]; do shift; done
pids=""
for i in $(seq 0 $((FAKE_NODES - 1))); do
  SLURM_JOB_ID=4242 SLURM_JOB_NUM_NODES=$FAKE_NODES SLURM_NODEID=$i SLURM_PROCID=$i \\
  SLURM_NTASKS_PER_NODE=1 SLURM_JOB_NODELIST="gpu[01-0$FAKE_NODES]" "$@" > "$FAKE_OUT/node$i.out" 2>&1 &
  pids="$pids $!"
done
status=0
for p in $pids; do wait $p || status=$?; done
exit $status
"""
PROGRAM = """import json, os
with open(os.path.join(os.environ["FAKE_OUT"], "rank%s.json" % os.environ["RANK"]), "w") as f:
    json.dump({k: os.environ[k] for k in ("RANK", "WORLD_SIZE", "NODE_RANK", "LOCAL_RANK",
                                          "MASTER_ADDR", "TF_CONFIG")}, f)
"""


def _tool(directory, name, text):
    path = directory / name
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_srun_starts_one_launcher_per_node_and_every_rank_finds_its_place(tmp_path, master_port):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _tool(bin_dir, "scontrol", SCONTROL)
    _tool(bin_dir, "srun", SRUN)
    (tmp_path / "program.py").write_text(PROGRAM)
    env = dict(os.environ, PATH="%s:%s" % (bin_dir, os.environ["PATH"]), FAKE_NODES="2",
               FAKE_OUT=str(tmp_path), PYTHONPATH=ROOT)
    done = subprocess.run(["srun", "--ntasks-per-node=1", sys.executable, "-m", "launch.run", "--slurm",
                           "--master_port=%d" % master_port, "--nproc_per_node=2", "--join_timeout=60",
                           str(tmp_path / "program.py")], cwd=ROOT, env=env, timeout=120,
                          capture_output=True, text=True)
    logs = "\n".join((tmp_path / ("node%d.out" % i)).read_text() for i in range(2))
    assert done.returncode == 0, logs
    ranks = [json.load(open(tmp_path / ("rank%d.json" % r))) for r in range(4)]
    for rank, got in enumerate(ranks):
        assert got["WORLD_SIZE"] == "4" and got["NODE_RANK"] == str(rank // 2)
        assert got["LOCAL_RANK"] == str(rank % 2) and got["MASTER_ADDR"] == "127.0.0.1"
        config = json.loads(got["TF_CONFIG"])
        assert config["task"] == {"type": "worker", "index": rank}
        assert len(config["cluster"]["worker"]) == 4
    assert "node 1 joined" in logs


@pytest.mark.parametrize("env,args,message", [
    ({}, [], "--slurm: not inside a Slurm job (no SLURM_JOB_ID)"),
    ({"SLURM_JOB_ID": "1"}, [], "SLURM_JOB_NUM_NODES, SLURM_NODEID and SLURM_JOB_NODELIST must be set"),
    ({"SLURM_JOB_ID": "1", "SLURM_JOB_NUM_NODES": "2", "SLURM_NODEID": "0", "SLURM_JOB_NODELIST": "a,b",
      "SLURM_NTASKS_PER_NODE": "8"}, [], "run it as one task per node"),
    ({"SLURM_JOB_ID": "1"}, ["--nnodes=2"], "--slurm takes the nodes from Slurm; drop --nnodes"),
])
def test_slurm_mode_refuses_what_it_cannot_place(tmp_path, env, args, message):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    done = subprocess.run([sys.executable, "-m", "launch.run", "--slurm"] + args + ["--", "true"],
                          cwd=ROOT, env=dict(clean, PYTHONPATH=ROOT, **env), capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr, done.stderr
