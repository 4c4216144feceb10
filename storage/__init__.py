"""File access shared by every package: one layer for local paths and gs://.

The modules:
    fs     read, write (atomically), list, rename and remove local or remote files, and a file's
           checksums (`sha256`, `crc32c`); TensorFlow's file system is imported only for remote paths
    gcs    Cloud Storage through google-cloud-storage: a preflight that fails in seconds, and
           uploads/downloads verified by CRC32C (`preflight`, `upload_directory`)
    lock   a lock on a directory (a run's workdir, a data build's output) held by one process
           (`DirectoryLock`)

Importing this package has no side effects and does not import TensorFlow.
"""
