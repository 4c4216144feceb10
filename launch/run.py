r"""Starts, supervises and restarts the worker processes of a multi-worker TensorFlow job, in the
spirit of `torchrun`: the launcher's flags come first, then the program and its own flags.

    # one host, one process per GPU (or per CPU worker when there is no GPU)
    python -m launch.run --nproc_per_node=8 -m launch.pretrain --config=configs/bert_base.py \
        --config.distribute.name=multi_worker_mirrored --workdir=gs://bucket/runs/base
    # several hosts: the same command on each, with its own --node_rank; node 0 is the master
    python -m launch.run --nnodes=4 --node_rank=$RANK --master_addr=10.0.0.2 --nproc_per_node=8 \
        -m launch.pretrain ...
    # or name every host up front (node order = node rank); no join step through the master
    python -m launch.run --worker_hosts=10.0.0.2,10.0.0.3 --node_rank=1 --nproc_per_node=8 ...
    # one process per host that drives all its GPUs (MultiWorkerMirroredStrategy uses them all)
    python -m launch.run --nnodes=4 --node_rank=... --nproc_per_node=1 --gpus_per_proc=0 ...

Everything after `-m module`, after a script path, or after `--` belongs to the program.

Each worker gets TF_CONFIG (every worker's address, in rank order, and its own index), RANK,
LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, NODE_RANK, MASTER_ADDR, MASTER_PORT, RESTART_COUNT, and
CUDA_VISIBLE_DEVICES with its own GPUs (--gpus_per_proc of them; 0 leaves every GPU visible).
Workers on a node listen on ports master_port+1 ... master_port+nproc_per_node (or from the port
given in --worker_hosts); with --nnodes > 1 the master's launcher listens on master_port, where
the other nodes' launchers join and learn every node's address.

Supervision: when a worker exits non-zero or is killed, the others are killed too (a synchronous
job cannot go on without it, and what they did since the last checkpoint is lost either way) and
all of them start again, up to --max_restarts times; launch.pretrain resumes from the last
checkpoint. A worker exiting with one of --fatal_exit_codes (2: the entry points' "bad input or
config") is not restarted: it would fail the same way. SIGINT (Ctrl-C) and SIGTERM are forwarded
to every worker as SIGTERM, on which
launch.pretrain checkpoints at its next loop boundary and exits; workers still running after
--stop_timeout seconds, or at a second signal, are killed. On other hosts, workers notice a lost
peer through TensorFlow's health checks, fail, and are restarted by their own launcher.

Exit status: 0 every worker finished; 1 a worker failed and no restart was left or made (or workers had
to be killed after a stop signal); 2 bad flags or setup (nothing was started); 128 + the signal
number when stopped by SIGINT/SIGTERM and every worker exited cleanly (re-run to resume).
"""

import dataclasses
import importlib.util
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from typing import Optional

from absl import app, flags, logging  # noqa: F401 (defines --log_dir)

from launch import rendezvous
from launch.supervisor import Launcher, SupervisorOptions

FLAGS = flags.FLAGS
flags.DEFINE_integer("nnodes", None, "Number of hosts (default 1, or the length of --worker_hosts).")
flags.DEFINE_string("nproc_per_node", "1", "Worker processes on this host: a number, or 'gpu' for "
                    "one per GPU (visible GPUs / --gpus_per_proc).")
flags.DEFINE_integer("node_rank", 0, "This host's rank, 0 .. nnodes-1; node 0 is the master.")
flags.DEFINE_string("master_addr", "127.0.0.1", "Address of node 0, reachable from every host.")
flags.DEFINE_integer("master_port", 29500, "Port where node 0's launcher meets the others; workers "
                     "listen on the ports after it.")
flags.DEFINE_list("worker_hosts", None, "Every host, in node-rank order: host or host:port (the "
                  "first worker port on that host; default master_port+1). Replaces the join "
                  "through the master.")
flags.DEFINE_integer("gpus_per_proc", 1, "GPUs per worker, given through CUDA_VISIBLE_DEVICES "
                     "(local rank r gets the r-th group); 0 = every worker sees every GPU.")
flags.DEFINE_integer("max_restarts", 3, "Restarts of all workers after a failure before giving up.")
flags.DEFINE_list("fatal_exit_codes", ["2"], "Worker exit codes that mean bad input or config "
                  "(launch.* entry points exit 2): a restart would fail the same way, so none is made.")
# absl.logging (imported by absl.app) already defines --log_dir; the launcher gives it this meaning.
FLAGS["log_dir"].help = ("Write each rank's output to LOG_DIR/rank_<rank>.log (and the launcher's "
                         "to launcher.log) instead of the console.")
flags.declare_key_flag("log_dir")
flags.DEFINE_bool("tee", False, "With --log_dir, also copy the workers' output to the console.")
flags.DEFINE_integer("stop_timeout", 300, "Seconds workers get to checkpoint and exit after a stop "
                     "signal (and stragglers after the first worker finished) before being killed.")
flags.DEFINE_integer("join_timeout", 600, "Seconds the nodes' launchers wait for each other (and "
                     "for the master to become reachable) when --nnodes > 1.")
flags.DEFINE_bool("no_python", False, "The program is an executable, not a Python module or script.")
flags.DEFINE_bool("slurm", False, "Take --nnodes, --node_rank and --master_addr from the Slurm job "
                  "(SLURM_JOB_NUM_NODES, SLURM_NODEID, the first host of SLURM_JOB_NODELIST); run "
                  "one launch.run per node: srun --ntasks-per-node=1 python -m launch.run --slurm ...")



class LaunchError(Exception):
    """Bad flags or setup, found before any worker starts; the message says what to change."""


# -------------------------------------------------------------------------- command line

def split_argv(argv):
    """(launcher argv, program): the program starts at `-m`, after `--`, or at the first argument
    that is neither a flag nor the value of a `--flag value` pair."""
    i = 1
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            return argv[:i], argv[i + 1:]
        if arg == "-m" or not arg.startswith("-"):
            return argv[:i], argv[i:]
        name = arg.lstrip("-")
        if "=" not in name and name in FLAGS and not FLAGS[name].boolean:
            i += 1  # `--flag value`: skip the value
        i += 1
    return argv, []


def _parse_flags(argv):
    launcher_argv, program = split_argv(argv)
    FLAGS(launcher_argv)
    return [argv[0]] + program


def program_command(program, no_python=False):
    """The argv that starts one worker."""
    example = "e.g. `python -m launch.run --nproc_per_node=2 -m launch.pretrain --config=...`"
    if not program:
        raise LaunchError("no program to run: put `-m module [args]` or `script.py [args]` after "
                          "the launcher's flags, %s." % example)
    if no_python:
        if not shutil.which(program[0]):
            raise LaunchError("--no_python: %r is not an executable on PATH." % program[0])
        return list(program)
    if program[0] == "-m":
        if len(program) < 2 or program[1].startswith("-"):
            raise LaunchError("`-m` needs a module name, %s." % example)
        try:
            found = importlib.util.find_spec(program[1]) is not None
        except ImportError:
            found = False
        if not found:
            raise LaunchError("no module named %r (run from the project root, or set PYTHONPATH)."
                              % program[1])
    elif not os.path.isfile(program[0]):
        raise LaunchError("%r is neither a flag of launch.run nor a Python script that exists "
                          "(the program starts at `-m`, at a script path, or after `--`)." % program[0])
    return [sys.executable, "-u"] + list(program)


def parse_worker_hosts(entries, default_port):
    """`host` or `host:port` per node -> [(host, first worker port)]."""
    hosts = []
    for entry in entries:
        host, sep, port = entry.strip().rpartition(":") if ":" in entry else (entry.strip(), "", "")
        if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.\-]*[A-Za-z0-9])?", host or "-"):
            raise LaunchError("--worker_hosts entry %r: expected host or host:port, e.g. "
                              "10.0.0.2 or node1:29501." % entry)
        if sep and not (port.isdigit() and 1 <= int(port) <= 65535):
            raise LaunchError("--worker_hosts entry %r: the port must be a number in 1-65535." % entry)
        hosts.append((host, int(port) if sep else default_port))
    duplicates = sorted({"%s:%d" % h for h in hosts if hosts.count(h) > 1})
    if duplicates:
        raise LaunchError("--worker_hosts names %s more than once; give each node its own host, or "
                          "its own port on a shared host." % ", ".join(duplicates))
    return hosts


# --------------------------------------------------------------------------------- devices

def available_gpus():
    """GPU ids this launcher may hand out: CUDA_VISIBLE_DEVICES if set, else what nvidia-smi
    lists; None when unknown (no nvidia-smi: then the ids are not checked)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [d for d in visible.split(",") if d.strip()]
    if not shutil.which("nvidia-smi"):
        return None
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [str(i) for i, line in enumerate(l for l in out.splitlines() if l.startswith("GPU "))]


def processes_per_node(value, gpus_per_proc, gpus):
    """--nproc_per_node: a number, or 'gpu' (one worker per --gpus_per_proc GPUs)."""
    if value == "gpu":
        if not gpus or gpus_per_proc < 1:
            raise LaunchError("--nproc_per_node=gpu: %s." % ("no GPU found on this host" if not gpus
                                                              else "needs --gpus_per_proc >= 1"))
        if len(gpus) < gpus_per_proc:
            raise LaunchError("--nproc_per_node=gpu: --gpus_per_proc=%d but this host has %d GPU(s) "
                              "(%s)." % (gpus_per_proc, len(gpus), ",".join(gpus)))
        return len(gpus) // gpus_per_proc
    if not re.fullmatch(r"-?\d+", value):
        raise LaunchError("--nproc_per_node must be a number or 'gpu', got %r." % value)
    if int(value) < 1:
        raise LaunchError("--nproc_per_node must be at least 1, got %s." % value)
    return int(value)


def worker_devices(nproc, gpus_per_proc, gpus):
    """CUDA_VISIBLE_DEVICES per local rank (None: leave it as it is)."""
    if gpus_per_proc == 0:
        return [None] * nproc
    if gpus is None:
        gpus = [str(i) for i in range(nproc * gpus_per_proc)]   # unknown: harmless without GPUs
    elif gpus and nproc * gpus_per_proc > len(gpus):
        raise LaunchError("%d workers x %d GPU(s) each need %d GPUs but this host has %d (%s)."
                          % (nproc, gpus_per_proc, nproc * gpus_per_proc, len(gpus), ",".join(gpus)))
    elif not gpus:
        return [""] * nproc                                     # CUDA_VISIBLE_DEVICES="" : CPU
    return [",".join(gpus[r * gpus_per_proc:(r + 1) * gpus_per_proc]) for r in range(nproc)]


# ------------------------------------------------------------------- joining several nodes


# ------------------------------------------------------------------------------- the plan

@dataclasses.dataclass
class Placement:
    """Where this node's workers go: the launch.run flags that place them (or, with --slurm, what
    Slurm says)."""
    nnodes: int
    node_rank: int
    master_addr: str
    master_port: int
    worker_hosts: Optional[list] = None     # [(host, first worker port)] in node-rank order
    join_timeout: float = 600.0


def placement_from_flags() -> Placement:
    if FLAGS.slurm:
        given = [f for f in ("nnodes", "node_rank", "master_addr", "worker_hosts") if FLAGS[f].present]
        if given:
            raise LaunchError("--slurm takes the nodes from Slurm; drop %s."
                              % ", ".join("--" + f for f in given))
        nnodes, node_rank, master = slurm_nodes()
        return Placement(nnodes, node_rank, master, FLAGS.master_port, join_timeout=FLAGS.join_timeout)
    if not 1 <= FLAGS.master_port <= 65535:
        raise LaunchError("--master_port must be in 1-65535, got %d." % FLAGS.master_port)
    hosts = parse_worker_hosts(FLAGS.worker_hosts, FLAGS.master_port + 1) if FLAGS.worker_hosts else None
    nnodes = FLAGS.nnodes if FLAGS.nnodes is not None else len(hosts or [None])
    return Placement(nnodes, FLAGS.node_rank, FLAGS.master_addr, FLAGS.master_port, hosts,
                     FLAGS.join_timeout)


def slurm_nodes():
    """(nnodes, this node's rank, node 0's host) inside a Slurm job step started with one task per
    node (`srun --ntasks-per-node=1 python -m launch.run --slurm ...`)."""
    env = os.environ
    if "SLURM_JOB_ID" not in env:
        raise LaunchError("--slurm: not inside a Slurm job (no SLURM_JOB_ID); submit the job with "
                          "sbatch (see recipes/slurm/pretrain.sbatch) or drop --slurm.")
    nodes = env.get("SLURM_JOB_NUM_NODES") or env.get("SLURM_NNODES")
    rank = env.get("SLURM_NODEID")
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    if not (nodes and rank and nodelist):
        raise LaunchError("--slurm: SLURM_JOB_NUM_NODES, SLURM_NODEID and SLURM_JOB_NODELIST must be "
                          "set: start launch.run through srun, one task per node.")
    if int(env.get("SLURM_NTASKS_PER_NODE", "1").split("(")[0] or 1) != 1:
        raise LaunchError("--slurm: launch.run starts every process of its node itself; run it as one "
                          "task per node (srun --ntasks-per-node=1, --nproc_per_node for the workers).")
    try:
        hosts = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                               text=True, check=True, timeout=60).stdout.split()
    except (OSError, subprocess.SubprocessError) as e:
        raise LaunchError("--slurm: `scontrol show hostnames %s` failed (%s)." % (nodelist, e))
    if len(hosts) != int(nodes):
        raise LaunchError("--slurm: SLURM_JOB_NUM_NODES=%s but the node list %s has %d host(s)."
                          % (nodes, nodelist, len(hosts)))
    return int(nodes), int(rank), hosts[0]


def make_plan(program, place: Placement, nproc_per_node="1", gpus_per_proc=1, no_python=False,
              log_dir=None, log=print):
    """Validates the placement and works out every local worker's command and environment:
    returns (command, [(rank, port, environment)], every worker's address)."""
    command = program_command(program, no_python)
    hosts, nnodes, node_rank = place.worker_hosts, place.nnodes, place.node_rank
    if nnodes < 1:
        raise LaunchError("--nnodes must be at least 1, got %d." % nnodes)
    if hosts and len(hosts) != nnodes:
        raise LaunchError("--worker_hosts names %d host(s) but --nnodes=%d." % (len(hosts), nnodes))
    if not 0 <= node_rank < nnodes:
        raise LaunchError("--node_rank must be in 0..%d (--nnodes=%d), got %d."
                          % (nnodes - 1, nnodes, node_rank))
    if gpus_per_proc < 0:
        raise LaunchError("--gpus_per_proc cannot be negative.")
    gpus = available_gpus()
    nproc = processes_per_node(nproc_per_node, gpus_per_proc, gpus)
    devices = worker_devices(nproc, gpus_per_proc, gpus)
    if hosts is None and nnodes == 1:
        hosts = [(place.master_addr, place.master_port + 1)]
    base_port = hosts[node_rank][1] if hosts else place.master_port + 1
    if base_port + nproc - 1 > 65535:
        raise LaunchError("worker ports %d..%d exceed 65535: lower the port."
                          % (base_port, base_port + nproc - 1))
    busy = [p for p in range(base_port, base_port + nproc) if rendezvous.port_in_use(p)]
    if busy:
        raise LaunchError("worker port(s) %s are in use on this host (another job?): pick another "
                          "--master_port (or ports in --worker_hosts)." % ", ".join(map(str, busy)))
    if log_dir:
        os.makedirs(log_dir, exist_ok=True)
    if hosts is None:   # several nodes, addresses learnt through the master
        if place.master_addr in ("127.0.0.1", "localhost"):
            log("warning: --master_addr=%s is reachable from this host only; give node 0's "
                "address when the nodes are different hosts." % place.master_addr)
        try:
            if node_rank == 0:
                names = rendezvous.serve_join(place.master_addr, place.master_port, nnodes, nproc,
                                              place.join_timeout, log)
            else:
                names = rendezvous.join(place.master_addr, place.master_port, node_rank, nnodes, nproc,
                                        place.join_timeout)
        except rendezvous.RendezvousError as e:
            raise LaunchError(str(e))
        hosts = [(name, place.master_port + 1) for name in names]
    addresses = ["%s:%d" % (host, port + local) for host, port in hosts for local in range(nproc)]
    workers = []
    for local in range(nproc):
        rank = node_rank * nproc + local
        env = {
            "TF_CONFIG": json.dumps({"cluster": {"worker": addresses},
                                     "task": {"type": "worker", "index": rank}}),
            "RANK": str(rank), "LOCAL_RANK": str(local), "WORLD_SIZE": str(len(addresses)),
            "LOCAL_WORLD_SIZE": str(nproc), "NODE_RANK": str(node_rank),
            "MASTER_ADDR": hosts[0][0], "MASTER_PORT": str(place.master_port),
            "PYTHONUNBUFFERED": "1"}
        if devices[local] is not None:
            env["CUDA_VISIBLE_DEVICES"] = devices[local]
        workers.append((rank, base_port + local, env))
    return command, workers, addresses


def main(argv):
    log_file = None

    def log(message):
        line = "launch.run: %s" % message
        print(line, file=sys.stderr, flush=True)
        if log_file:
            log_file.write(time.strftime("%H:%M:%S ") + line + "\n")
            log_file.flush()

    try:
        if FLAGS.log_dir:
            os.makedirs(FLAGS.log_dir, exist_ok=True)
            log_file = open(os.path.join(FLAGS.log_dir, "launcher.log"), "a")
        if FLAGS.max_restarts < 0:
            raise LaunchError("--max_restarts cannot be negative.")
        place = placement_from_flags()
        command, workers, addresses = make_plan(argv[1:], place, FLAGS.nproc_per_node,
                                                FLAGS.gpus_per_proc, FLAGS.no_python, FLAGS.log_dir, log)
    except (LaunchError, OSError) as e:
        print("launch.run: error: %s" % e, file=sys.stderr)
        return 2
    log("node %d: %d worker(s) (rank %d-%d of %d); workers %s; command: %s" % (
        place.node_rank, len(workers), workers[0][0], workers[-1][0], len(addresses),
        ",".join(addresses), " ".join(shlex.quote(a) for a in command)))
    if FLAGS.log_dir and not FLAGS.tee:
        log("worker output goes to %s/rank_<rank>.log" % FLAGS.log_dir)
    options = SupervisorOptions(max_restarts=FLAGS.max_restarts,
                                fatal_exit_codes=tuple(FLAGS.fatal_exit_codes),
                                stop_timeout=FLAGS.stop_timeout, log_dir=FLAGS.log_dir, tee=FLAGS.tee)
    return Launcher(command, workers, options, log).run()


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
