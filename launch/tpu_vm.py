r"""Creates a Cloud TPU VM (or pod slice), installs the project on every host, runs the same command
on all of them, shows their logs and deletes the TPU, through `gcloud`.

    python -m launch.tpu_vm create --name=bert --zone=us-central2-b --accelerator_type=v4-32 \
        --workdir=gs://bucket/runs/base --data=gs://bucket/data/wiki_128 [--spot | --reserved]
    python -m launch.tpu_vm setup  --name=bert --zone=us-central2-b
    python -m launch.tpu_vm run    --name=bert --zone=us-central2-b --accelerator_type=v4-32 -- \
        python3 -m launch.pretrain --config=configs/bert_base.py --config.distribute.name=tpu \
        --config.distribute.tpu=bert --config.data.train_dir=gs://bucket/data/wiki_128 \
        --workdir=gs://bucket/runs/base
    python -m launch.tpu_vm logs   --name=bert --zone=us-central2-b [--worker=0] [--follow]
    python -m launch.tpu_vm delete --name=bert --zone=us-central2-b

--dry_run prints the exact commands instead of running them. `create` first checks the gs://
workdir and data (bucket exists, data has a manifest.json, you may write the workdir, bucket
region vs the TPU's); --skip_preflight skips that. By default the TPU is a queued resource
(`gcloud compute tpus queued-resources`, which waits for capacity); --noqueued creates it directly.
The runtime defaults to the TensorFlow of requirements.txt: tpu-vm-tf-X.Y.Z, with -pod on
multi-host slices and -pjrt on v5e/v5p/v6e. `setup` copies this checkout to ~/REMOTE_DIR on every
host and installs requirements.txt there, keeping the image's TPU build of TensorFlow. `run` starts
the command in the background on every host (--worker) with the environment TensorFlow needs on
TPU VMs, output in ~/REMOTE_DIR/logs/JOB.log (--foreground streams it instead).

Refused before anything runs: accelerator types or zones not in ZONES below, both --spot and
--reserved, a runtime version whose -pod/-pjrt flavour does not fit the slice, and
`--config.distribute.tpu=local` on a multi-host slice (each host would drive only its own chips).
"""

import fnmatch
import os
import re
import shlex
import subprocess
import sys

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMMANDS = ("create", "setup", "run", "logs", "delete")

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
PJRT_GENERATIONS = ("v5litepod", "v5p", "v6e")

FLAGS = flags.FLAGS
flags.DEFINE_string("name", None, "TPU name (and queued-resource id).")
flags.DEFINE_string("zone", None, "Zone, e.g. us-central2-b (see ZONES in launch/tpu_vm.py).")
flags.DEFINE_string("project", None, "Google Cloud project (default: gcloud's configured one).")
flags.DEFINE_string("accelerator_type", None, "create, run: e.g. v4-32, v5litepod-16, v6e-8.")
flags.DEFINE_string("runtime_version", None, "create, run: TPU software version (default: from "
                    "requirements.txt's TensorFlow and the slice).")
flags.DEFINE_bool("queued", True, "create, delete: a queued resource (waits for capacity) rather "
                  "than a plain TPU VM.")
flags.DEFINE_bool("spot", False, "create: spot capacity (cheaper, may be preempted).")
flags.DEFINE_bool("reserved", False, "create: your project's reserved capacity.")
flags.DEFINE_string("workdir", None, "create: the run's gs:// workdir, checked before creating.")
flags.DEFINE_string("data", None, "create: the gs:// data directory (with manifest.json), checked "
                    "before creating.")
flags.DEFINE_bool("skip_preflight", False, "create: skip the GCS checks of --workdir and --data.")
flags.DEFINE_string("remote_dir", "bert-tf-pretrain", "setup, run, logs: the project's directory "
                    "under the home directory on every host.")
flags.DEFINE_string("worker", "all", "run, logs: all, or a host index (0 = the first host).")
flags.DEFINE_string("job", "pretrain", "run, logs: the log file's name, REMOTE_DIR/logs/JOB.log.")
flags.DEFINE_bool("foreground", False, "run: stay attached and stream the output.")
flags.DEFINE_multi_string("env", [], "run: extra KEY=VALUE environment for the command.")
flags.DEFINE_integer("lines", 100, "logs: how many last lines.")
flags.DEFINE_bool("follow", False, "logs: keep following the log (tail -f).")
flags.DEFINE_bool("dry_run", False, "Print the commands instead of running them.")


class TpuError(Exception):
    """A request that cannot work; the message says why and what to change."""


# ------------------------------------------------------------------------------ the slice

def slice_shape(accelerator_type):
    """(generation, size, hosts) of e.g. 'v4-32', or TpuError."""
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


def check_zone(zone, accelerator_type):
    if zone not in ZONES:
        raise TpuError("zone %r is not in the zone table of launch/tpu_vm.py (%s); if Google offers "
                       "TPUs there now, add it to ZONES." % (zone, ", ".join(sorted(ZONES))))
    if not any(fnmatch.fnmatch(accelerator_type, pattern) for pattern in ZONES[zone]):
        where = sorted(z for z, types in ZONES.items()
                       if any(fnmatch.fnmatch(accelerator_type, p) for p in types))
        raise TpuError("%s is not offered in %s (it has %s); zones listing it: %s."
                       % (accelerator_type, zone, ", ".join(ZONES[zone]), ", ".join(where) or "none"))


def project_tensorflow():
    """The TensorFlow version pinned in requirements.txt."""
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        for line in f:
            m = re.match(r"tensorflow==([\d.]+)", line.strip())
            if m:
                return m.group(1)
    raise TpuError("requirements.txt pins no tensorflow==X.Y.Z; pass --runtime_version.")


def runtime_version(accelerator_type, requested=None):
    """The TPU software version: `requested`, checked against the slice, or the default."""
    generation, _, hosts = slice_shape(accelerator_type)
    pod, pjrt = hosts > 1, generation in PJRT_GENERATIONS
    if not requested:
        return "tpu-vm-tf-%s%s%s" % (project_tensorflow(), "-pod" if pod else "", "-pjrt" if pjrt else "")
    if requested.startswith("tpu-vm-tf-"):
        if ("-pod" in requested) != pod:
            raise TpuError("runtime %s is for %s slices but %s has %d host(s): %s -pod." % (
                requested, "multi-host" if "-pod" in requested else "single-host", accelerator_type,
                hosts, "add" if pod else "drop"))
        if pjrt and not requested.endswith("-pjrt"):
            raise TpuError("%s runs TensorFlow only on the PJRT runtime: use a -pjrt version, e.g. %s."
                           % (generation, runtime_version(accelerator_type)))
    return requested


# ------------------------------------------------------------------------------- preflight

def preflight(workdir, data, zone):
    """Checks the gs:// paths the run will use before anything is created: both buckets exist, the
    workdir accepts writes and the data has a manifest.json (pretrain.gcs makes the requests).
    Returns notes (a bucket outside the TPU's region); raises TpuError listing every problem."""
    problems, notes = [], []
    for flag, url in (("workdir", workdir), ("data", data)):
        if not url:
            problems.append("--%s is needed for the preflight (or pass --skip_preflight)." % flag)
        elif not url.startswith("gs://"):
            problems.append("--%s=%s: TPU hosts share no disk; use a gs:// path." % (flag, url))
    if not problems:
        from google.api_core import exceptions
        from pretrain import gcs   # imports TensorFlow: only when there is something to check
        try:
            gcs.preflight(read=[data], write=[workdir])
            client = gcs.client()
            bucket, prefix = gcs.split(data)
            if not client.bucket(bucket).blob(prefix + "/manifest.json" if prefix
                                              else "manifest.json").exists():
                problems.append("--data=%s has no manifest.json: build the data there first "
                                "(python -m launch.build_data ... --output_dir=%s)." % (data, data))
            region = zone.rsplit("-", 1)[0]
            for name in sorted({gcs.split(workdir)[0], bucket}):
                location = (client.get_bucket(name).location or "").lower()
                if location not in (region, {"us": "us", "europe": "eu", "asia": "asia"}.get(
                        region.split("-")[0])):
                    notes.append("gs://%s is in %s but the TPU in %s: reads cross regions (slower, "
                                 "and billed as egress)." % (name, location or "?", region))
        except gcs.GcsError as e:
            problems.append(str(e))
        except exceptions.GoogleAPIError as e:
            problems.append("GCS: %s" % e)
    if problems:
        raise TpuError("preflight failed, nothing created:\n  " + "\n  ".join(problems))
    return notes


# -------------------------------------------------------------------------------- commands

def _where(name_or_target):
    """gcloud's placement flags after the resource."""
    return [name_or_target, "--zone=%s" % FLAGS.zone] + (
        ["--project=%s" % FLAGS.project] if FLAGS.project else [])


def create_command():
    if FLAGS.spot and FLAGS.reserved:
        raise TpuError("--spot and --reserved exclude each other: pick one capacity type.")
    accelerator = FLAGS.accelerator_type
    version = runtime_version(accelerator, FLAGS.runtime_version)
    capacity = ["--spot"] if FLAGS.spot else ["--reserved"] if FLAGS.reserved else []
    if FLAGS.queued:
        return (["gcloud", "compute", "tpus", "queued-resources", "create"] + _where(FLAGS.name)
                + ["--node-id=%s" % FLAGS.name, "--accelerator-type=%s" % accelerator,
                   "--runtime-version=%s" % version] + capacity)
    return (["gcloud", "compute", "tpus", "tpu-vm", "create"] + _where(FLAGS.name)
            + ["--accelerator-type=%s" % accelerator, "--version=%s" % version] + capacity)


def ssh_command(script, worker="all"):
    return (["gcloud", "compute", "tpus", "tpu-vm", "ssh"] + _where(FLAGS.name)
            + ["--worker=%s" % worker, "--command", script])


def setup_commands():
    archive = os.path.join(ROOT, "workspace", "tpu_vm", "%s.tar.gz" % FLAGS.name)
    remote = "~/%s" % FLAGS.remote_dir
    install = " && ".join([
        "mkdir -p %s" % remote,
        "tar -xzf ~/%s.tar.gz -C %s" % (FLAGS.remote_dir, remote),
        "cd %s" % remote,
        # The image's TensorFlow is the TPU build: install everything else.
        "grep -v ^tensorflow== requirements.txt > requirements-tpu-vm.txt",
        "python3 -m pip install --quiet -r requirements-tpu-vm.txt",
        'python3 -c "import tensorflow as tf; print(tf.__version__)"'])
    return [
        ["mkdir", "-p", os.path.dirname(archive)],
        ["tar", "-czf", archive, "--exclude=./.git", "--exclude=./workspace", "--exclude=__pycache__",
         "--exclude=.pytest_cache", "-C", ROOT, "."],
        (["gcloud", "compute", "tpus", "tpu-vm", "scp", archive]
         + _where("%s:~/%s.tar.gz" % (FLAGS.name, FLAGS.remote_dir)) + ["--worker=all"]),
        ssh_command(install)]


def tpu_environment(version):
    """What TensorFlow needs on the TPU hosts."""
    env = {"TPU_NAME": FLAGS.name}
    if version.endswith("-pjrt"):   # TensorFlow reaches the TPU through the PJRT plugin
        env.update(PJRT_DEVICE="TPU", NEXT_PLUGGABLE_DEVICE_USE_C_API="true",
                   TF_PLUGGABLE_DEVICE_LIBRARY_PATH="/lib/libtpu.so")
    for item in FLAGS.env:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise TpuError("--env %r: expected KEY=VALUE." % item)
        env[key] = value
    return env


def run_command(program):
    if not program:
        raise TpuError("run: no command; put it after `--`, e.g. `run --name=... -- python3 -m "
                       "launch.pretrain --config=...`.")
    accelerator = FLAGS.accelerator_type
    _, _, hosts = slice_shape(accelerator)
    text = " ".join(program)
    if hosts > 1 and re.search(r"--(config\.distribute\.)?tpu=local\b", text):
        raise TpuError("%s has %d hosts: with tpu=local each host would drive only its own chips. "
                       "Name the slice instead: --config.distribute.tpu=%s."
                       % (accelerator, hosts, FLAGS.name))
    env = tpu_environment(runtime_version(accelerator, FLAGS.runtime_version))
    log = "logs/%s.log" % FLAGS.job
    steps = ["cd ~/%s" % FLAGS.remote_dir, "mkdir -p logs"]
    steps += ["export %s=%s" % (k, shlex.quote(v)) for k, v in sorted(env.items())]
    if FLAGS.foreground:
        steps.append("%s 2>&1 | tee -a %s" % (shlex.join(program), log))
    else:
        steps.append("(nohup %s >> %s 2>&1 < /dev/null &)" % (shlex.join(program), log))
    return ssh_command(" && ".join(steps), FLAGS.worker)


def logs_command():
    return ssh_command("tail -n %d %s~/%s/logs/%s.log" % (FLAGS.lines, "-f " if FLAGS.follow else "",
                                                        FLAGS.remote_dir, FLAGS.job), FLAGS.worker)


def delete_command():
    if FLAGS.queued:   # --force: the TPU VM goes with its queued resource
        return (["gcloud", "compute", "tpus", "queued-resources", "delete"] + _where(FLAGS.name)
                + ["--force", "--quiet"])
    return ["gcloud", "compute", "tpus", "tpu-vm", "delete"] + _where(FLAGS.name) + ["--quiet"]


def plan(command, program):
    """Validates the flags for `command`; returns the commands to run, in order."""
    missing = [f for f in ("name", "zone") + (("accelerator_type",) if command in ("create", "run")
                                              else ()) if not FLAGS[f].value]
    if missing:
        raise TpuError("%s needs %s." % (command, ", ".join("--" + f for f in missing)))
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", FLAGS.name):
        raise TpuError("--name %r: lowercase letters, digits and dashes, starting with a letter."
                       % FLAGS.name)
    if not re.fullmatch(r"all|\d+", FLAGS.worker):
        raise TpuError("--worker %r: 'all' or a host index (0, 1, ...)." % FLAGS.worker)
    for flag in ("remote_dir", "job"):   # both end up in shell command lines on the hosts
        if not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.\-]*", FLAGS[flag].value):
            raise TpuError("--%s %r: letters, digits, '.', '_' and '-' only." % (flag, FLAGS[flag].value))
    if command in ("create", "run"):
        slice_shape(FLAGS.accelerator_type)
        check_zone(FLAGS.zone, FLAGS.accelerator_type)
    if program and command != "run":
        raise TpuError("%s takes no command (%s)." % (command, " ".join(program)))
    if command == "create":
        return [create_command()]
    if command == "setup":
        return setup_commands()
    if command == "run":
        return [run_command(program)]
    if command == "logs":
        return [logs_command()]
    return [delete_command()]


def main(argv):
    if len(argv) < 2 or argv[1] not in COMMANDS:
        print("usage: python -m launch.tpu_vm {%s} --name=... --zone=... [flags] [-- command]\n"
              "(--help explains every flag)" % "|".join(COMMANDS), file=sys.stderr)
        return 2
    command, program = argv[1], argv[2:]
    try:
        commands = plan(command, program)
        if command == "create" and not FLAGS.skip_preflight:
            for note in preflight(FLAGS.workdir, FLAGS.data, FLAGS.zone):
                print("tpu_vm: note: %s" % note, file=sys.stderr)
    except TpuError as e:
        print("tpu_vm: error: %s" % e, file=sys.stderr)
        return 2
    for cmd in commands:
        print(shlex.join(cmd), flush=True)
        if FLAGS.dry_run:
            continue
        try:
            code = subprocess.run(cmd).returncode
        except FileNotFoundError:
            print("tpu_vm: error: %s not found%s." % (cmd[0], ": install the Google Cloud CLI "
                  "(https://cloud.google.com/sdk)" if cmd[0] == "gcloud" else ""), file=sys.stderr)
            return 2
        if code:
            print("tpu_vm: error: the command above failed (exit code %d)." % code, file=sys.stderr)
            return code
    if command == "create" and FLAGS.queued and not FLAGS.dry_run:
        print("tpu_vm: queued; `gcloud compute tpus queued-resources describe %s --zone=%s` shows "
              "when it is ACTIVE, then run setup." % (FLAGS.name, FLAGS.zone), file=sys.stderr)
    return 0


if __name__ == "__main__":
    app.run(main)
