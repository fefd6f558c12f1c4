"""The ``fake_cvat`` pytest fixture (re-exported by ``tests/conftest.py``)."""
from __future__ import annotations

from typing import Iterator

import pytest


@pytest.fixture()
def fake_cvat() -> Iterator["FakeCvatServer"]:  # noqa: F821 - imported lazily below
    """A running fake CVAT server, fresh for each test; ``.env`` holds the ``CVAT_*`` variables."""
    from .server import FakeCvatServer  # cvat-sdk is imported only by tests that use the server

    server = FakeCvatServer().start()
    try:
        yield server
    finally:
        server.stop()
