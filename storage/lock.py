"""A lock on a directory, held by one process at a time: a run's workdir, a data build's output.

    with DirectoryLock(workdir, "launch.pretrain", log=print):
        ...   # a second process on the same workdir gets a LockError naming this one

The lock is a small JSON file in the directory (`LOCK_FILE`) that names its holder: host, pid, the
process's start time, what it runs, when it started, and a heartbeat that a background thread
refreshes every `heartbeat` seconds. A lock left behind by a process that died (kill -9, a lost
host) never blocks a relaunch:
  * on the holder's own host, the holder is dead when its pid is gone, belongs to another process
    (its start time differs) or the host rebooted since (another boot id);
  * seen from another host, the holder is dead when its heartbeat is older than `lease` seconds.
A dead holder's lock is taken over, saying so. Taking the lock is atomic: O_CREAT|O_EXCL on a
local file system, a generation precondition on Cloud Storage (two processes cannot both take a
free or a stale lock). Other remote file systems get a best-effort lock.

Processes that only read a directory (runs reading their data) each hold a lock file of their own
in its READERS folder; a writer about to replace the directory asks `live_holders` for them.
"""

import json
import os
import socket
import sys
import threading
import time

from storage import fs

LOCK_FILE = ".lock"
READERS = ".readers"        # a directory's readers: one lock file each (READERS/<host>-<pid>.lock)
DEFAULT_LEASE = 120.0       # seconds without a heartbeat after which another host may take over
DEFAULT_HEARTBEAT = 30.0    # a quarter of the lease: three beats may fail (a storage hiccup) in one
_JOIN_TIMEOUT = 10.0        # seconds release() waits for the heartbeat thread (it may be mid-write)


class LockError(RuntimeError):
    """The directory is locked by a live process; the message names it."""


class DirectoryLock:
    """The lock of one directory, owned by the process that acquires it.

    Lifecycle: made (nothing happens yet), `acquire()`d (the lock file is written, or a LockError
    names the live holder; a dead holder's lock is taken over), then held: a daemon thread
    rewrites its heartbeat every `heartbeat` seconds, so hosts that cannot see this process know
    it lives. `release()` (or leaving the `with` block) stops the thread and deletes the file, if
    it is still this process's; releasing twice, or a lock never acquired, does nothing. If this
    process dies instead, the file stays and the next `acquire()` finds its holder dead.
    """

    def __init__(self, directory: str, what: str, lease: float = DEFAULT_LEASE,
                 heartbeat: float = DEFAULT_HEARTBEAT, log=None, path: str = None):
        """`path`: the lock file, when not directory/.lock: a directory that must stay empty
        until it is published by a rename (an export) is locked from a file beside it."""
        self.directory, self.what = directory, what
        self.path = path or fs.join(directory, LOCK_FILE)
        self.lease, self.heartbeat = lease, heartbeat
        self.log = log or (lambda text: print(text, file=sys.stderr, flush=True))
        self._store = _GcsStore(self.path) if self.path.startswith("gs://") else _FileStore(self.path)
        self._stop = threading.Event()
        self._thread = None
        self.held = False

    # ------------------------------------------------------------------------------ holding

    def acquire(self):
        fs.makedirs(self.path.rsplit("/", 1)[0] if "/" in self.path else ".")
        record = _me(self.what)
        if self._store.create(record):
            self._start(record)
            return self
        current, version = self._store.read()
        if current is None:           # released between our attempt and the read: try once more
            if self._store.create(record):
                self._start(record)
                return self
            current, version = self._store.read()
        alive, why = _alive(current, self.lease)
        if alive:
            raise LockError("%s is in use by %s (%s). Wait for it to finish or stop it; if that "
                            "process is gone for good, delete %s." % (
                                self.directory, _describe(current), why, self.path))
        if not self._store.replace(record, version):
            raise LockError("%s was taken by another process just now; it holds %s."
                            % (self.directory, self.path))
        self.log("Taking over the lock of %s from %s (%s)." % (self.directory, _describe(current), why))
        self._start(record)
        return self

    def release(self):
        if not self.held:
            return
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=_JOIN_TIMEOUT)
        self._store.delete()
        self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()

    def _start(self, record):
        self.held = True
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, args=(record,), daemon=True,
                                        name="lock-heartbeat")
        self._thread.start()

    def _beat(self, record):
        while not self._stop.wait(self.heartbeat):
            record = dict(record, heartbeat=time.time())
            try:
                if not self._store.refresh(record):
                    self.log("warning: the lock %s was taken over by another process; this one "
                             "keeps running, but two processes now share %s." % (self.path, self.directory))
                    return
            except Exception as e:   # a passing storage error: the next beat tries again
                self.log("warning: could not refresh the lock %s (%s)." % (self.path, e))


def live_holders(paths, lease: float = DEFAULT_LEASE):
    """Descriptions of the live holders of the lock files `paths` (files of dead ones are left
    out): readers that mark a directory each with a lock file of their own (`READERS`)."""
    out = []
    for path in paths:
        store = _GcsStore(path) if path.startswith("gs://") else _FileStore(path)
        record, _ = store.read()
        if record is not None and _alive(record, lease)[0]:
            out.append(_describe(record))
    return out


# ------------------------------------------------------------------------------- holders

def _me(what):
    now = time.time()
    return {"host": socket.gethostname(), "pid": os.getpid(), "process_start": _process_start(os.getpid()),
            "boot_id": _boot_id(), "what": what, "started": now, "heartbeat": now}


def _describe(r):
    return "pid %s on %s (%s, started %s)" % (
        r.get("pid"), r.get("host"), r.get("what"),
        time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r.get("started", 0))))


def _alive(record, lease):
    """(whether the holder may still be running, why we think so)."""
    if not isinstance(record, dict) or "pid" not in record:
        return False, "the lock file is unreadable"
    age = time.time() - float(record.get("heartbeat", 0))
    if record.get("host") == socket.gethostname():
        if record.get("boot_id") and _boot_id() and record["boot_id"] != _boot_id():
            return False, "the host restarted since"
        start = _process_start(int(record["pid"]))
        if start is None:
            return False, "no process %s runs on this host" % record["pid"]
        if record.get("process_start") not in (None, start):
            return False, "pid %s is now another process" % record["pid"]
        return True, "it runs on this host, last heartbeat %.0f s ago" % age
    if age > lease:
        return False, "no heartbeat for %.0f s (lease %.0f s)" % (age, lease)
    return True, "last heartbeat %.0f s ago; another host's lock expires %.0f s after its last " \
                 "heartbeat" % (age, lease)


def _process_start(pid):
    """A process's start time (clock ticks since boot, Linux), True if it runs (elsewhere), or
    None when no such process exists."""
    try:
        with open("/proc/%d/stat" % pid) as f:   # field 22, starttime; the name (field 2) may hold
            return int(f.read().rsplit(")", 1)[1].split()[19])   # spaces, so count after its ")"
    except FileNotFoundError:
        return None
    except OSError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return True


def _boot_id():
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return None


# ------------------------------------------------------------------------------- storage

def _parse(data):
    """The lock record in `data`; {} for a torn or foreign file (it holds no live holder)."""
    try:
        return json.loads(data)
    except ValueError:
        return {}


class _FileStore:
    """A local lock file (or any tf.io.gfile path: best effort, not atomic)."""

    def __init__(self, path):
        self.path = path

    def create(self, record):
        if fs.is_remote(self.path):
            if fs.exists(self.path):
                return False
            fs.write_bytes_atomic(self.path, json.dumps(record).encode())
            return True
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(record, f)
        return True

    def read(self):
        try:
            data = fs.read_bytes(self.path)
        except FileNotFoundError:
            return None, None
        return _parse(data), data

    def replace(self, record, version):
        current, data = self.read()
        if data != version:
            return False
        fs.write_bytes_atomic(self.path, json.dumps(record).encode())
        return True

    def refresh(self, record):
        current, _ = self.read()
        if not current or (current.get("pid"), current.get("host")) != (record["pid"], record["host"]):
            return False
        fs.write_bytes_atomic(self.path, json.dumps(record).encode())
        return True

    def delete(self):
        current, _ = self.read()
        if current and current.get("pid") == os.getpid() and current.get("host") == socket.gethostname():
            fs.remove(self.path)


class _GcsStore:
    """A lock object on Cloud Storage, updated with generation preconditions."""

    def __init__(self, url):
        from storage import gcs

        self.url = url
        bucket, name = gcs.split(url)
        self.blob = gcs.client().bucket(bucket).blob(name)
        self.generation = None

    def _upload(self, record, generation):
        from google.api_core import exceptions

        try:
            self.blob.upload_from_string(json.dumps(record), if_generation_match=generation)
        except exceptions.PreconditionFailed:
            return False
        self.generation = self.blob.generation
        return True

    def create(self, record):
        # The precondition makes this atomic; the existence check first only saves a failed
        # upload (and gives the same answer where preconditions are not honoured: emulators).
        return not self.blob.exists() and self._upload(record, 0)

    def read(self):
        from google.api_core import exceptions

        try:
            self.blob.reload()
            generation = self.blob.generation
            data = self.blob.download_as_bytes(if_generation_match=generation)
        except exceptions.NotFound:
            return None, None
        except exceptions.PreconditionFailed:   # rewritten between the two requests
            return self.read()
        return _parse(data), generation

    def replace(self, record, generation):
        return self._upload(record, generation)

    def refresh(self, record):
        return self._upload(record, self.generation)

    def delete(self):
        from google.api_core import exceptions

        try:
            self.blob.delete(if_generation_match=self.generation)
        except (exceptions.NotFound, exceptions.PreconditionFailed):
            pass
