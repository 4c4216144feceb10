"""GCS through google-cloud-storage against a real emulator on loopback: the preflight, and
exports uploaded with CRC32C checks, manifest last, nothing left behind on failure.

TensorFlow's own gs:// filesystem (tf.io.gfile) cannot be pointed at an emulator (its endpoints
are fixed to googleapis.com), so what goes through it is not exercised here."""

import hashlib
import os
import time

import numpy as np
import pytest

from downstream import build_transformer_model
from pretrain import export
from storage import gcs
from pretrain.export_dir import ExportDir

BUCKET = "gs://test-bucket"


def test_preflight_fails_in_seconds_with_clear_messages(gcs_emulator, monkeypatch):
    gcs.preflight(read=["/some/local/path"], write=[BUCKET + "/runs/a"])   # writable: passes
    assert gcs.list_names(BUCKET + "/runs/a") == []                         # and the probe is gone
    with pytest.raises(gcs.GcsError, match="bucket gs://missing-bucket does not exist"):
        gcs.preflight(write=["gs://missing-bucket/runs/a"])
    with pytest.raises(gcs.GcsError, match="nothing there"):
        gcs.preflight(read=[BUCKET + "/data/never-built"])
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", "http://127.0.0.1:1")       # nothing listens there
    started = time.time()
    with pytest.raises(gcs.GcsError, match="cannot reach Cloud Storage"):
        gcs.preflight(write=[BUCKET + "/runs/a"])
    assert time.time() - started < 5
    monkeypatch.delenv("STORAGE_EMULATOR_HOST")
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nonexistent/key.json")
    with pytest.raises(gcs.GcsError, match="No Google Cloud credentials found"):
        gcs.preflight(write=[BUCKET + "/runs/a"])


def test_export_to_gcs_is_verified_complete_and_loads(trained_run, exported, gcs_emulator, tmp_path):
    url = BUCKET + "/exports/mlm/4"
    manifest = export.export(trained_run[0], url)
    listed = gcs.client().list_blobs("test-bucket", prefix="exports/mlm/4/")
    blobs = {b.name.rsplit("/", 1)[1]: b for b in listed}
    assert sorted(blobs) == sorted(os.listdir(exported))
    assert max(blobs.values(), key=lambda b: b.generation).name.endswith("export_manifest.json")
    downloaded = tmp_path / "export"
    gcs.download_directory(url, str(downloaded))   # CRC32C checked again on the way back
    for name, info in manifest.files.items():
        assert hashlib.sha256((downloaded / name).read_bytes()).hexdigest() == info["sha256"]
        if name != "export_manifest.json":   # the same bytes as the local export of this step
            assert (downloaded / name).read_bytes() == open(os.path.join(exported, name), "rb").read()
    directory = ExportDir(str(downloaded))
    bert = build_transformer_model(directory.config_path, directory.prefix, with_pool=True)
    assert np.isfinite(bert.predict([np.array([[2, 10, 3]]), np.zeros((1, 3), np.int32)], verbose=0)).all()
    assert export.export(trained_run[0], url).created == manifest.created   # unchanged
    with pytest.raises(export.ExportError, match="already holds a different export"):
        export.export(trained_run[0], url, step=2)


def test_failed_uploads_leave_nothing_and_corruption_is_detected(trained_run, gcs_emulator, tmp_path):
    for name in ("a.bin", "b.bin", "export_manifest.json"):
        (tmp_path / name).write_bytes(os.urandom(1000))
    url = BUCKET + "/exports/broken"
    with pytest.raises(FileNotFoundError):
        gcs.upload_directory(str(tmp_path), url, ["a.bin", "b.bin", "missing.bin", "export_manifest.json"])
    assert gcs.list_names(url) == []
    gcs.upload_directory(str(tmp_path), url, ["a.bin"])
    blob = gcs.client().bucket("test-bucket").blob("exports/broken/a.bin")
    gcs.check_object(blob, str(tmp_path / "a.bin"))
    with pytest.raises(gcs.GcsError, match="does not match .* The transfer was corrupted"):
        gcs.check_object(blob, str(tmp_path / "b.bin"))   # same size, other bytes
    with pytest.raises(export.ExportError, match="holds 1 object\\(s\\) but no export_manifest.json"):
        export.export(trained_run[0], url)


def test_pretrain_refuses_an_unwritable_gs_workdir_before_building_anything(mlm_data, gcs_emulator):
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc = subprocess.run(
        [sys.executable, "-m", "launch.pretrain", "--config=configs/quickstart.py",
         "--config.data.train_dir=%s" % mlm_data, "--workdir=gs://missing-bucket/runs/a"],
        cwd=root, capture_output=True, text=True, timeout=120, env=dict(os.environ, PYTHONPATH=root))
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "bucket gs://missing-bucket does not exist" in proc.stderr
    assert "checkpoints:" not in proc.stderr   # no run summary: nothing was built or trained
