"""Google Cloud Storage through `google-cloud-storage`: a preflight that fails in seconds, and
transfers whose bytes are verified with CRC32C.

    gcs.preflight(read=["gs://b/data/wiki_128"], write=["gs://b/runs/base", "gs://b/exports/base"])
    gcs.upload_directory("/tmp/stage", "gs://b/exports/base/100000", names)   # the last name last

Why not only `tf.io.gfile`: TensorFlow reads and writes gs:// paths itself (data, checkpoints),
but its errors come late (after a model is built, or at the first checkpoint of a long run), and
it reports no checksum of what it wrote. A preflight and verified uploads catch a missing bucket,
missing credentials or a corrupted transfer before they cost a run.

The client honours `STORAGE_EMULATOR_HOST` (the tests run a GCS emulator on loopback).
TensorFlow's own GCS filesystem does not: its endpoints are fixed to googleapis.com, so the
gs:// paths that go through `tf.io.gfile` cannot be pointed at an emulator.
"""

import os
import uuid

from storage import fs

DEFAULT_TIMEOUT = 10.0   # seconds per request in the preflight


class GcsError(RuntimeError):
    """A bucket that is missing, unreachable or not writable, or a transfer that did not verify."""


def is_gcs(path) -> bool:
    return isinstance(path, str) and path.startswith("gs://")


def split(url: str):
    """'gs://bucket/a/b' -> ('bucket', 'a/b')."""
    if not is_gcs(url):
        raise GcsError("%r is not a gs:// path" % url)
    bucket, _, prefix = url[len("gs://"):].partition("/")
    if not bucket:
        raise GcsError("%r names no bucket (expected gs://BUCKET/path)" % url)
    return bucket, prefix.strip("/")


def client():
    """A storage client; a clear GcsError when no credentials can be found."""
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    try:
        # project=None: no project is needed for bucket and object calls, and inferring one can
        # fail on machines whose credentials carry none.
        return storage.Client(project=os.environ.get("GOOGLE_CLOUD_PROJECT"))
    except DefaultCredentialsError as e:
        raise GcsError("No Google Cloud credentials found (%s). Run `gcloud auth application-default "
                       "login`, or set GOOGLE_APPLICATION_CREDENTIALS to a service-account key." % e)


# ------------------------------------------------------------------------------ preflight

def preflight(read=(), write=(), timeout: float = DEFAULT_TIMEOUT):
    """Checks every gs:// path (others are ignored): its bucket exists; paths in `write` accept a
    small object (written and deleted again); paths in `read` have at least one object.

    Requests are not retried, so a wrong bucket, missing permission or unreachable endpoint fails
    within about `timeout` seconds with a GcsError that names the path.
    """
    read = [p for p in read if is_gcs(p)]
    write = [p for p in write if is_gcs(p)]
    if not read and not write:
        return
    c = client()
    for url in write:
        _call(url, "write to", lambda: _probe_write(c, url, timeout))
    for url in read:
        _call(url, "read", lambda: _probe_read(c, url, timeout))


def _probe_write(c, url, timeout):
    bucket_name, prefix = split(url)
    bucket = _existing_bucket(c, bucket_name, url, timeout)
    blob = bucket.blob(_join(prefix, ".preflight-%s" % uuid.uuid4().hex))
    blob.upload_from_string(b"preflight", timeout=timeout, retry=None)
    blob.delete(timeout=timeout, retry=None)


def _probe_read(c, url, timeout):
    bucket_name, prefix = split(url)
    bucket = _existing_bucket(c, bucket_name, url, timeout)
    blobs = list(c.list_blobs(bucket, prefix=prefix, max_results=1, timeout=timeout, retry=None))
    if not blobs:
        raise GcsError("%s: nothing there (no object starts with gs://%s/%s)." % (url, bucket_name, prefix))


def _existing_bucket(c, bucket_name, url, timeout):
    from google.api_core.exceptions import Forbidden

    bucket = c.bucket(bucket_name)
    try:
        found = bucket.exists(timeout=timeout, retry=None)
    except Forbidden:
        # Object-level roles (e.g. storage.objectAdmin) may not read bucket metadata; the object
        # probe that follows is the real test then.
        return bucket
    if not found:
        raise GcsError("%s: bucket gs://%s does not exist. Create it (`gcloud storage buckets create "
                       "gs://%s`) or fix the path." % (url, bucket_name, bucket_name))
    return bucket


def _call(url, action, fn):
    """Runs fn, turning the client's exceptions into a GcsError that says what failed where."""
    import requests
    from google.api_core import exceptions as api
    from google.auth import exceptions as auth

    try:
        return fn()
    except GcsError:
        raise
    except api.Forbidden as e:
        raise GcsError("%s: permission denied to %s it (%s). Grant the account roles/storage."
                       "objectAdmin on the bucket, or use another path." % (url, action, _message(e)))
    except api.NotFound as e:
        raise GcsError("%s: not found (%s)." % (url, _message(e)))
    except (api.GoogleAPICallError, auth.GoogleAuthError) as e:
        raise GcsError("%s: cannot %s it: %s" % (url, action, _message(e)))
    except requests.RequestException as e:
        raise GcsError("%s: cannot reach Cloud Storage (%s) to %s it: %s. Check the network (or "
                       "STORAGE_EMULATOR_HOST)." % (url, _endpoint(), action, type(e).__name__))


def _message(e):
    return getattr(e, "message", None) or str(e)


def _endpoint():
    return os.environ.get("STORAGE_EMULATOR_HOST") or "storage.googleapis.com"


# ------------------------------------------------------------------------------ transfers

def check_object(blob, local_path: str):
    """Raises GcsError unless the stored object has the size and CRC32C of the local file."""
    blob.reload()
    size, local = os.path.getsize(local_path), fs.crc32c(local_path)
    if blob.size != size or blob.crc32c != local:
        raise GcsError("gs://%s/%s does not match %s: %s bytes, crc32c %s stored vs %d bytes, crc32c "
                       "%s local. The transfer was corrupted; run the command again."
                       % (blob.bucket.name, blob.name, local_path, blob.size, blob.crc32c, size, local))


def upload_directory(local_dir: str, url: str, names):
    """Uploads local_dir/NAME to url/NAME for each name, in order, each verified by CRC32C.

    Put the file that marks the directory complete (e.g. a manifest) last: readers that wait for
    it never see a partial directory. On any failure the objects already uploaded are deleted.
    """
    c = client()
    bucket_name, prefix = split(url)
    bucket = c.bucket(bucket_name)
    done = []
    try:
        for name in names:
            blob = bucket.blob(_join(prefix, name))
            path = os.path.join(local_dir, name)
            _call(url, "write to", lambda: blob.upload_from_filename(path, checksum="crc32c"))
            done.append(blob)
            _call(url, "verify", lambda: check_object(blob, path))
    except BaseException:
        for blob in done:
            try:
                blob.delete()
            except Exception:  # best effort: the original error is the one to report
                pass
        raise


def download_directory(url: str, local_dir: str, names=None):
    """Downloads every object under url/ (or those of `names`, relative to it) into local_dir
    (flat names), each verified by CRC32C; returns the names."""
    c = client()
    bucket_name, prefix = split(url)
    os.makedirs(local_dir, exist_ok=True)
    names = list_names(url, c) if names is None else list(names)
    for name in names:
        if "/" in name:
            continue
        blob = c.bucket(bucket_name).blob(_join(prefix, name))
        path = os.path.join(local_dir, name)
        _call(url, "read", lambda: blob.download_to_filename(path, checksum="crc32c"))
        _call(url, "verify", lambda: check_object(blob, path))
    return names


def list_names(url: str, c=None):
    """Names of the objects under url/, relative to it."""
    c = c or client()
    bucket_name, prefix = split(url)
    start = prefix + "/" if prefix else ""
    return _call(url, "list", lambda: sorted(
        b.name[len(start):] for b in c.list_blobs(bucket_name, prefix=start)))


def list_sizes(url: str, c=None) -> dict:
    """{name: (bytes, CRC32C)} of the objects directly under url/, in one listing."""
    c = c or client()
    bucket_name, prefix = split(url)
    start = prefix + "/" if prefix else ""
    return _call(url, "list", lambda: {
        b.name[len(start):]: (b.size, b.crc32c) for b in c.list_blobs(bucket_name, prefix=start)
        if "/" not in b.name[len(start):]})


def read_bytes(url: str, c=None) -> bytes:
    c = c or client()
    bucket_name, name = split(url)
    return _call(url, "read", lambda: c.bucket(bucket_name).blob(name).download_as_bytes())


def _join(prefix, name):
    return prefix + "/" + name if prefix else name
