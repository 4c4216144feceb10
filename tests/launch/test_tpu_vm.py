"""launch.tpu_vm: the exact gcloud commands of --dry_run (goldens), refused flag combinations, and
the GCS preflight against a stand-in storage client."""

import os
import subprocess
import sys

import pytest

from launch import tpu_vm

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def tpu_vm_cli(*args):
    proc = subprocess.run([sys.executable, "-m", "launch.tpu_vm"] + list(args), cwd=ROOT,
                          capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=ROOT),
                          timeout=60)
    return proc.returncode, proc.stdout.replace(ROOT, "<ROOT>"), proc.stderr


V4 = ("--name=bert", "--zone=us-central2-b", "--accelerator_type=v4-32")
V6E = ("--name=bert", "--zone=us-east5-b", "--accelerator_type=v6e-16")
PRETRAIN = ("python3", "-m", "launch.pretrain", "--config=configs/bert_base.py",
            "--config.distribute.name=tpu", "--config.distribute.tpu=bert", "--workdir=gs://b/runs/x")

GOLDEN = [
    (("create",) + V4 + ("--skip_preflight",),
     "gcloud compute tpus queued-resources create bert --zone=us-central2-b --node-id=bert "
     "--accelerator-type=v4-32 --runtime-version=tpu-vm-tf-2.21.0-pod\n"),
    (("create", "--name=bert", "--zone=us-east5-b", "--accelerator_type=v6e-8", "--spot",
      "--noqueued", "--project=my-proj", "--skip_preflight"),
     "gcloud compute tpus tpu-vm create bert --zone=us-east5-b --project=my-proj "
     "--accelerator-type=v6e-8 --version=tpu-vm-tf-2.21.0-pjrt --spot\n"),
    (("create",) + V6E + ("--reserved", "--runtime_version=tpu-vm-tf-2.21.0-pod-pjrt", "--skip_preflight"),
     "gcloud compute tpus queued-resources create bert --zone=us-east5-b --node-id=bert "
     "--accelerator-type=v6e-16 --runtime-version=tpu-vm-tf-2.21.0-pod-pjrt --reserved\n"),
    (("setup", "--name=bert", "--zone=us-central2-b"),
     "mkdir -p <ROOT>/workspace/tpu_vm\n"
     "tar -czf <ROOT>/workspace/tpu_vm/bert.tar.gz --exclude=./.git --exclude=./workspace "
     "--exclude=__pycache__ --exclude=.pytest_cache -C <ROOT> .\n"
     "gcloud compute tpus tpu-vm scp <ROOT>/workspace/tpu_vm/bert.tar.gz "
     "'bert:~/bert-tf-pretrain.tar.gz' --zone=us-central2-b --worker=all\n"
     "gcloud compute tpus tpu-vm ssh bert --zone=us-central2-b --worker=all --command "
     "'mkdir -p ~/bert-tf-pretrain && tar -xzf ~/bert-tf-pretrain.tar.gz -C ~/bert-tf-pretrain && "
     "cd ~/bert-tf-pretrain && grep -v ^tensorflow== requirements.txt > requirements-tpu-vm.txt && "
     "python3 -m pip install --quiet -r requirements-tpu-vm.txt && "
     "python3 -c \"import tensorflow as tf; print(tf.__version__)\"'\n"),
    (("run",) + V6E + ("--env=TF_CPP_MIN_LOG_LEVEL=1", "--") + PRETRAIN,
     "gcloud compute tpus tpu-vm ssh bert --zone=us-east5-b --worker=all --command "
     "'cd ~/bert-tf-pretrain && mkdir -p logs && export NEXT_PLUGGABLE_DEVICE_USE_C_API=true && "
     "export PJRT_DEVICE=TPU && export TF_CPP_MIN_LOG_LEVEL=1 && "
     "export TF_PLUGGABLE_DEVICE_LIBRARY_PATH=/lib/libtpu.so && export TPU_NAME=bert && "
     "(nohup python3 -m launch.pretrain --config=configs/bert_base.py --config.distribute.name=tpu "
     "--config.distribute.tpu=bert --workdir=gs://b/runs/x >> logs/pretrain.log 2>&1 < /dev/null &)'\n"),
    (("run", "--name=one", "--zone=us-central1-b", "--accelerator_type=v3-8", "--foreground",
      "--job=quick", "--", "python3", "-m", "launch.pretrain", "--config.distribute.tpu=local"),
     "gcloud compute tpus tpu-vm ssh one --zone=us-central1-b --worker=all --command "
     "'cd ~/bert-tf-pretrain && mkdir -p logs && export TPU_NAME=one && python3 -m launch.pretrain "
     "--config.distribute.tpu=local 2>&1 | tee -a logs/quick.log'\n"),
    (("logs", "--name=bert", "--zone=us-central2-b", "--worker=0", "--follow", "--lines=20"),
     "gcloud compute tpus tpu-vm ssh bert --zone=us-central2-b --worker=0 --command "
     "'tail -n 20 -f ~/bert-tf-pretrain/logs/pretrain.log'\n"),
    (("delete", "--name=bert", "--zone=us-central2-b"),
     "gcloud compute tpus queued-resources delete bert --zone=us-central2-b --force --quiet\n"),
    (("delete", "--name=bert", "--zone=us-central2-b", "--noqueued", "--project=p"),
     "gcloud compute tpus tpu-vm delete bert --zone=us-central2-b --project=p --quiet\n"),
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
    (("create",) + V4 + ("--runtime_version=tpu-vm-tf-2.21.0",),
     "runtime tpu-vm-tf-2.21.0 is for single-host slices but v4-32 has 4 host(s): add -pod"),
    (("create",) + V6E + ("--runtime_version=tpu-vm-tf-2.21.0-pod",), "use a -pjrt version, e.g. "
     "tpu-vm-tf-2.21.0-pod-pjrt"),
    (("run",) + V4 + ("--", "python3", "-m", "launch.pretrain", "--config.distribute.tpu=local"),
     "v4-32 has 4 hosts: with tpu=local each host would drive only its own chips"),
    (("run",) + V4, "run: no command"),
    (("run",) + V4 + ("--env=1X=2", "--", "true"), "--env '1X=2': expected KEY=VALUE"),
    (("delete", "--name=bert"), "delete needs --zone"),
    (("run", "--name=bert", "--zone=us-central2-b", "--", "true"), "run needs --accelerator_type"),
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
    from pretrain import gcs

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
