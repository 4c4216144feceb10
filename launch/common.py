"""What every entry point in launch/ shares: the command record, a quiet TensorFlow import (and
--verbose to see it all), and flag parsing that turns a bad --config.x override into one line."""

import os
import re
import shlex
import sys
import tempfile

from absl import flags

from storage import fs

COMMAND_FILE = "command.txt"
flags.DEFINE_bool("verbose", False, "Show TensorFlow's own log messages (its C++ start-up and "
                  "device lines are hidden otherwise; so they are when TF_CPP_MIN_LOG_LEVEL is set).")

# What TensorFlow prints on start-up that is not for the user: library and device probing.
_NOISE = re.compile(r"All log messages before absl::InitializeLog|oneDNN custom operations|"
                    r"cudart_stub|cuda_platform|cuInit|cpu_feature_guard|rebuild TensorFlow with|"
                    r"Could not find cuda drivers|Unable to register cu(DNN|FFT|BLAS) factory|"
                    r"computation placer already registered|TF-TRT Warning")


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


def import_tensorflow(verbose: bool = False):
    """Imports TensorFlow with its start-up noise hidden (what it prints while loading its
    libraries, and the cuInit error of a machine without a GPU), unless --verbose or the user's
    own TF_CPP_MIN_LOG_LEVEL asks for it. Anything else it prints is shown."""
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    if verbose or "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        import tensorflow as tf
        return tf
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"   # device probing logs its failures as errors
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode("utf-8", "replace").splitlines()
                    if line.strip() and not _NOISE.search(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr, flush=True)
    return tf


def parse_flags(program: str, renamed=None):
    """A flags parser for `app.run`: bad flags, a --config file that is missing or does not
    compile, and --config.x overrides naming no field end in one line naming the flag or the file
    (exit 2), not a traceback. `renamed`: {old field path: new path}."""
    def parse(argv):
        hint = ""
        message = _missing_config_file(argv)
        if message is None:
            try:
                return flags.FLAGS(argv)
            except flags.Error as e:
                message, hint = str(e), "\nPass --helpshort to see the flags."
            except SyntaxError as e:   # the config file (ml_collections loads it as the flag parses)
                message = "%s, line %s: %s: %s" % (e.filename, e.lineno, e.msg, (e.text or "").strip())
            except (AttributeError, KeyError) as e:   # ml_collections: --config.<no such field>=
                message = no_such_field(argv, e, renamed)
            except ValueError as e:
                message, hint = str(e), "\nPass --helpshort to see the flags."
        print("%s: error: %s%s" % (program, message, hint), file=sys.stderr)
        sys.exit(2)
    return parse


def flag_problems(rules):
    """One line naming every flag of `rules` whose value breaks its check, or None. `rules`:
    {flag name: a check of `pretrain.run_config` (e.g. run_config._int(1)): value -> what it must
    be, or None}; checked before anything is loaded."""
    problems = []
    for name, check in rules.items():
        value = flags.FLAGS[name].value
        problem = check(value)
        if problem:
            problems.append("--%s=%s: %s" % (name, value, problem))
    return "; ".join(problems) or None


def _config_spec(argv):
    """The --config argument in argv ("file.py" or "file.py:argument"), or None."""
    for i, arg in enumerate(argv[1:], 1):
        if arg.startswith("--config="):
            return arg[len("--config="):]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def _missing_config_file(argv):
    # ml_collections reports a missing file only when the config is first used, in a traceback.
    spec = _config_spec(argv)
    if spec is not None and not os.path.isfile(spec.split(":", 1)[0]):
        return "--config=%s: no such file (the configs are in configs/)." % spec.split(":", 1)[0]
    return None


def no_such_field(argv, error, renamed=None, config=None):
    """One line for the --config.<path> override that names no field: the closest field there,
    or the fields there are. `config`: the config before its overrides (default: the --config
    file, loaded again)."""
    renamed = renamed or {}
    if config is None:
        try:
            flag = flags.FLAGS["config"]
            config = flag.parser.parse(_config_spec(argv) or flag.config_filename)
        except Exception:   # noqa: BLE001 - only for a better message; the error below says enough
            config = None
    for arg in argv[1:]:
        if not arg.startswith("--config."):
            continue
        field = arg.split("=")[0][len("--config."):]
        if field in renamed:
            return "--config.%s: renamed to --config.%s" % (field, renamed[field])
        problem = _field_problem(config, field) if config is not None else (
            "no such field in the config" if field.rsplit(".", 1)[-1] in str(error) else None)
        if problem:
            return "--config.%s: %s" % (field, problem)
    return "a --config field: no such field in the config (%s)" % str(error).splitlines()[0].strip("'\"")


def _field_problem(config, path):
    """Why `path` (a.b.c) names no field of `config`, naming the closest one; None if it does."""
    import difflib

    node, parts = config, path.split(".")
    for i, part in enumerate(parts):
        here = ".".join(parts[:i])
        if not hasattr(node, "keys"):
            return "no such field: config.%s is a value, not a section" % here
        if part not in node:
            close = difflib.get_close_matches(part, list(node.keys()), 1, 0.6)
            if close:
                return "no such field in the config; did you mean --config.%s?" % ".".join(
                    parts[:i] + close + parts[i + 1:])
            return "no such field in the config; %s has: %s" % (
                "config.%s" % here if here else "the config", ", ".join(sorted(node.keys())))
        node = node[part]
    return None


def read_jsonl(path: str, fields):
    """[(line number, record)] for every non-blank line of a JSON-lines file.

    A line that is not a JSON object, or whose `fields` are missing or not non-empty strings, is a
    ValueError that names the file and line and says what was expected."""
    import json

    if not fs.exists(path):
        raise ValueError("%s does not exist." % path)
    data = fs.read_bytes(path)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise ValueError("%s:%d: not UTF-8 text (byte 0x%02x at column %d); save the file as UTF-8."
                         % (path, line, data[e.start], e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1))
    records = []
    for number, line in enumerate(text.splitlines(), 1):
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
