"""launch.tpu_vm: the exact gcloud commands of --dry_run (goldens), refused flag combinations, and
the GCS preflight against a stand-in storage client."""

import os
import subprocess
import sys

import pytest

from launch import tpu_slices, tpu_vm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tpu_vm_cli(*args):
    proc = subprocess.run([sys.executable, "-m", "launch.tpu_vm"] + list(args), cwd=ROOT,
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT),
                          timeout=60)
    return proc.returncode, proc.stdout.replace(ROOT, "<ROOT>"), proc.stderr


V4 = ("--name=bert", "--zone=us-central2-b", "--accelerator_type=v4-32")        # 4 hosts
V4_ONE = ("--name=bert", "--zone=us-central2-b", "--accelerator_type=v4-8")     # 1 host
V5E = ("--name=bert", "--zone=us-west4-a", "--accelerator_type=v5e-64")         # 16 hosts
V5E_ONE = ("--name=bert", "--zone=us-west4-a", "--accelerator_type=v5e-8")      # 1 host
V6E = ("--name=bert", "--zone=us-east5-b", "--accelerator_type=v6e-16")
PRETRAIN = ("python3", "-m", "launch.pretrain", "--config=configs/bert_base.py",
            "--config.distribute.name=tpu", "--config.distribute.tpu=bert", "--workdir=gs://b/runs/x")
COPY = ("mkdir -p <ROOT>/workspace/tpu_vm\n"
        "tar -czf <ROOT>/workspace/tpu_vm/bert.tar.gz --exclude=./.git --exclude=./workspace "
        "--exclude=__pycache__ --exclude=.pytest_cache -C <ROOT> .\n"
        "gcloud compute tpus tpu-vm scp <ROOT>/workspace/tpu_vm/bert.tar.gz "
        "'bert:~/bert-tf-pretrain.tar.gz' --zone=%s --worker=all\n")
INSTALL = ("gcloud compute tpus tpu-vm ssh bert --zone=%s --worker=all --command "
           "'mkdir -p ~/bert-tf-pretrain && tar -xzf ~/bert-tf-pretrain.tar.gz -C ~/bert-tf-pretrain && "
           "cd ~/bert-tf-pretrain && python3 -m launch.tpu_host requirements > .requirements-host.txt && "
           "python3 -m pip install --quiet -r .requirements-host.txt && python3 -m launch.tpu_host check")

GOLDEN = [
    # create: the generation's base image (TensorFlow comes from requirements-tpu.txt in setup)
    (("create",) + V4_ONE + ("--skip_preflight",),
     "gcloud compute tpus queued-resources create bert --zone=us-central2-b --node-id=bert "
     "--accelerator-type=v4-8 --runtime-version=tpu-ubuntu2204-base\n"),
    (("create",) + V4 + ("--spot", "--skip_preflight"),
     "gcloud compute tpus queued-resources create bert --zone=us-central2-b --node-id=bert "
     "--accelerator-type=v4-32 --runtime-version=tpu-ubuntu2204-base --spot\n"),
    (("create",) + V5E_ONE + ("--noqueued", "--project=my-proj", "--skip_preflight"),
     "gcloud compute tpus tpu-vm create bert --zone=us-west4-a --project=my-proj "
     "--accelerator-type=v5litepod-8 --version=v2-alpha-tpuv5-lite\n"),
    (("create",) + V5E + ("--reserved", "--runtime_version=tpu-vm-tf-2.19.0-pod-pjrt", "--skip_preflight"),
     "gcloud compute tpus queued-resources create bert --zone=us-west4-a --node-id=bert "
     "--accelerator-type=v5litepod-64 --runtime-version=tpu-vm-tf-2.19.0-pod-pjrt --reserved\n"),
    (("create",) + V6E + ("--skip_preflight",),
     "gcloud compute tpus queued-resources create bert --zone=us-east5-b --node-id=bert "
     "--accelerator-type=v6e-16 --runtime-version=v2-alpha-tpuv6e\n"),
    # setup: every host; on a pod, the hosts' TPU runtime serves TensorFlow 2.19.1's gRPC worker
    (("setup",) + V4_ONE, COPY % "us-central2-b" + INSTALL % "us-central2-b" + "'\n"),
    (("setup",) + V5E, COPY % "us-west4-a" + INSTALL % "us-west4-a" +
     " && sudo sed -i '\"'\"'s|TF_DOCKER_URL=.*|TF_DOCKER_URL=gcr.io/cloud-tpu-v2-images/"
     "grpc_tpu_worker:tf-2.19.1-pjrt\"|'\"'\"' /etc/systemd/system/tpu-runtime.service && "
     "sudo systemctl daemon-reload && sudo systemctl restart tpu-runtime'\n"),
    # run: worker 0 only; a pod through the TPU's name with TPU_LOAD_LIBRARY=0, one host via PJRT
    (("run",) + V4 + ("--env=TF_CPP_MIN_LOG_LEVEL=1", "--") + PRETRAIN,
     "gcloud compute tpus tpu-vm ssh bert --zone=us-central2-b --worker=0 --command "
     "'cd ~/bert-tf-pretrain && mkdir -p logs && export TF_CPP_MIN_LOG_LEVEL=1 && "
     "export TPU_LOAD_LIBRARY=0 && export TPU_NAME=bert && "
     "(nohup python3 -m launch.pretrain --config=configs/bert_base.py --config.distribute.name=tpu "
     "--config.distribute.tpu=bert --workdir=gs://b/runs/x >> logs/pretrain.log 2>&1 < /dev/null &)'\n"),
    # a program that does not name the TPU is given --name (the pod's) or local (one host)
    (("run",) + V5E + ("--",) + PRETRAIN[:5] + PRETRAIN[6:],
     "gcloud compute tpus tpu-vm ssh bert --zone=us-west4-a --worker=0 --command "
     "'cd ~/bert-tf-pretrain && mkdir -p logs && export TPU_LOAD_LIBRARY=0 && export TPU_NAME=bert && "
     "(nohup python3 -m launch.pretrain --config=configs/bert_base.py --config.distribute.name=tpu "
     "--workdir=gs://b/runs/x --config.distribute.tpu=bert >> logs/pretrain.log 2>&1 < /dev/null &)'\n"),
    (("run",) + V4_ONE + ("--", "python3", "-m", "launch.pretrain", "--config.distribute.name=tpu"),
     "gcloud compute tpus tpu-vm ssh bert --zone=us-central2-b --worker=0 --command "
     "'cd ~/bert-tf-pretrain && mkdir -p logs && export NEXT_PLUGGABLE_DEVICE_USE_C_API=true && "
     "export PJRT_DEVICE=TPU && export TPU_NAME=local && "
     "export TF_PLUGGABLE_DEVICE_LIBRARY_PATH=$(python3 -c '\"'\"'import libtpu; "
     "print(libtpu.get_library_path())'\"'\"' 2>/dev/null || echo /lib/libtpu.so) && "
     "(nohup python3 -m launch.pretrain --config.distribute.name=tpu --config.distribute.tpu=local "
     ">> logs/pretrain.log 2>&1 < /dev/null &)'\n"),
    (("run",) + V5E_ONE + ("--foreground", "--job=quick", "--", "python3", "-m", "launch.pretrain",
                           "--config.distribute.name=tpu", "--config.distribute.tpu=local"),
     "gcloud compute tpus tpu-vm ssh bert --zone=us-west4-a --worker=0 --command "
     "'cd ~/bert-tf-pretrain && mkdir -p logs && export NEXT_PLUGGABLE_DEVICE_USE_C_API=true && "
     "export PJRT_DEVICE=TPU && export TPU_NAME=local && "
     "export TF_PLUGGABLE_DEVICE_LIBRARY_PATH=$(python3 -c '\"'\"'import libtpu; "
     "print(libtpu.get_library_path())'\"'\"' 2>/dev/null || echo /lib/libtpu.so) && "
     "python3 -m launch.pretrain --config.distribute.name=tpu --config.distribute.tpu=local 2>&1 | "
     "tee -a logs/quick.log'\n"),
    (("run",) + V4_ONE + ("--", "python3", "-m", "launch.pretrain", "--config.distribute.name=tpu",
                          "--config.distribute.tpu=local"),
     "gcloud compute tpus tpu-vm ssh bert --zone=us-central2-b --worker=0 --command "
     "'cd ~/bert-tf-pretrain && mkdir -p logs && export NEXT_PLUGGABLE_DEVICE_USE_C_API=true && "
     "export PJRT_DEVICE=TPU && export TPU_NAME=local && "
     "export TF_PLUGGABLE_DEVICE_LIBRARY_PATH=$(python3 -c '\"'\"'import libtpu; "
     "print(libtpu.get_library_path())'\"'\"' 2>/dev/null || echo /lib/libtpu.so) && "
     "(nohup python3 -m launch.pretrain --config.distribute.name=tpu --config.distribute.tpu=local "
     ">> logs/pretrain.log 2>&1 < /dev/null &)'\n"),
    # a command that is not TPU training may run on every host
    (("run",) + V4 + ("--worker=all", "--", "df", "-h"),
     "gcloud compute tpus tpu-vm ssh bert --zone=us-central2-b --worker=all --command "
     "'cd ~/bert-tf-pretrain && mkdir -p logs && export TPU_LOAD_LIBRARY=0 && export TPU_NAME=bert && "
     "(nohup df -h >> logs/pretrain.log 2>&1 < /dev/null &)'\n"),
    # logs: worker 0's, where the client runs
    (("logs",) + V5E[:2] + ("--follow", "--lines=20"),
     "gcloud compute tpus tpu-vm ssh bert --zone=us-west4-a --worker=0 --command "
     "'tail -n 20 -f ~/bert-tf-pretrain/logs/pretrain.log'\n"),
    (("logs",) + V4_ONE[:2],
     "gcloud compute tpus tpu-vm ssh bert --zone=us-central2-b --worker=0 --command "
     "'tail -n 100 ~/bert-tf-pretrain/logs/pretrain.log'\n"),
    (("delete",) + V4[:2],
     "gcloud compute tpus queued-resources delete bert --zone=us-central2-b --force --quiet\n"),
    (("delete", "--name=bert", "--zone=us-west4-a", "--noqueued", "--project=p"),
     "gcloud compute tpus tpu-vm delete bert --zone=us-west4-a --project=p --quiet\n"),
]


@pytest.mark.parametrize("args,expected", GOLDEN, ids=[" ".join(g[0][:1] + g[0][3:4]) for g in GOLDEN])
def test_dry_run_prints_the_exact_commands(args, expected):
    code, out, err = tpu_vm_cli(*(args[:1] + ("--dry_run",) + args[1:]))
    assert code == 0, err
    assert out == expected


@pytest.mark.parametrize("args,message", [
    (("create", "--name=bert", "--zone=us-central1-a", "--accelerator_type=v4-8"),
     "v4-8 is not offered in us-central1-a"),
    (("create", "--name=bert", "--zone=mars-north1-a", "--accelerator_type=v4-8"),
     "zone 'mars-north1-a' is not in the zone table"),
    (("create", "--name=bert", "--zone=us-central2-b", "--accelerator_type=v4-30"),
     "v4-30 is not a v4 slice size (a multiple of 8)"),
    (("create", "--name=bert", "--zone=us-central2-b", "--accelerator_type=tpu-9000"),
     "expected <generation>-<size>"),
    (("create", "--name=bert", "--zone=us-east5-b", "--accelerator_type=v6e-12"),
     "v6e-12 is not a v6e slice size (1, 4, 8, 16"),
    (("create",) + V4 + ("--spot", "--reserved"), "--spot and --reserved exclude each other"),
    # TensorFlow versions and runtimes that do not exist for TPUs
    (("create",) + V4 + ("--runtime_version=tpu-vm-tf-2.21.0-pod-pjrt",),
     "there is no TPU runtime for TensorFlow 2.21.0 (the newest is 2.19.0)"),
    (("create",) + V4 + ("--runtime_version=tpu-vm-tf-2.18.0-pod-pjrt",),
     "runtime tpu-vm-tf-2.18.0-pod-pjrt has TensorFlow 2.18 but requirements-tpu.txt pins "
     "TensorFlow 2.19.1"),
    (("create",) + V4 + ("--runtime_version=tpu-vm-tf-2.19.0-pjrt",),
     "runtime tpu-vm-tf-2.19.0-pjrt is for single-host slices but v4-32 has 4 host(s): add -pod"),
    (("create",) + V6E + ("--runtime_version=tpu-vm-tf-2.19.0-pod-se",),
     "v6e runs TensorFlow only on the PJRT runtime: use a -pjrt version, e.g. "
     "tpu-vm-tf-2.19.0-pod-pjrt"),
    (("create",) + V4 + ("--runtime_version=tpu-vm-tf-2.19",), "expected tpu-vm-tf-X.Y.Z"),
    # one client per slice
    (("run",) + V4 + ("--", "python3", "-m", "launch.pretrain", "--config.distribute.name=tpu",
                      "--config.distribute.tpu=local"),
     "v4-32 has 4 hosts: the client on worker 0 reaches them through the TPU's name (with "
     "tpu=local it would drive only its own host's chips). Pass --config.distribute.tpu=bert (or leave it out)"),
    (("run",) + V5E + ("--", "python3", "-m", "launch.pretrain", "--config.distribute.name=tpu",
                       "--config.distribute.tpu=other-tpu"),
     "v5litepod-64 has 16 hosts: the client on worker 0 reaches them through the TPU's name. "
     "Pass --config.distribute.tpu=bert (or leave it out)"),
    (("run",) + V4_ONE + ("--",) + PRETRAIN,
     "v4-8 is a single-host slice: its chips are this VM's. Pass --config.distribute.tpu=local (or "
     "leave it out)"),
    (("run",) + V4 + ("--worker=all", "--") + PRETRAIN,
     "--worker=all: TensorFlow's TPUStrategy is single-client"),
    (("run",) + V4 + ("--worker=2", "--") + PRETRAIN, "--worker=2: TensorFlow's TPUStrategy is single-client"),
    (("run",) + V4, "run: no command"),
    (("run",) + V4 + ("--env=1X=2", "--", "true"), "--env '1X=2': expected KEY=VALUE"),
    (("delete", "--name=bert"), "delete needs --zone"),
    (("run", "--name=bert", "--zone=us-central2-b", "--", "true"), "run needs --accelerator_type"),
    (("setup", "--name=bert", "--zone=us-central2-b"), "setup needs --accelerator_type"),
    (("create", "--name=Bert_1", "--zone=us-central2-b", "--accelerator_type=v4-8"), "--name 'Bert_1'"),
    (("logs", "--name=bert", "--zone=us-central2-b", "--", "ls"), "logs takes no command"),
    (("logs", "--name=bert", "--zone=us-central2-b", "--worker=first"), "--worker 'first'"),
    (("logs", "--name=bert", "--zone=us-central2-b", "--job=a;rm"), "--job 'a;rm': letters"),
    (("create",) + V4 + ("--workdir=gs://b/runs/x", "--data=data/wiki"),
     "--data=data/wiki: TPU hosts share no disk; use a gs:// path"),
    (("create",) + V4, "--workdir is needed for the preflight (or pass --skip_preflight)"),
])
def test_impossible_requests_are_refused(args, message):
    code, out, err = tpu_vm_cli(*(args[:1] + ("--dry_run",) + args[1:]))
    assert code == 2 and out == "", out
    assert "tpu_vm: error: " in err and message in err, err


# ------------------------------------------------------------------------------- preflight

def test_preflight_checks_buckets_manifest_and_region_against_gcs(gcs_emulator):
    """Against a GCS emulator on loopback (its bucket is in the US multi-region)."""
    from storage import gcs

    bucket = "gs://%s" % gcs_emulator
    gcs.client().bucket(gcs_emulator).blob("data/wiki_128/manifest.json").upload_from_string(b"{}")
    assert tpu_vm.preflight(bucket + "/runs/base", bucket + "/data/wiki_128", "us-central2-b") == []
    assert tpu_vm.preflight(bucket + "/runs/base", bucket + "/data/wiki_128/", "europe-west4-a") == [
        "gs://%s is in us but the TPU in europe-west4: reads cross regions (slower, and billed as "
        "egress)." % gcs_emulator]
    gcs.client().bucket(gcs_emulator).blob("data/half_built/train-00000.tfrecord").upload_from_string(b"")
    with pytest.raises(tpu_vm.TpuError) as e:
        tpu_vm.preflight(bucket + "/runs/base", bucket + "/data/half_built", "us-central2-b")
    assert str(e.value) == ("preflight failed, nothing created:\n  --data=%s/data/half_built has no "
                            "manifest.json: build the data there first (python -m launch.build_data "
                            "... --output_dir=%s/data/half_built)." % (bucket, bucket))
    with pytest.raises(tpu_vm.TpuError, match="bucket gs://no-such-bucket does not exist"):
        tpu_vm.preflight("gs://no-such-bucket/runs/base", bucket + "/data/wiki_128", "us-central2-b")


# --------------------------------------------------------------------- the TPU software

@pytest.mark.parametrize("pin,message", [
    ("tensorflow-tpu==2.21.0", "pins tensorflow-tpu==2.21.0, which has no TPU build"),
    ("tensorflow-tpu==2.20.0", "libtpu~=0.0.14"),
    ("tensorflow==2.19.1", "must pin tensorflow-tpu==X.Y.Z exactly once"),
])
def test_a_tensorflow_without_a_working_tpu_build_is_refused(tmp_path, monkeypatch, pin, message):
    (tmp_path / "requirements-tpu.txt").write_text("# comment\n%s\nkeras==3.12.4\n" % pin)
    monkeypatch.setattr(tpu_slices, "ROOT", str(tmp_path))
    with pytest.raises(tpu_slices.TpuError, match=message.replace("(", r"\(").replace(")", r"\)")):
        tpu_slices.runtime_version("v4-8")


def test_the_host_installs_the_pinned_tensorflow_unless_an_image_brings_one(tmp_path, monkeypatch):
    from launch import tpu_host

    (tmp_path / "requirements-tpu.txt").write_text("tensorflow-tpu==2.19.1  # pins libtpu\nkeras==3.12.4\n")
    assert tpu_host.pinned_tensorflow(str(tmp_path)) == "2.19.1"
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "tensorflow" else real(name))
    assert tpu_host.requirements(str(tmp_path)) == "tensorflow-tpu==2.19.1  # pins libtpu\nkeras==3.12.4\n"
    monkeypatch.setattr(importlib.util, "find_spec", real)   # this machine has a TensorFlow
    assert tpu_host.requirements(str(tmp_path)) == "keras==3.12.4\n"
    assert tpu_vm.tpu_tensorflow() == "2.19.1"               # the project's own pin is usable


def test_training_refuses_to_start_on_a_pod_host_other_than_worker_0(mlm_data, tmp_path):
    """TPUStrategy is single-client: on worker 3 of a slice the program stops before TensorFlow
    touches the TPU, saying where to run it."""
    cmd = [sys.executable, "-m", "launch.pretrain", "--config=configs/quickstart.py",
           "--config.data.train_dir=%s" % mlm_data, "--config.distribute.name=tpu",
           "--config.distribute.tpu=bert", "--workdir=%s" % (tmp_path / "run")]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=ROOT, TPU_WORKER_ID="3"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "This TPU VM is worker 3 of its slice" in proc.stderr
    assert "Start the program on worker 0 only" in proc.stderr
