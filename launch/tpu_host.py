"""What `python -m launch.tpu_vm setup` runs on every host of a TPU slice. Standard library only:
the first step runs before anything is installed.

    python3 -m launch.tpu_host requirements > .requirements-host.txt   # what to pip install here
    python3 -m launch.tpu_host check                                   # the pinned TF and Keras?

`requirements` prints requirements-tpu.txt, without its tensorflow-tpu line when this host already
has a TensorFlow (a TPU runtime image brings its own); `check` fails unless the TensorFlow here is
the pinned release (major.minor) and prints the versions and the TPU library in use.
"""

import importlib.util
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU_REQUIREMENTS = "requirements-tpu.txt"
_PIN = re.compile(r"tensorflow-tpu==([\d.]+)")


def pinned_tensorflow(root: str = ROOT) -> str:
    """The version of `tensorflow-tpu==X.Y.Z` in requirements-tpu.txt; ValueError unless pinned once."""
    with open(os.path.join(root, TPU_REQUIREMENTS)) as f:
        pins = [m.group(1) for m in (_PIN.match(line.strip()) for line in f) if m]
    if len(pins) != 1:
        raise ValueError("%s must pin tensorflow-tpu==X.Y.Z exactly once (found %d)."
                         % (TPU_REQUIREMENTS, len(pins)))
    return pins[0]


def requirements(root: str = ROOT) -> str:
    with open(os.path.join(root, TPU_REQUIREMENTS)) as f:
        lines = f.readlines()
    if importlib.util.find_spec("tensorflow") is not None:
        lines = [line for line in lines if not _PIN.match(line.strip())]
    return "".join(lines)


def check(root: str = ROOT) -> int:
    import keras
    import tensorflow as tf

    wanted = pinned_tensorflow(root)
    have = tf.__version__
    print("TensorFlow %s, Keras %s, Python %s" % (have, keras.__version__, sys.version.split()[0]))
    if have.split(".")[:2] != wanted.split(".")[:2]:
        print("tpu_host: error: this host has TensorFlow %s but %s pins %s; re-create the TPU with "
              "the default image (no --runtime_version) or a tpu-vm-tf-%s runtime."
              % (have, TPU_REQUIREMENTS, wanted, ".".join(wanted.split(".")[:2]) + ".x"),
              file=sys.stderr)
        return 1
    return 0


def main(argv):
    if argv[1:] == ["requirements"]:
        sys.stdout.write(requirements())
        return 0
    if argv[1:] == ["check"]:
        return check()
    print("usage: python3 -m launch.tpu_host {requirements|check}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
