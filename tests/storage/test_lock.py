"""storage.lock: one process per directory; a dead holder's lock never blocks a relaunch."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from storage import lock

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOLD = ("import sys, time; from storage import lock; "
        "lock.DirectoryLock(sys.argv[1], 'a test holder', heartbeat=0.2).acquire(); "
        "print('held', flush=True); time.sleep(600)")


def _holder(directory):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(directory)], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True, env=dict(os.environ, PYTHONPATH=ROOT))
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_live_holder_is_named_and_a_killed_one_is_taken_over(tmp_path):
    holder = _holder(tmp_path)
    try:
        with pytest.raises(lock.LockError) as e:
            lock.DirectoryLock(str(tmp_path), "second").acquire()
        assert "in use by pid %d on %s (a test holder" % (holder.pid, socket.gethostname()) in str(e.value)
        assert "it runs on this host" in str(e.value)
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    said = []
    with lock.DirectoryLock(str(tmp_path), "relaunch", log=said.append) as held:
        assert held.held
        record = json.load(open(tmp_path / lock.LOCK_FILE))
        assert record["pid"] == os.getpid() and record["what"] == "relaunch"
    assert "Taking over the lock" in said[0] and "no process %d runs on this host" % holder.pid in said[0]
    assert not (tmp_path / lock.LOCK_FILE).exists()      # released


def _write(tmp_path, **fields):
    record = dict({"host": socket.gethostname(), "pid": os.getpid(), "what": "x", "started": time.time(),
                   "heartbeat": time.time()}, **fields)
    (tmp_path / lock.LOCK_FILE).write_text(json.dumps(record))


def test_other_hosts_locks_expire_without_heartbeat(tmp_path):
    _write(tmp_path, host="another-host", heartbeat=time.time() - 5)
    with pytest.raises(lock.LockError, match="last heartbeat 5 s ago"):
        lock.DirectoryLock(str(tmp_path), "second", lease=60).acquire()
    _write(tmp_path, host="another-host", heartbeat=time.time() - 61)
    said = []
    lock.DirectoryLock(str(tmp_path), "second", lease=60, log=said.append).acquire().release()
    assert "no heartbeat for 61 s (lease 60 s)" in said[0]


def test_a_reused_pid_or_a_reboot_does_not_keep_a_lock(tmp_path):
    parent = os.getppid()   # alive, but not the process that wrote the lock
    _write(tmp_path, pid=parent, process_start=-1)
    said = []
    lock.DirectoryLock(str(tmp_path), "second", log=said.append).acquire().release()
    assert "pid %d is now another process" % parent in said[0]
    _write(tmp_path, pid=parent, process_start=lock._process_start(parent), boot_id="another-boot")
    said = []
    lock.DirectoryLock(str(tmp_path), "second", log=said.append).acquire().release()
    assert "the host restarted since" in said[0] or not lock._boot_id()


def test_the_heartbeat_is_refreshed_while_held(tmp_path):
    held = lock.DirectoryLock(str(tmp_path), "beating", heartbeat=0.1).acquire()
    first = json.load(open(tmp_path / lock.LOCK_FILE))["heartbeat"]
    time.sleep(0.5)
    assert json.load(open(tmp_path / lock.LOCK_FILE))["heartbeat"] > first
    held.release()


def test_a_lock_on_cloud_storage(gcs_emulator):
    """Against the GCS emulator on loopback (it ignores generation preconditions, so this checks
    the holder logic; atomicity rests on GCS's if_generation_match)."""
    from storage import gcs

    url = "gs://%s/runs/locked" % gcs_emulator
    first = lock.DirectoryLock(url, "first", heartbeat=0.2).acquire()
    with pytest.raises(lock.LockError, match="in use by pid %d" % os.getpid()):
        lock.DirectoryLock(url, "second").acquire()
    first.release()
    assert lock.LOCK_FILE not in gcs.list_names(url)
    blob = gcs.client().bucket(gcs_emulator).blob("runs/locked/" + lock.LOCK_FILE)
    blob.upload_from_string(json.dumps({"host": "gone", "pid": 1, "what": "x", "started": 0, "heartbeat": 0}))
    said = []
    lock.DirectoryLock(url, "second", log=said.append).acquire().release()
    assert "Taking over the lock of %s from pid 1 on gone" % url in said[0]
