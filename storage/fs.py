"""File access for local paths and remote ones (gs://, ...) behind one small API.

Local files use Python's own I/O (fast, no TensorFlow import). Anything with a URL scheme goes
through `tf.io.gfile`, imported only then, so building data from local text never pays for TF.

A file's checksums are defined here, once: `sha256` (hex; vocabularies, checkpoints) and `crc32c`
(base64 of the big-endian CRC32C, the form Cloud Storage reports an object's in; data shards),
and `ChecksummedWriter` computes the latter while a file is written.
"""

import base64
import contextlib
import glob as _glob
import hashlib
import io
import json
import os
import shutil

# A remote read is one request per buffer fill: 1 MiB amortises its latency.
_REMOTE_BUFFER = 1 << 20
# Checksums read files in 4 MiB pieces: large enough that the per-call cost vanishes, small
# enough that memory does not grow with the file.
_CHECKSUM_PIECE = 1 << 22


def is_remote(path: str) -> bool:
    return "://" in path and not path.startswith("file://")


def _local(path):
    return path[len("file://"):] if path.startswith("file://") else path


def _gfile():
    import tensorflow as tf  # Deferred: only remote paths need it.

    return tf.io.gfile


def open_read(path: str):
    """Binary, buffered reader. Raises FileNotFoundError naming the path."""
    if not is_remote(path):
        return open(_local(path), "rb")
    g = _gfile()
    if not g.exists(path):
        raise FileNotFoundError("No such file: %s" % path)
    return io.BufferedReader(_GFileRaw(g.GFile(path, "rb")), buffer_size=_REMOTE_BUFFER)


def open_write(path: str):
    if not is_remote(path):
        return open(_local(path), "wb")
    return _gfile().GFile(path, "wb")


def read_bytes(path: str) -> bytes:
    with open_read(path) as f:
        return f.read()


def write_bytes_atomic(path: str, data: bytes):
    """Writes to a temporary name, then renames: readers never see a half-written file. On an
    error (a full disk, a rename that fails) the temporary file is removed and the error raised."""
    with atomic_writer(path) as f:
        f.write(data)


@contextlib.contextmanager
def atomic_writer(path: str):
    """A binary file to write `path` through in pieces (results streamed out as they are made):
    it is a temporary file until the block ends without error, then renamed to `path`. On any
    error, in the block, the write or the rename, the temporary file is removed and the error
    raised. Opening it is where a missing or unwritable directory fails."""
    tmp = path + ".tmp-%d" % os.getpid()
    try:
        with open_write(tmp) as f:
            yield f
        rename(tmp, path)
    except BaseException:
        remove(tmp)
        raise


def read_json(path: str):
    return json.loads(read_bytes(path))


def write_json_atomic(path: str, value, indent=2):
    write_bytes_atomic(path, (json.dumps(value, indent=indent) + "\n").encode("utf-8"))


def sha256(path: str) -> str:
    """The sha256 of a file (hex)."""
    digest = hashlib.sha256()
    with open_read(path) as f:
        for piece in iter(lambda: f.read(_CHECKSUM_PIECE), b""):
            digest.update(piece)
    return digest.hexdigest()


def crc32c(path: str) -> str:
    """The CRC32C of a file, base64 as Cloud Storage reports an object's (`Blob.crc32c`)."""
    import google_crc32c

    checksum = google_crc32c.Checksum()
    with open_read(path) as f:
        for piece in iter(lambda: f.read(_CHECKSUM_PIECE), b""):
            checksum.update(piece)
    return _base64(checksum)


def _base64(checksum) -> str:
    return base64.b64encode(checksum.digest()).decode("ascii")


class ChecksummedWriter:
    """Wraps a binary file being written: counts its bytes and computes its CRC32C (as `crc32c`
    would from the finished file) on the way."""

    def __init__(self, f):
        import google_crc32c

        self._f, self._crc, self.bytes = f, google_crc32c.Checksum(), 0

    def write(self, data):
        self._crc.update(data)
        self.bytes += len(data)
        return self._f.write(data)

    def flush(self):
        self._f.flush()

    @property
    def name(self):   # gzip writes the file's name into its header: keep the bytes as they were
        return getattr(self._f, "name", "")

    def close(self):
        self._f.close()

    @property
    def crc32c(self) -> str:
        return _base64(self._crc)


def copy(src: str, dst: str):
    """Copies one file (local or remote, either side) to `dst`, atomically."""
    if not is_remote(src) and not is_remote(dst):
        tmp = _local(dst) + ".tmp-%d" % os.getpid()
        try:
            shutil.copyfile(_local(src), tmp)
            os.replace(tmp, _local(dst))
        except BaseException:
            remove(tmp)
            raise
        return
    write_bytes_atomic(dst, read_bytes(src))


def exists(path: str) -> bool:
    return os.path.exists(_local(path)) if not is_remote(path) else _gfile().exists(path)


def isdir(path: str) -> bool:
    return os.path.isdir(_local(path)) if not is_remote(path) else _gfile().isdir(path)


def size(path: str) -> int:
    return os.path.getsize(_local(path)) if not is_remote(path) else _gfile().stat(path).length


def mtime(path: str) -> float:
    if not is_remote(path):
        return os.path.getmtime(_local(path))
    return _gfile().stat(path).mtime_nsec / 1e9


def glob(pattern: str):
    if not is_remote(pattern):
        return sorted(_glob.glob(_local(pattern)))
    return sorted(_gfile().glob(pattern))


def listdir(path: str):
    return sorted(os.listdir(_local(path))) if not is_remote(path) else sorted(_gfile().listdir(path))


def makedirs(path: str):
    if not is_remote(path):
        os.makedirs(_local(path), exist_ok=True)
    elif not path.startswith("gs://"):   # Cloud Storage has no directories: objects make them
        _gfile().makedirs(path)


def rename(src: str, dst: str):
    if not is_remote(src):
        os.replace(_local(src), _local(dst))
    else:
        _gfile().rename(src, dst, overwrite=True)


def remove(path: str):
    """Removes a file, or a directory with everything in it; nothing if there is nothing there."""
    if not is_remote(path):
        if os.path.isdir(_local(path)):
            shutil.rmtree(_local(path))
        elif os.path.exists(_local(path)):
            os.remove(_local(path))
        return
    g = _gfile()
    if g.isdir(path):
        g.rmtree(path)
    elif g.exists(path):
        g.remove(path)


def join(*parts: str) -> str:
    return os.path.join(*parts) if not is_remote(parts[0]) else "/".join(p.rstrip("/") for p in parts)


class _GFileRaw(io.RawIOBase):
    """Adapts a tf.io.gfile.GFile to io.RawIOBase so it can be buffered and decoded like a file."""

    def __init__(self, gfile):
        self._f = gfile

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self._f.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def close(self):
        self._f.close()
        super().close()
