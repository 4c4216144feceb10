"""Cloud TPU slices and their software: where each type exists, how many hosts it has, and which
image and TensorFlow run on it. The tables cite their sources; `launch.tpu_vm` uses them to
build its gcloud commands and to refuse what cannot work.
"""

import fnmatch
import os
import re

from launch import tpu_host
from launch.tpu_host import TPU_REQUIREMENTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Where each TPU type can be created, from https://cloud.google.com/tpu/docs/regions-zones
# (2025). Google adds zones over time: when yours is missing, check that page and extend this.
ZONES = {
    "us-central1-a": ("v2-32", "v2-128", "v2-256", "v2-512", "v3-8", "v5litepod-*", "v5p-*"),
    "us-central1-b": ("v2-8", "v3-8", "v6e-*"),
    "us-central1-c": ("v2-8",),
    "us-central1-f": ("v2-8", "v3-8"),
    "us-central2-b": ("v4-*",),
    "us-east1-d": ("v6e-*",),
    "us-east5-a": ("v5litepod-*", "v5p-*", "v6e-*"),
    "us-east5-b": ("v5litepod-*", "v6e-*"),
    "us-east5-c": ("v5litepod-*",),
    "us-south1-a": ("v5litepod-*",),
    "us-west1-c": ("v5litepod-*",),
    "us-west4-a": ("v5litepod-*",),
    "europe-west4-a": ("v2-*", "v3-*", "v6e-*"),
    "europe-west4-b": ("v5litepod-*", "v5p-*"),
    "asia-east1-c": ("v2-8",),
    "asia-northeast1-b": ("v6e-*",),
    "asia-southeast1-b": ("v5litepod-*",),
}
# Sizes per generation: the number after the dash counts TensorCores (v2-v4, v5p) or chips
# (v5litepod = v5e, v6e); a host holds 8 cores, or up to 8 chips (4 per host in multi-host slices).
SIZES = {"v2": (8, 32, 128, 256, 512), "v3": (8, 32, 64, 128, 256, 512, 1024, 2048),
         "v5litepod": (1, 4, 8, 16, 32, 64, 128, 256), "v6e": (1, 4, 8, 16, 32, 64, 128, 256)}

# The software of each generation: Google's base image (Ubuntu, Python, the TPU runtime service;
# no TensorFlow) and the device API TensorFlow's TPU build reaches the chips through. setup
# installs tensorflow-tpu (requirements-tpu.txt) on top.
SOFTWARE = {
    # https://cloud.google.com/tpu/docs/runtimes ("v4 and older": tpu-ubuntu2204-base); the TF
    # 2.18+ runtimes for these generations are "-pjrt-v5p-and-below" (and "-se") images.
    "v2": ("tpu-ubuntu2204-base", "pjrt"),
    "v3": ("tpu-ubuntu2204-base", "pjrt"),
    "v4": ("tpu-ubuntu2204-base", "pjrt"),
    # https://cloud.google.com/tpu/docs/runtimes (v5e: v2-alpha-tpuv5-lite); v5e, v5p and v6e run
    # TensorFlow on PJRT only (https://cloud.google.com/tpu/docs/supported-versions).
    "v5litepod": ("v2-alpha-tpuv5-lite", "pjrt"),
    # https://cloud.google.com/tpu/docs/runtimes (v5p: v2-alpha-tpuv5).
    "v5p": ("v2-alpha-tpuv5", "pjrt"),
    # https://cloud.google.com/tpu/docs/runtimes (Trillium: v2-alpha-tpuv6e).
    "v6e": ("v2-alpha-tpuv6e", "pjrt"),
}
PJRT_ONLY = ("v5litepod", "v5p", "v6e")
# TensorFlow releases with a TPU build (tensorflow-tpu on PyPI), and why a release is not used.
TPU_TENSORFLOW = {
    "2.19.1": None,
    "2.20.0": "its wheel asks for libtpu~=0.0.14, so pip takes the newest libtpu, with which "
              "TensorFlow finds no TPU ('No TPU platform found'); Keras names 2.19.1 the last "
              "TensorFlow that supports TPUs",
    "2.18.0": "it needs libtpu 2.18.0 from Google's index and keras < 3.13 pins of its own",
    "2.17.1": "older than the 2.19 this project is tested with", "2.17.0": "as 2.17.1",
    "2.16.2": "older than the 2.19 this project is tested with", "2.16.1": "as 2.16.2",
}
# The newest TensorFlow for which Google publishes TPU runtime images (tpu-vm-tf-X.Y.Z...).
NEWEST_TF_RUNTIME = (2, 19, 0)


class TpuError(Exception):
    """A request that cannot work; the message says why and what to change."""


# ------------------------------------------------------------------------------ the slice

def slice_shape(accelerator_type):
    """(generation, size, hosts) of e.g. 'v4-32' ('v5e-N' is gcloud's 'v5litepod-N'), or TpuError."""
    m = re.fullmatch(r"(v2|v3|v4|v5p|v5litepod|v6e)-(\d+)", accelerator_type or "")
    if not m:
        raise TpuError("--accelerator_type %r: expected <generation>-<size> with generation v2, v3, "
                       "v4, v5p, v5litepod (v5e) or v6e, e.g. v4-32." % accelerator_type)
    generation, size = m.group(1), int(m.group(2))
    valid = size in SIZES[generation] if generation in SIZES else size % 8 == 0
    if not valid:
        raise TpuError("%s is not a %s slice size (%s)." % (accelerator_type, generation, ", ".join(
            map(str, SIZES[generation])) if generation in SIZES else "a multiple of 8"))
    if generation in ("v5litepod", "v6e"):
        hosts = 1 if size <= 8 else size // 4
    else:
        hosts = size // 8
    return generation, size, hosts


def accelerator(value):
    """gcloud's name of an accelerator type: v5e-N is v5litepod-N."""
    return re.sub(r"^v5e-", "v5litepod-", value or "")


def check_zone(zone, accelerator_type):
    if zone not in ZONES:
        raise TpuError("zone %r is not in the zone table of launch/tpu_slices.py (%s); if Google offers "
                       "TPUs there now, add it to ZONES." % (zone, ", ".join(sorted(ZONES))))
    if not any(fnmatch.fnmatch(accelerator_type, pattern) for pattern in ZONES[zone]):
        where = sorted(z for z, types in ZONES.items()
                       if any(fnmatch.fnmatch(accelerator_type, p) for p in types))
        raise TpuError("%s is not offered in %s (it has %s); zones listing it: %s."
                       % (accelerator_type, zone, ", ".join(ZONES[zone]), ", ".join(where) or "none"))


def tpu_tensorflow():
    """The TensorFlow TPU build pinned in requirements-tpu.txt (tensorflow-tpu==X.Y.Z), checked."""
    try:
        version = tpu_host.pinned_tensorflow(ROOT)
    except ValueError as e:
        raise TpuError(str(e))
    if version not in TPU_TENSORFLOW:
        raise TpuError("%s pins tensorflow-tpu==%s, which has no TPU build: TPU builds exist for "
                       "TensorFlow %s (none for 2.21)." % (TPU_REQUIREMENTS, version,
                                                           ", ".join(sorted(TPU_TENSORFLOW))))
    if TPU_TENSORFLOW[version]:
        raise TpuError("%s pins tensorflow-tpu==%s: not usable here, %s." % (
            TPU_REQUIREMENTS, version, TPU_TENSORFLOW[version]))
    return version


def runtime_version(accelerator_type, requested=None):
    """The TPU software version: the generation's base image, or `requested`, checked against the
    slice and against requirements-tpu.txt's TensorFlow."""
    generation, _, hosts = slice_shape(accelerator_type)
    pod = hosts > 1
    tf_version = tpu_tensorflow()
    if not requested:
        return SOFTWARE[generation][0]
    m = re.fullmatch(r"tpu-vm-tf-(\d+)\.(\d+)\.(\d+)(-pod)?(-pjrt|-se)?(-v5e-and-v6|-v5p-and-below)?",
                     requested)
    if requested.startswith("tpu-vm-tf-") and not m:
        raise TpuError("--runtime_version %r: expected tpu-vm-tf-X.Y.Z[-pod][-pjrt|-se][-variant]."
                       % requested)
    if not m:
        return requested   # another image (a base image, a nightly): taken as given
    version = tuple(int(x) for x in m.group(1, 2, 3))
    if version > NEWEST_TF_RUNTIME:
        raise TpuError("runtime %s: there is no TPU runtime for TensorFlow %s (the newest is %s); "
                       "leave --runtime_version unset to use the base image and tensorflow-tpu==%s."
                       % (requested, ".".join(map(str, version)),
                          ".".join(map(str, NEWEST_TF_RUNTIME)), tf_version))
    if version[:2] != tuple(int(x) for x in tf_version.split(".")[:2]):
        raise TpuError("runtime %s has TensorFlow %d.%d but %s pins TensorFlow %s (keras, "
                       "tensorboard, numpy and protobuf are pinned for it)."
                       % (requested, version[0], version[1], TPU_REQUIREMENTS, tf_version))
    if bool(m.group(4)) != pod:
        raise TpuError("runtime %s is for %s slices but %s has %d host(s): %s -pod." % (
            requested, "multi-host" if m.group(4) else "single-host", accelerator_type, hosts,
            "add" if pod else "drop"))
    if generation in PJRT_ONLY and m.group(5) != "-pjrt":
        raise TpuError("%s runs TensorFlow only on the PJRT runtime: use a -pjrt version, e.g. "
                       "tpu-vm-tf-%s%s-pjrt." % (generation, ".".join(map(str, version)),
                                                "-pod" if pod else ""))
    return requested
