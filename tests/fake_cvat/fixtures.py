"""The ``fake_cvat`` pytest fixture (re-exported by ``tests/conftest.py``).

Every test that uses it runs twice: against the fake answering as CVAT 2.80 (the pinned SDK's
version) and as CVAT 2.23 (an older server many teams still run; see ``server.py``). With
``CVAT_URL``, ``CVAT_USERNAME`` and ``CVAT_PASSWORD`` set, a third run goes to that real server
(see ``real.py``); a test that needs what only the fake can do (injected faults, request logs)
is skipped there.
"""
from __future__ import annotations

import os
from typing import Iterator

import pytest

REAL_ENV = ("CVAT_URL", "CVAT_USERNAME", "CVAT_PASSWORD")
MODES = ["2.80", "2.23", "real"]


def real_server_configured() -> bool:
    return all(os.environ.get(key) for key in REAL_ENV)


@pytest.fixture(params=MODES, ids=[f"cvat{m}" for m in MODES])
def fake_cvat(request: pytest.FixtureRequest) -> Iterator["FakeCvatServer"]:  # noqa: F821 - imported lazily below
    """A CVAT server, fresh for each test; ``.env`` holds the ``CVAT_*`` variables."""
    if request.param == "real":
        if not real_server_configured():
            pytest.skip("real CVAT server: set CVAT_URL, CVAT_USERNAME and CVAT_PASSWORD to run against one")
        from .real import RealCvatServer

        server = RealCvatServer.from_env(os.environ)
        try:
            yield server
        finally:
            server.cleanup()
        return
    from .server import FakeCvatServer  # cvat-sdk is imported only by tests that use the server

    fake = FakeCvatServer(mode=request.param).start()
    try:
        yield fake
    finally:
        fake.stop()
