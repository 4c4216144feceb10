"""The supervisor of one node's worker processes (`launch.run`): starts them, forwards their output
line by line to per-rank logs and/or the console, and when one fails or is killed, kills the
others and starts them all again (a synchronous job cannot go on without one), up to
max_restarts; no restart after a fatal exit code (bad input or config). SIGINT/SIGTERM reach
every worker as SIGTERM (checkpoint and exit); stragglers are killed after stop_timeout or at a
second signal. Workers die with the launcher, even when it is killed with -9.
"""

import dataclasses
import os
import selectors
import signal
import subprocess
import sys
import time
from typing import Optional

from data_pipeline import workers as processes
from launch.rendezvous import port_in_use


def _die_with_launcher(launcher=os.getpid()):
    """In the child before exec: SIGKILL when the launcher dies, even by kill -9."""
    processes.die_with_parent(launcher)


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


@dataclasses.dataclass
class SupervisorOptions:
    max_restarts: int = 3               # restarts of all workers after a failure
    fatal_exit_codes: tuple = ("2",)    # worker exit codes after which nothing is restarted
    stop_timeout: float = 300.0         # seconds to checkpoint and exit after a stop signal
    log_dir: Optional[str] = None       # one log per rank there (else the console)
    tee: bool = False                   # with log_dir, the console too


class Launcher:
    """Runs the workers, restarts them all after a failure, forwards stop signals."""

    def __init__(self, command, workers, options: SupervisorOptions, log):
        self.command, self.workers, self.options, self.log = command, workers, options, log
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
            if attempt >= self.options.max_restarts:
                self.log("giving up after %d restart(s) (--max_restarts=%d)."
                         % (attempt, self.options.max_restarts))
                return 1
            attempt += 1
            self.log("restarting all workers (restart %d of %d)." % (attempt, self.options.max_restarts))

    def _wait_for_ports(self, timeout=60):
        deadline = time.time() + timeout
        while (any(port_in_use(port) for _, port, _ in self.workers) and time.time() < deadline
               and not self.signals):
            time.sleep(0.5)

    def _attempt(self, attempt):
        """Runs every worker once: finished | failed (restart) | stopped (by a signal, cleanly) |
        killed (workers that did not stop in time)."""
        console = self.options.tee or not self.options.log_dir
        procs = [Worker(rank, self.command, env, attempt, self.options.log_dir, console)
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
                                                               self.options.stop_timeout))
                    for w in running:
                        w.signal(signal.SIGTERM)
                    deadline, forwarded = time.time() + self.options.stop_timeout, True
                elif failed and not self.signals:         # the others cannot go on without it
                    self.log("rank %d failed: stopping the other workers." % failed[0].rank)
                    self._kill(running)
                elif len(running) < len(procs) and deadline is None and not self.signals:
                    deadline = time.time() + self.options.stop_timeout   # some finished: the rest should too
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
            if codes & set(self.options.fatal_exit_codes):
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
