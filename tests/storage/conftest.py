from tests.export.conftest import gcs_emulator  # noqa: F401  (the GCS emulator fixture)
