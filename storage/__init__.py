"""File access shared by every package: one layer for local paths and gs://.

    fs     read, write (atomically), list, rename and remove local or remote files; TensorFlow's
           file system is imported only for remote paths
    gcs    Cloud Storage through google-cloud-storage: a preflight that fails in seconds, and
           uploads/downloads verified by CRC32C
    lock   a lock on a directory (a run's workdir, a data build's output) held by one process

Importing this package has no side effects and does not import TensorFlow.
"""
