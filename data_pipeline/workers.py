"""Worker processes that never outlive the process that started them.

A worker whose parent dies (killed with -9, or a SIGTERM that ends it) is killed too: on Linux
by PR_SET_PDEATHSIG, elsewhere by a watchdog thread that notices the parent is gone. Without
this, killing `launch.build_data --num_workers=N` left N workers running for ever.
"""

import concurrent.futures
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int):
    """In a child process: be killed when `parent_pid` dies (also if it already has)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    else:
        def watch():
            while os.getppid() == parent_pid:
                time.sleep(1.0)
            os._exit(1)
        threading.Thread(target=watch, daemon=True).start()
    if os.getppid() != parent_pid:   # the parent died before the line above took effect
        os._exit(1)


def _start(parent_pid, initializer, initargs):
    die_with_parent(parent_pid)
    if initializer is not None:
        initializer(*initargs)


def process_pool(num_workers: int, initializer=None, initargs=()):
    """A ProcessPoolExecutor of `num_workers` processes that die with this one, already started.

    Workers are forked (fast: nothing to re-import) unless TensorFlow is loaded in this process
    (which must not be forked); then spawned. Unlike multiprocessing.Pool, ProcessPoolExecutor
    fails loudly when a worker dies.
    """
    method = "fork" if ("tensorflow" not in sys.modules
                        and "fork" in multiprocessing.get_all_start_methods()) else "spawn"
    pool = concurrent.futures.ProcessPoolExecutor(
        num_workers, mp_context=multiprocessing.get_context(method), initializer=_start,
        initargs=(os.getpid(), initializer, initargs))
    for _ in range(num_workers):
        pool.submit(int)  # starts the processes now
    return pool
