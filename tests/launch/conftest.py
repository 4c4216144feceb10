import socket

import pytest

from tests.export.conftest import gcs_emulator  # noqa: F401  (fixtures shared with other test dirs)
from tests.pretrain.conftest import mlm_data  # noqa: F401


def _free(port):
    with socket.socket() as s:
        try:
            s.bind(("", port))
        except OSError:
            return False
    return True


@pytest.fixture
def master_port():
    """A port picked now whose next four ports (the workers') are free too."""
    for _ in range(100):
        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        if port + 4 < 65536 and all(_free(p) for p in range(port, port + 5)):
            return port
    raise RuntimeError("no run of 5 free ports found")
