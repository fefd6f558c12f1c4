"""Shared fixtures: the tiny data set, settings files, the test MongoDB server and the fake CVAT server.

The helpers behind them live in the ``helpers`` package (``tests/helpers``, on the import path
through ``pythonpath`` in pyproject.toml): tests import those directly, never from this file.
"""
from __future__ import annotations

import json
import os
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import pytest

from helpers.servers import CommandLog, SecantusServer, free_port
from helpers.tiny_data import make_tiny_dataset, tiny_settings
from helpers.weight_server import WeightServer

if TYPE_CHECKING:
    from helpers.fake_cvat import FakeCvatServer

REAL_CVAT_ENV = ("CVAT_URL", "CVAT_USERNAME", "CVAT_PASSWORD")
CVAT_MODES = ["2.80", "2.23", "real"]


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny_data"))


@pytest.fixture()
def settings_file(tiny_data: Path, tmp_path: Path) -> Callable[..., Path]:
    """``settings_file(**changes)`` writes tiny settings to a file and returns its path."""

    def write(**changes: Any) -> Path:
        path = tmp_path / "settings.json"
        path.write_text(json.dumps(tiny_settings(tiny_data, tmp_path, **changes), indent=2))
        return path

    return write


@pytest.fixture(params=CVAT_MODES, ids=[f"cvat{m}" for m in CVAT_MODES])
def fake_cvat(request: pytest.FixtureRequest) -> Iterator[FakeCvatServer]:
    """A CVAT server, fresh for each test; ``.env`` holds the ``CVAT_*`` variables.

    Every test that uses it runs twice: against the fake answering as CVAT 2.80 (the pinned SDK's
    version) and as CVAT 2.23 (an older server many teams still run; see ``server.py``). With
    ``CVAT_URL``, ``CVAT_USERNAME`` and ``CVAT_PASSWORD`` set, a third run goes to that real server
    (see ``helpers/fake_cvat/real.py``); a test that needs what only the fake can do (injected
    faults, request logs) is skipped there."""
    if request.param == "real":
        if not all(os.environ.get(key) for key in REAL_CVAT_ENV):
            pytest.skip("real CVAT server: set CVAT_URL, CVAT_USERNAME and CVAT_PASSWORD to run against one")
        from helpers.fake_cvat.real import RealCvatServer

        server = RealCvatServer.from_env(os.environ)
        try:
            yield server
        finally:
            server.cleanup()
        return
    from helpers.fake_cvat import FakeCvatServer  # cvat-sdk is imported only by tests that use the server

    fake = FakeCvatServer(mode=request.param).start()
    try:
        yield fake
    finally:
        fake.stop()



@pytest.fixture()
def cvat_env(fake_cvat, monkeypatch: pytest.MonkeyPatch):
    """``fake_cvat`` with its ``CVAT_*`` variables in the environment (and no token or password
    file of the machine's own that would win over them)."""
    for key in ("CVAT_ACCESS_TOKEN", "CVAT_PASSWORD_FILE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in fake_cvat.env.items():
        monkeypatch.setenv(key, value)
    return fake_cvat

# --------------------------------------------------------------------------- MongoDB
# With MONGODB_URI set, the same tests run against that server instead of a SecantusDB.
@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory: pytest.TempPathFactory):
    """URI of the tests' MongoDB server (no password in it unless MONGODB_URI carries one)."""
    if os.environ.get("MONGODB_URI"):
        yield os.environ["MONGODB_URI"]
        return
    server = SecantusServer(tmp_path_factory.mktemp("mongo") / "data")
    try:
        yield server.uri
    finally:
        server.stop()


@pytest.fixture()
def mongo_db(mongo_server: str):
    """A fresh, uniquely named database on the test server, dropped afterwards."""
    import pymongo

    client = pymongo.MongoClient(mongo_server, tz_aware=True, serverSelectionTimeoutMS=10000)
    name = f"obdb_test_{uuid.uuid4().hex[:12]}"
    try:
        yield client[name]
    finally:
        client.drop_database(name)
        client.close()


@pytest.fixture()
def mongo_settings(mongo_server: str) -> Callable[[str], dict[str, Any]]:
    """``mongo_settings(db_name)`` → a ``data.mongo`` settings block for the test server.

    Without MONGODB_URI in the environment the URI goes into the block; with it, the block leaves
    the URI out (MONGODB_URI wins anyway and may carry a password, which settings must not)."""

    def block(db_name: str) -> dict[str, Any]:
        settings: dict[str, Any] = {"database": db_name, "timeout_s": 5.0, "retries": 1}
        if not os.environ.get("MONGODB_URI"):
            settings["uri"] = mongo_server
        return settings

    return block


@pytest.fixture()
def mongo_commands(mongo_server: str, mongo_db):
    """``(db, log)``: the ``mongo_db`` database through a second client whose commands ``log``
    (a :class:`CommandLog`) records."""
    import pymongo

    log = CommandLog()
    client = pymongo.MongoClient(mongo_server, tz_aware=True, serverSelectionTimeoutMS=10000,
                                 event_listeners=[log])
    try:
        yield client[mongo_db.name], log
    finally:
        client.close()


# --------------------------------------------------------------------------- pretrained weights
@pytest.fixture()
def weight_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Downloads go to this server and into an empty torch hub cache under tmp_path."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("OBDB_WEIGHTS_DIR", raising=False)
    server = WeightServer(tmp_path / "served", monkeypatch)
    monkeypatch.setenv("OBDB_WEIGHTS_URL_BASE", server.url)
    yield server
    server.stop()


@pytest.fixture()
def no_weight_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Downloads go to a closed port; the torch hub cache is empty."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("OBDB_WEIGHTS_DIR", raising=False)
    url = f"http://127.0.0.1:{free_port()}/models/"
    monkeypatch.setenv("OBDB_WEIGHTS_URL_BASE", url)
    return url
