"""A tiny real pretraining run and its export, shared by the export and fine-tuning tests."""

import os
import socket
import subprocess
import sys

import pytest

from pretrain import export
from pretrain.trainer import Trainer
from tests.pretrain.conftest import mlm_data, tiny_config  # noqa: F401  (mlm_data is a fixture)


@pytest.fixture(scope="session")
def trained_run(mlm_data, tmp_path_factory):
    """(workdir, trainer) of a 4-step MLM run: checkpoints at steps 2 and 4."""
    workdir = str(tmp_path_factory.mktemp("runs") / "mlm")
    trainer = Trainer(tiny_config(mlm_data, steps=4), workdir, progress=False)
    trainer.train()
    return workdir, trainer


@pytest.fixture(scope="session")
def exported(trained_run, tmp_path_factory):
    """The export of the run's latest step (4)."""
    output = str(tmp_path_factory.mktemp("exports") / "mlm" / "4")
    export.export(trained_run[0], output)
    return output


@pytest.fixture(scope="session")
def exported_hf(trained_run, tmp_path_factory):
    """The run's step 4, exported by the command line with --format=google,hf (hf/ inside)."""
    output = str(tmp_path_factory.mktemp("exports") / "mlm" / "4")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    done = subprocess.run([sys.executable, "-m", "launch.export", "--workdir=%s" % trained_run[0],
                           "--output=%s" % output, "--format=google,hf"], cwd=root, capture_output=True,
                          text=True, timeout=300, env=dict(os.environ, PYTHONPATH=root,
                                                           TF_CPP_MIN_LOG_LEVEL="2"))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "hf/model.safetensors" in done.stdout
    return output


@pytest.fixture(scope="session")
def gcs_emulator():
    """A GCS emulator on loopback with bucket `test-bucket`; STORAGE_EMULATOR_HOST points at it."""
    from gcp_storage_emulator.server import create_server

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = create_server("127.0.0.1", port, in_memory=True, default_bucket="test-bucket")
    server.start()
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    os.environ["STORAGE_EMULATOR_HOST"] = "http://127.0.0.1:%d" % port
    yield "test-bucket"
    server.stop()
    if previous is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = previous
