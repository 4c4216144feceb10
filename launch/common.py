"""What every entry point in launch/ shares."""

import shlex
import sys

from data_pipeline import fs

COMMAND_FILE = "command.txt"


def record_command(directory: str, module: str):
    """Appends the exact command line (`python -m <module> <flags>`) to DIRECTORY/command.txt, so
    a run, a data build or a vocabulary says how it was made (local or gs://). Local paths do not
    import TensorFlow: a data or vocabulary build would otherwise pay 3-4 s for it."""
    fs.makedirs(directory)
    line = " ".join(shlex.quote(a) for a in [sys.executable, "-m", module] + sys.argv[1:])
    path = fs.join(directory, COMMAND_FILE)
    previous = fs.read_bytes(path) if fs.exists(path) else b""
    # gs:// objects cannot be appended to: the whole file is rewritten.
    fs.write_bytes_atomic(path, previous + line.encode("utf-8") + b"\n")
