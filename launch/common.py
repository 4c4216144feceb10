"""What every entry point in launch/ shares."""

import os
import shlex
import sys

COMMAND_FILE = "command.txt"


def record_command(directory: str, module: str):
    """Appends the exact command line (`python -m <module> <flags>`) to DIRECTORY/command.txt, so
    a run, a data build or a vocabulary says how it was made (local or gs://)."""
    import tensorflow as tf

    tf.io.gfile.makedirs(directory)
    line = " ".join(shlex.quote(a) for a in [sys.executable, "-m", module] + sys.argv[1:])
    path = os.path.join(directory, COMMAND_FILE)
    previous = ""
    if tf.io.gfile.exists(path):   # gs:// objects cannot be appended to: rewrite the whole file
        with tf.io.gfile.GFile(path) as f:
            previous = f.read()
    with tf.io.gfile.GFile(path, "w") as f:
        f.write(previous + line + "\n")
