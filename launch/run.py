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
config") is not restarted: it would fail the same way. SIGINT (Ctrl-C) and SIGTERM are forwarded to every worker as SIGTERM, on which
launch.pretrain checkpoints at its next loop boundary and exits; workers still running after
--stop_timeout seconds, or at a second signal, are killed. On other hosts, workers notice a lost
peer through TensorFlow's health checks, fail, and are restarted by their own launcher.

Exit status: 0 every worker finished; 1 a worker failed and no restart was left or made (or workers had
to be killed after a stop signal); 2 bad flags or setup (nothing was started); 128 + the signal
number when stopped by SIGINT/SIGTERM and every worker exited cleanly (re-run to resume).
"""

import ctypes
import importlib.util
import json
import os
import re
import selectors
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time

from absl import app, flags, logging  # noqa: F401 (defines --log_dir)

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


def port_in_use(port):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT are fine
        try:
            s.bind(("", port))
        except OSError:
            return True
    return False


# ------------------------------------------------------------------- joining several nodes

def _send(conn, message):
    conn.sendall((json.dumps(message) + "\n").encode())


def _receive(conn):
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            raise ConnectionError("connection closed")
        data += chunk
    return json.loads(data)


def serve_join(master_addr, port, nnodes, nproc, timeout, log):
    """Node 0: waits for the other nnodes-1 launchers; returns every node's host, by node rank."""
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind(("", port))
    except OSError as e:
        raise LaunchError("the master port %d is in use on this host (%s): another job's launcher? "
                          "Pick another --master_port (the same on every node)." % (port, e))
    server.listen(nnodes)
    joined = {}                                   # node rank -> (connection, host)
    deadline = time.time() + timeout
    log("waiting for %d other node(s) on port %d" % (nnodes - 1, port))
    try:
        while len(joined) < nnodes - 1:
            if time.time() > deadline:
                missing = [r for r in range(1, nnodes) if r not in joined]
                raise LaunchError("node(s) %s did not join within %d s: start launch.run on every "
                                  "node with the same --nnodes, --master_addr and --master_port."
                                  % (", ".join(map(str, missing)), timeout))
            server.settimeout(max(deadline - time.time(), 0.01))
            try:
                conn, (host, _) = server.accept()
                conn.settimeout(10)
                hello = _receive(conn)
            except (OSError, ValueError, ConnectionError):
                continue                          # a timeout, or something that is not a launcher
            rank = hello.get("node_rank")
            if hello.get("nnodes") != nnodes or hello.get("nproc") != nproc:
                problem = ("it runs --nnodes=%s --nproc_per_node=%s but node 0 runs %d and %d"
                           % (hello.get("nnodes"), hello.get("nproc"), nnodes, nproc))
            elif rank in joined:
                problem = "node rank %d already joined from %s" % (rank, joined[rank][1])
            else:
                problem = None
            if problem:
                log("refused a node from %s: %s" % (host, problem))
                _send(conn, {"error": problem})
                conn.close()
                continue
            joined[rank] = (conn, host)
            log("node %d joined from %s" % (rank, host))
        hosts = [master_addr] + [joined[r][1] for r in range(1, nnodes)]
        for conn, _ in joined.values():
            _send(conn, {"hosts": hosts})
        return hosts
    finally:
        for conn, _ in joined.values():
            conn.close()
        server.close()


def join(master_addr, port, node_rank, nnodes, nproc, timeout):
    """Nodes 1..n-1: reach the master's launcher; returns every node's host, by node rank."""
    try:
        socket.getaddrinfo(master_addr, port)
    except socket.gaierror as e:
        raise LaunchError("cannot resolve --master_addr %r: %s." % (master_addr, e))
    deadline = time.time() + timeout
    while True:
        try:
            timeout_now = max(min(5.0, deadline - time.time()), 0.1)
            conn = socket.create_connection((master_addr, port), timeout=timeout_now)
            break
        except OSError as e:
            if time.time() > deadline:
                raise LaunchError("cannot reach the master at %s:%d within %d s (%s): start "
                                  "launch.run with --node_rank=0 there, and check --master_addr, "
                                  "--master_port and the firewall." % (master_addr, port, timeout, e))
            time.sleep(0.5)
    with conn:
        _send(conn, {"node_rank": node_rank, "nnodes": nnodes, "nproc": nproc})
        conn.settimeout(max(deadline - time.time(), 1.0))
        try:
            reply = _receive(conn)
        except (OSError, ValueError, ConnectionError) as e:
            raise LaunchError("reached the master at %s:%d, but not every node joined within %d s "
                              "(%s)." % (master_addr, port, timeout, e))
    if "error" in reply:
        raise LaunchError("the master at %s:%d refused this node: %s." % (master_addr, port, reply["error"]))
    return reply["hosts"]


# ------------------------------------------------------------------------------- the plan

def make_plan(program, log):
    """Validates the flags and works out every local worker's command and environment: returns
    (command, [(rank, port, environment)], every worker's address)."""
    command = program_command(program, FLAGS.no_python)
    if not 1 <= FLAGS.master_port <= 65535:
        raise LaunchError("--master_port must be in 1-65535, got %d." % FLAGS.master_port)
    hosts = parse_worker_hosts(FLAGS.worker_hosts, FLAGS.master_port + 1) if FLAGS.worker_hosts else None
    nnodes = FLAGS.nnodes if FLAGS.nnodes is not None else len(hosts or [None])
    if nnodes < 1:
        raise LaunchError("--nnodes must be at least 1, got %d." % nnodes)
    if hosts and len(hosts) != nnodes:
        raise LaunchError("--worker_hosts names %d host(s) but --nnodes=%d." % (len(hosts), nnodes))
    if not 0 <= FLAGS.node_rank < nnodes:
        raise LaunchError("--node_rank must be in 0..%d (--nnodes=%d), got %d."
                          % (nnodes - 1, nnodes, FLAGS.node_rank))
    if FLAGS.gpus_per_proc < 0 or FLAGS.max_restarts < 0:
        raise LaunchError("--gpus_per_proc and --max_restarts cannot be negative.")
    gpus = available_gpus()
    nproc = processes_per_node(FLAGS.nproc_per_node, FLAGS.gpus_per_proc, gpus)
    devices = worker_devices(nproc, FLAGS.gpus_per_proc, gpus)
    if hosts is None and nnodes == 1:
        hosts = [(FLAGS.master_addr, FLAGS.master_port + 1)]
    base_port = hosts[FLAGS.node_rank][1] if hosts else FLAGS.master_port + 1
    if base_port + nproc - 1 > 65535:
        raise LaunchError("worker ports %d..%d exceed 65535: lower the port."
                          % (base_port, base_port + nproc - 1))
    busy = [p for p in range(base_port, base_port + nproc) if port_in_use(p)]
    if busy:
        raise LaunchError("worker port(s) %s are in use on this host (another job?): pick another "
                          "--master_port (or ports in --worker_hosts)." % ", ".join(map(str, busy)))
    if FLAGS.log_dir:
        os.makedirs(FLAGS.log_dir, exist_ok=True)
    if hosts is None:   # several nodes, addresses learnt through the master
        if FLAGS.master_addr in ("127.0.0.1", "localhost"):
            log("warning: --master_addr=%s is reachable from this host only; give node 0's "
                "address when the nodes are different hosts." % FLAGS.master_addr)
        if FLAGS.node_rank == 0:
            names = serve_join(FLAGS.master_addr, FLAGS.master_port, nnodes, nproc,
                               FLAGS.join_timeout, log)
        else:
            names = join(FLAGS.master_addr, FLAGS.master_port, FLAGS.node_rank, nnodes, nproc,
                         FLAGS.join_timeout)
        hosts = [(name, FLAGS.master_port + 1) for name in names]
    addresses = ["%s:%d" % (host, port + local) for host, port in hosts for local in range(nproc)]
    workers = []
    for local in range(nproc):
        rank = FLAGS.node_rank * nproc + local
        env = {
            "TF_CONFIG": json.dumps({"cluster": {"worker": addresses},
                                     "task": {"type": "worker", "index": rank}}),
            "RANK": str(rank), "LOCAL_RANK": str(local), "WORLD_SIZE": str(len(addresses)),
            "LOCAL_WORLD_SIZE": str(nproc), "NODE_RANK": str(FLAGS.node_rank),
            "MASTER_ADDR": hosts[0][0], "MASTER_PORT": str(FLAGS.master_port),
            "PYTHONUNBUFFERED": "1"}
        if devices[local] is not None:
            env["CUDA_VISIBLE_DEVICES"] = devices[local]
        workers.append((rank, base_port + local, env))
    return command, workers, addresses


# ------------------------------------------------------------------------------ supervision

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_launcher():
    """In the child before exec: SIGKILL when the launcher dies, even by kill -9 (Linux)."""
    if _libc is not None:
        _libc.prctl(1, signal.SIGKILL)   # PR_SET_PDEATHSIG


def _has_exited(process):
    """Whether `process` has exited, without reaping it where the platform allows (waitid)."""
    if process.returncode is not None:
        return True
    if not hasattr(os, "waitid"):
        return process.poll() is not None
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return process.poll() is not None


def _drain(stream, until):
    """The bytes left in a pipe: read until EOF, or until no more come before time `until`."""
    import select

    fd, chunks = stream.fileno(), []
    while True:
        ready, _, _ = select.select([fd], [], [], max(until - time.time(), 0))
        if not ready:
            break
        data = os.read(fd, 65536)
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


class Worker:
    """One worker process, its output forwarded line by line to its log file and/or the console."""

    def __init__(self, rank, command, env, attempt, log_dir, console):
        self.rank, self.console = rank, console
        self.log = open(os.path.join(log_dir, "rank_%d.log" % rank), "ab") if log_dir else None
        if self.log:
            self.log.write(b"===== launch.run: attempt %d, %s =====\n"
                           % (attempt, time.strftime("%Y-%m-%d %H:%M:%S").encode()))
            self.log.flush()
        self.process = subprocess.Popen(command, env=dict(os.environ, RESTART_COUNT=str(attempt), **env),
                                        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, start_new_session=True,
                                        preexec_fn=_die_with_launcher)
        self.pending = {}
        self.exit_code = None

    def output(self, stream, data, end=False):
        """Forwards the complete lines of `data`; at the `end` of `stream`, also a partial one."""
        data = self.pending.pop(stream, b"") + data
        lines = data.splitlines(keepends=True)
        if lines and not end and not lines[-1].endswith(b"\n"):
            self.pending[stream] = lines.pop()
        for line in lines:
            if not line.endswith(b"\n"):
                line += b"\n"
            if self.log:
                self.log.write(line)
            if self.console:
                out = sys.stdout if stream is self.process.stdout else sys.stderr
                out.buffer.write(b"[rank %d] " % self.rank + line)
                out.flush()
        if self.log:
            self.log.flush()

    def signal(self, signum):
        try:
            os.killpg(self.process.pid, signum)   # its own session: the worker and its children
        except ProcessLookupError:
            pass

    def close(self):
        if self.log:
            self.log.close()


def describe_exit(code):
    if code < 0:
        try:
            return "killed by %s" % signal.Signals(-code).name
        except ValueError:
            return "killed by signal %d" % -code
    return "exit code %d" % code


class Launcher:
    def __init__(self, command, workers, log):
        self.command, self.workers, self.log = command, workers, log
        self.signals = []

    def _on_signal(self, signum, frame):
        del frame
        self.signals.append(signum)

    def run(self):
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self._on_signal)
        attempt = 0
        while True:
            if attempt:   # a restart: the killed workers' ports may take a moment to be released
                self._wait_for_ports()
            if self.signals:   # also one that came while waiting: start no new workers
                return 128 + self.signals[0]
            outcome = self._attempt(attempt)
            if outcome == "finished":
                self.log("all %d worker(s) finished." % len(self.workers))
                return 0
            if outcome == "stopped":
                return 128 + self.signals[0]
            if outcome in ("killed", "fatal"):
                return 1
            if attempt >= FLAGS.max_restarts:
                self.log("giving up after %d restart(s) (--max_restarts=%d)."
                         % (attempt, FLAGS.max_restarts))
                return 1
            attempt += 1
            self.log("restarting all workers (restart %d of %d)." % (attempt, FLAGS.max_restarts))

    def _wait_for_ports(self, timeout=60):
        deadline = time.time() + timeout
        while (any(port_in_use(port) for _, port, _ in self.workers) and time.time() < deadline
               and not self.signals):
            time.sleep(0.5)

    def _attempt(self, attempt):
        """Runs every worker once: finished | failed (restart) | stopped (by a signal, cleanly) |
        killed (workers that did not stop in time)."""
        console = FLAGS.tee or not FLAGS.log_dir
        procs = [Worker(rank, self.command, env, attempt, FLAGS.log_dir, console)
                 for rank, _, env in self.workers]
        self.log("attempt %d: %s" % (attempt, ", ".join("rank %d pid %d" % (w.rank, w.process.pid)
                                                          for w in procs)))
        selector = selectors.DefaultSelector()
        for w in procs:
            selector.register(w.process.stdout, selectors.EVENT_READ, w)
            selector.register(w.process.stderr, selectors.EVENT_READ, w)
        deadline, forwarded = None, False      # deadline: when workers still running get killed
        try:
            while True:
                self._forward_output(selector)
                self._note_exits(procs)
                running = [w for w in procs if w.exit_code is None]
                failed = [w for w in procs if w.exit_code not in (None, 0)]
                if not running:
                    break
                if self.signals and not forwarded:        # stop: every worker checkpoints and exits
                    self.log("%s: asking the workers to checkpoint and exit (SIGTERM; killed after "
                             "%d s or at a second signal)." % (signal.Signals(self.signals[0]).name,
                                                               FLAGS.stop_timeout))
                    for w in running:
                        w.signal(signal.SIGTERM)
                    deadline, forwarded = time.time() + FLAGS.stop_timeout, True
                elif failed and not self.signals:         # the others cannot go on without it
                    self.log("rank %d failed: stopping the other workers." % failed[0].rank)
                    self._kill(running)
                elif len(running) < len(procs) and deadline is None and not self.signals:
                    deadline = time.time() + FLAGS.stop_timeout   # some finished: the rest should too
                if len(self.signals) > 1 or (deadline and time.time() > deadline):
                    self.log("killing worker(s) %s, still running." % ", ".join(str(w.rank) for w in running))
                    self._kill(running)
                    if not self.signals:
                        return "killed"
            if self.signals:
                clean = all(w.exit_code == 0 for w in procs)
                self.log("stopped; %s" % ("every worker exited cleanly: re-run the same command to "
                                          "resume." if clean else "some workers did not exit cleanly."))
                return "stopped" if clean else "killed"
            codes = {str(w.exit_code) for w in procs if w.exit_code != 0}
            if codes & set(FLAGS.fatal_exit_codes):
                self.log("a worker exited with %s (--fatal_exit_codes: bad input or config); not "
                         "restarting." % ", ".join(sorted(codes)))
                return "fatal"
            return "failed" if codes else "finished"
        finally:
            for w in procs:
                if w.process.returncode is None:   # running, or exited but not reaped: its group too
                    w.signal(signal.SIGKILL)
                    w.process.wait()
            # What is left in the pipes. Not a blocking read to EOF: a process the worker started
            # in another session may hold them open for ever.
            drain_until = time.time() + 1.0
            for w in procs:
                for stream in (w.process.stdout, w.process.stderr):
                    w.output(stream, _drain(stream, drain_until), end=True)
                    stream.close()
                w.close()
            selector.close()

    @staticmethod
    def _forward_output(selector, timeout=0.1):
        """Waits up to `timeout` s for worker output and forwards what came."""
        for key, _ in selector.select(timeout):
            data = os.read(key.fd, 65536)
            if not data:
                selector.unregister(key.fileobj)
            key.data.output(key.fileobj, data, end=not data)

    def _note_exits(self, procs):
        for w in procs:
            if w.exit_code is None and _has_exited(w.process):
                # Processes the worker left in its process group (its session) go with it: they
                # would hold its output pipes open, and outlive the job. The worker is not reaped
                # yet, so its process group id cannot have been reused by another process.
                if w.process.returncode is None:
                    w.signal(signal.SIGKILL)
                w.exit_code = w.process.wait()
                self.log("rank %d: %s" % (w.rank, describe_exit(w.exit_code)))

    def _kill(self, workers):
        for w in workers:
            w.signal(signal.SIGKILL)
        for w in workers:
            w.process.wait()


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
        command, workers, addresses = make_plan(argv[1:], log)
    except (LaunchError, OSError) as e:
        print("launch.run: error: %s" % e, file=sys.stderr)
        return 2
    log("node %d: %d worker(s) (rank %d-%d of %d); workers %s; command: %s" % (
        FLAGS.node_rank, len(workers), workers[0][0], workers[-1][0], len(addresses),
        ",".join(addresses), " ".join(shlex.quote(a) for a in command)))
    if FLAGS.log_dir and not FLAGS.tee:
        log("worker output goes to %s/rank_<rank>.log" % FLAGS.log_dir)
    return Launcher(command, workers, log).run()


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
