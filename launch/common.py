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


def read_jsonl(path: str, fields):
    """[(line number, record)] for every non-blank line of a JSON-lines file.

    A line that is not a JSON object, or whose `fields` are missing or not non-empty strings, is a
    ValueError that names the file and line and says what was expected."""
    import json

    if not fs.exists(path):
        raise ValueError("%s does not exist." % path)
    records = []
    for number, line in enumerate(fs.read_bytes(path).decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as e:
            raise ValueError("%s:%d: not JSON (%s); each line must be one JSON object." % (path, number, e))
        if not isinstance(record, dict):
            raise ValueError("%s:%d: a JSON %s, not an object {\"field\": ...}."
                             % (path, number, type(record).__name__))
        for field in fields:
            if field not in record:
                raise ValueError("%s:%d: no field %r (the line has %s)."
                                 % (path, number, field, ", ".join(map(repr, record)) or "no fields"))
            if not isinstance(record[field], str) or not record[field].strip():
                raise ValueError("%s:%d: field %r must be a non-empty string, not %r."
                                 % (path, number, field, record[field]))
        records.append((number, record))
    if not records:
        raise ValueError("%s holds no records." % path)
    return records
