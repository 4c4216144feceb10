r"""Creates a Cloud TPU VM (or pod slice), installs the project on every host, runs the training
program on worker 0, shows its log and deletes the TPU, through `gcloud`.

    python -m launch.tpu_vm create --name=bert --zone=us-central2-b --accelerator_type=v4-32 \
        --workdir=gs://bucket/runs/base --data=gs://bucket/data/wiki_128 [--spot | --reserved]
    python -m launch.tpu_vm setup  --name=bert --zone=us-central2-b --accelerator_type=v4-32
    python -m launch.tpu_vm run    --name=bert --zone=us-central2-b --accelerator_type=v4-32 -- \
        python3 -m launch.pretrain --config=configs/bert_base.py --config.distribute.name=tpu \
        --config.data.train_dir=gs://bucket/data/wiki_128 \
        --workdir=gs://bucket/runs/base
    python -m launch.tpu_vm logs   --name=bert --zone=us-central2-b [--follow]
    python -m launch.tpu_vm delete --name=bert --zone=us-central2-b

The software: TensorFlow's TPU build, `tensorflow-tpu` from requirements-tpu.txt (2.19.1: the last
release with TPU support; there is no TPU build of TensorFlow 2.21), installed by `setup` with
everything that must agree with it on Google's base image for the TPU generation (`SOFTWARE`
in launch/tpu_slices.py). `--runtime_version` may name a TPU runtime image with its own TensorFlow instead
(tpu-vm-tf-2.19.0-pjrt, ...): `setup` then keeps that TensorFlow and checks its version.

One client per slice: TensorFlow's TPUStrategy is single-client, so `run` starts the program on
worker 0 only. On a single-host slice it uses the local chips (`--config.distribute.tpu=local`,
with the PJRT environment); on a pod slice it reaches every host through the TPU's name
(`--config.distribute.tpu=<name>`, TPU_NAME, TPU_LOAD_LIBRARY=0 so that this client leaves the
local chips to the host's TPU runtime), and the other hosts run nothing but that runtime
(`setup` points it at the TensorFlow version's gRPC worker). A training program that does not
name the TPU (`--config.distribute.name=tpu` alone) is given `--config.distribute.tpu=` --name
(or `local` on a single host). `setup` installs on every host; `logs` reads worker 0's log.

--dry_run prints the exact commands instead of running them. `create` first checks the gs://
workdir and data (bucket exists, data has a manifest.json, you may write the workdir, bucket
region vs the TPU's); --skip_preflight skips that. By default the TPU is a queued resource
(`gcloud compute tpus queued-resources`, which waits for capacity); --noqueued creates it directly.
`run` starts the command in the background (output in ~/REMOTE_DIR/logs/JOB.log), or streams it
with --foreground.

Refused before anything runs: accelerator types or zones not in launch/tpu_slices.py's ZONES, both --spot and
--reserved, a TensorFlow version without a TPU build, a runtime whose -pod/-pjrt flavour does
not fit the slice, `--config.distribute.tpu=local` on a multi-host slice (the client would drive
only its own host's chips) or a TPU name on a single-host one, and `--worker=all` for a program
that trains with distribute.name=tpu (every host would start its own client of the whole slice).
"""

import os
import re
import shlex
import subprocess
import sys

from absl import app, flags

from launch.tpu_slices import (ROOT, TpuError, accelerator, check_zone, runtime_version,
                               slice_shape, tpu_tensorflow)

COMMANDS = ("create", "setup", "run", "logs", "delete")

FLAGS = flags.FLAGS
flags.DEFINE_string("name", None, "TPU name (and queued-resource id).")
flags.DEFINE_string("zone", None, "Zone, e.g. us-central2-b (see ZONES in launch/tpu_slices.py).")
flags.DEFINE_string("project", None, "Google Cloud project (default: gcloud's configured one).")
flags.DEFINE_string("accelerator_type", None, "create, setup, run: e.g. v4-32, v5litepod-16 (or "
                    "v5e-16), v6e-8.")
flags.DEFINE_string("runtime_version", None, "create: TPU software version (default: the "
                    "generation's base image, see SOFTWARE; or a tpu-vm-tf-2.19.0[-pod]-pjrt runtime).")
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
flags.DEFINE_string("worker", None, "run, logs: the host (default 0, where the single TPU client "
                    "runs); 'all' runs a command on every host (never a TPU training program).")
flags.DEFINE_string("grpc_worker_image", None, "setup, pod slices: the TPU runtime image the hosts "
                    "serve the slice with (default: gcr.io/cloud-tpu-v2-images/grpc_tpu_worker:"
                    "tf-<requirements-tpu.txt's TensorFlow>-pjrt).")
flags.DEFINE_string("job", "pretrain", "run, logs: the log file's name, REMOTE_DIR/logs/JOB.log.")
flags.DEFINE_bool("foreground", False, "run: stay attached and stream the output.")
flags.DEFINE_multi_string("env", [], "run: extra KEY=VALUE environment for the command.")
flags.DEFINE_integer("lines", 100, "logs: how many last lines.")
flags.DEFINE_bool("follow", False, "logs: keep following the log (tail -f).")
flags.DEFINE_bool("dry_run", False, "Print the commands instead of running them.")


# ------------------------------------------------------------------------------- preflight

def preflight(workdir, data, zone):
    """Checks the gs:// paths the run will use before anything is created: both buckets exist, the
    workdir accepts writes and the data has a manifest.json (storage.gcs makes the requests).
    Returns notes (a bucket outside the TPU's region); raises TpuError listing every problem."""
    problems, notes = [], []
    for flag, url in (("workdir", workdir), ("data", data)):
        if not url:
            problems.append("--%s is needed for the preflight (or pass --skip_preflight)." % flag)
        elif not url.startswith("gs://"):
            problems.append("--%s=%s: TPU hosts share no disk; use a gs:// path." % (flag, url))
    if not problems:
        from google.api_core import exceptions
        from storage import gcs   # imports TensorFlow: only when there is something to check
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
    version = runtime_version(FLAGS.accelerator_type, FLAGS.runtime_version)
    capacity = ["--spot"] if FLAGS.spot else ["--reserved"] if FLAGS.reserved else []
    if FLAGS.queued:
        return (["gcloud", "compute", "tpus", "queued-resources", "create"] + _where(FLAGS.name)
                + ["--node-id=%s" % FLAGS.name, "--accelerator-type=%s" % FLAGS.accelerator_type,
                   "--runtime-version=%s" % version] + capacity)
    return (["gcloud", "compute", "tpus", "tpu-vm", "create"] + _where(FLAGS.name)
            + ["--accelerator-type=%s" % FLAGS.accelerator_type, "--version=%s" % version] + capacity)


def ssh_command(script, worker):
    return (["gcloud", "compute", "tpus", "tpu-vm", "ssh"] + _where(FLAGS.name)
            + ["--worker=%s" % worker, "--command", script])


def setup_commands():
    """Copies this checkout to every host, installs requirements-tpu.txt there (keeping the
    TensorFlow of a TF runtime image, checked against the pin) and, on a pod slice, points each
    host's TPU runtime at the gRPC worker of that TensorFlow (what Google's TF TPU tests do)."""
    _, _, hosts = slice_shape(FLAGS.accelerator_type)
    tf_version = tpu_tensorflow()
    archive = os.path.join(ROOT, "workspace", "tpu_vm", "%s.tar.gz" % FLAGS.name)
    remote = "~/%s" % FLAGS.remote_dir
    steps = [
        "mkdir -p %s" % remote,
        "tar -xzf ~/%s.tar.gz -C %s" % (FLAGS.remote_dir, remote),
        "cd %s" % remote,
        "python3 -m launch.tpu_host requirements > .requirements-host.txt",
        "python3 -m pip install --quiet -r .requirements-host.txt",
        "python3 -m launch.tpu_host check"]
    if hosts > 1:
        image = (FLAGS.grpc_worker_image
                 or "gcr.io/cloud-tpu-v2-images/grpc_tpu_worker:tf-%s-pjrt" % tf_version)
        service = "/etc/systemd/system/tpu-runtime.service"
        steps += ["sudo sed -i 's|TF_DOCKER_URL=.*|TF_DOCKER_URL=%s\"|' %s" % (image, service),
                  "sudo systemctl daemon-reload", "sudo systemctl restart tpu-runtime"]
    return [
        ["mkdir", "-p", os.path.dirname(archive)],
        ["tar", "-czf", archive, "--exclude=./.git", "--exclude=./workspace", "--exclude=__pycache__",
         "--exclude=.pytest_cache", "-C", ROOT, "."],
        (["gcloud", "compute", "tpus", "tpu-vm", "scp", archive]
         + _where("%s:~/%s.tar.gz" % (FLAGS.name, FLAGS.remote_dir)) + ["--worker=all"]),
        ssh_command(" && ".join(steps), "all")]


def tpu_environment(hosts):
    """What TensorFlow needs on worker 0 (TPU_NAME: "local" or the slice's name)."""
    if hosts > 1:   # the client reaches every host through the TPU's name; local chips untouched
        env = {"TPU_NAME": FLAGS.name, "TPU_LOAD_LIBRARY": "0"}
    else:           # the client drives this VM's chips through the PJRT plugin
        env = {"TPU_NAME": "local", "PJRT_DEVICE": "TPU", "NEXT_PLUGGABLE_DEVICE_USE_C_API": "true"}
    for item in FLAGS.env:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise TpuError("--env %r: expected KEY=VALUE." % item)
        env[key] = value
    return env


# libtpu's path: the pip package's (base images), else the runtime image's /lib/libtpu.so.
_LIBTPU = ("export TF_PLUGGABLE_DEVICE_LIBRARY_PATH=$(python3 -c 'import libtpu; "
           "print(libtpu.get_library_path())' 2>/dev/null || echo /lib/libtpu.so)")


def _flag(text, name):
    """The value of --name=VALUE (or --name VALUE) in a command line, or None."""
    m = re.search(r"--%s[= ](\S+)" % re.escape(name), text)
    return m.group(1) if m else None


def run_command(program):
    if not program:
        raise TpuError("run: no command; put it after `--`, e.g. `run --name=... -- python3 -m "
                       "launch.pretrain --config=...`.")
    _, _, hosts = slice_shape(FLAGS.accelerator_type)
    text = " ".join(program)
    trains_on_tpu = _flag(text, "config.distribute.name") == "tpu"
    tpu = _flag(text, "config.distribute.tpu")
    worker = FLAGS.worker if FLAGS.worker is not None else "0"
    if trains_on_tpu and worker != "0":
        raise TpuError("--worker=%s: TensorFlow's TPUStrategy is single-client, one process on worker "
                       "0 drives every host of the slice; on more hosts each would start a client of "
                       "the whole slice (and write the same checkpoints). Leave --worker unset."
                       % worker)
    # The TPU to reach is known here (--name, or "local" on one host): a program that does not
    # say is given it; one that says something else is refused.
    wanted = FLAGS.name if hosts > 1 else "local"
    if trains_on_tpu and tpu is None:
        program = list(program) + ["--config.distribute.tpu=%s" % wanted]
    elif trains_on_tpu and hosts > 1 and tpu != wanted:
        raise TpuError("%s has %d hosts: the client on worker 0 reaches them through the TPU's "
                       "name%s. Pass --config.distribute.tpu=%s (or leave it out)." % (
                           FLAGS.accelerator_type, hosts, " (with tpu=local it would drive only "
                           "its own host's chips)" if tpu == "local" else "", FLAGS.name))
    elif trains_on_tpu and tpu != wanted:
        raise TpuError("%s is a single-host slice: its chips are this VM's. Pass "
                       "--config.distribute.tpu=local (or leave it out)." % FLAGS.accelerator_type)
    env = tpu_environment(hosts)
    log = "logs/%s.log" % FLAGS.job
    steps = ["cd ~/%s" % FLAGS.remote_dir, "mkdir -p logs"]
    steps += ["export %s=%s" % (k, shlex.quote(v)) for k, v in sorted(env.items())]
    if hosts == 1:
        steps.append(_LIBTPU)
    if FLAGS.foreground:
        steps.append("%s 2>&1 | tee -a %s" % (shlex.join(program), log))
    else:
        steps.append("(nohup %s >> %s 2>&1 < /dev/null &)" % (shlex.join(program), log))
    return ssh_command(" && ".join(steps), worker)


def logs_command():
    return ssh_command("tail -n %d %s~/%s/logs/%s.log" % (FLAGS.lines, "-f " if FLAGS.follow else "",
                                                        FLAGS.remote_dir, FLAGS.job),
                       FLAGS.worker if FLAGS.worker is not None else "0")


def delete_command():
    if FLAGS.queued:   # --force: the TPU VM goes with its queued resource
        return (["gcloud", "compute", "tpus", "queued-resources", "delete"] + _where(FLAGS.name)
                + ["--force", "--quiet"])
    return ["gcloud", "compute", "tpus", "tpu-vm", "delete"] + _where(FLAGS.name) + ["--quiet"]


def plan(command, program):
    """Validates the flags for `command`; returns the commands to run, in order."""
    FLAGS.accelerator_type = accelerator(FLAGS.accelerator_type) or None
    needs_slice = command in ("create", "setup", "run")
    missing = [f for f in ("name", "zone") + (("accelerator_type",) if needs_slice else ())
               if not FLAGS[f].value]
    if missing:
        raise TpuError("%s needs %s." % (command, ", ".join("--" + f for f in missing)))
    if not re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", FLAGS.name):
        raise TpuError("--name %r: lowercase letters, digits and dashes, starting with a letter."
                       % FLAGS.name)
    if FLAGS.worker is not None and not re.fullmatch(r"all|\d+", FLAGS.worker):
        raise TpuError("--worker %r: 'all' or a host index (0, 1, ...)." % FLAGS.worker)
    for flag in ("remote_dir", "job"):   # both end up in shell command lines on the hosts
        if not re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_.\-]*", FLAGS[flag].value):
            raise TpuError("--%s %r: letters, digits, '.', '_' and '-' only." % (flag, FLAGS[flag].value))
    if needs_slice:
        slice_shape(FLAGS.accelerator_type)
    if command in ("create", "run"):
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
