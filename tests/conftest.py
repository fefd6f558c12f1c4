"""Shared fixtures: a tiny synthetic detection data set and a settings builder for it.

The images are small (96 px) coloured squares on noise, so a random-init detector runs a few
optimizer steps per second on a CPU and end-to-end tests stay within a minute or two.
"""
from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))

from obdb.sources.cvat_xml import CvatBox, CvatImage, write_cvat_xml  # noqa: E402

sys.path.append(str(ROOT / "tests"))  # test helper packages (fake_cvat)
from fake_cvat.fixtures import fake_cvat  # noqa: E402,F401 - the fake CVAT server fixture

LABELS = ("red", "blue")
PG_URL = "postgresql://postgres@127.0.0.1:5432/test"  # the machine's PostgreSQL (trust auth)


def postgres_up() -> bool:
    """Whether the PostgreSQL the storage tests use answers (CI starts it)."""
    try:
        import psycopg

        psycopg.connect(PG_URL, connect_timeout=3).close()
        return True
    except Exception:  # noqa: BLE001 - any failure means: no server here
        return False
COLOURS = {"red": (220, 30, 30), "blue": (30, 30, 220)}


def make_tiny_dataset(root: Path, *, videos: int = 4, frames: int = 3, size: int = 96, seed: int = 0) -> Path:
    """``videos`` CVAT tasks (one per "video", the natural split group) of ``frames`` images each."""
    rng = random.Random(seed)
    images_dir = root / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for video in range(videos):
        task = f"gt_train_video{video:02d}"
        entries = []
        for frame in range(frames):
            pixels = np.random.default_rng(seed * 1000 + video * 10 + frame).integers(90, 140, (size, size, 3))
            array = pixels.astype(np.uint8)
            boxes = []
            for _ in range(rng.randint(1, 3)):
                label = rng.choice(LABELS)
                w, h = rng.randint(18, 34), rng.randint(18, 34)
                x, y = rng.randint(0, size - w - 1), rng.randint(0, size - h - 1)
                array[y:y + h, x:x + w] = COLOURS[label]
                boxes.append(CvatBox(label, x, y, x + w, y + h))
            name = f"video{video:02d}_frame{frame:04d}.png"
            Image.fromarray(array).save(images_dir / name)
            entries.append(CvatImage(frame, name, size, size, boxes))
        write_cvat_xml(root / "annotations" / f"{task}.xml", task, LABELS, entries)
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny_data"))


def tiny_settings(data: Path, out: Path, **changes: Any) -> dict[str, Any]:
    """Settings for ``make_tiny_dataset`` data in the original file's shape plus our blocks."""
    settings: dict[str, Any] = {
        "experiment": "tiny",
        "variants": ["resnet18"],
        "resnet18": {"run_hpo": 0, "use_settings_file": 1,
                     "optimal_hpo_settings": {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0001,
                                              "step_size": 3, "gamma": 0.5}},
        "max_plateau_count": 5,
        "max_train_epochs": 2,
        "search_epochs": 1,
        "num_initial_data_points": 1,
        "max_num_trials": 3,
        "annotations_list": [],
        "save_dir": str(out / "train"),
        "writer_dir": str(out / "train" / "runs"),
        "dataset_dir": str(data),
        "hpo_parameters": {"lr": [0.002, 0.02], "momentum": [0.8, 0.95], "weight_decay": [1e-5, 1e-3],
                           "step_size": [1, 3], "gamma": [0.1, 0.5]},
        "default_class_map": ["Background", *LABELS],
        "data": {"images_dir": str(data / "images")},
        "split": {"method": "group", "val_fraction": 0.25},
        "model": {"min_size": 96, "max_size": 96, "pretrained": "none"},  # no downloads in tests
        "train": {"batch_size": 3, "workers": 0, "device": "cpu", "warmup_iters": 2},
        "hpo": {"pruner": "none"},
    }
    for key, value in changes.items():
        settings[key] = value
    return settings


@pytest.fixture()
def settings_file(tiny_data: Path, tmp_path: Path) -> Callable[..., Path]:
    """``settings_file(**changes)`` writes tiny settings to a file and returns its path."""

    def write(**changes: Any) -> Path:
        path = tmp_path / "settings.json"
        path.write_text(json.dumps(tiny_settings(tiny_data, tmp_path, **changes), indent=2))
        return path

    return write


# --------------------------------------------------------------------------- MongoDB
# SecantusDB (a MongoDB wire-protocol server, test-only dependency) runs as a subprocess so a test
# can stop its own server ("server down") and one storage folder is only ever opened by one server.
# With MONGODB_URI set, the same tests run against that server instead.
import os  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class SecantusServer:
    """``python -m secantus`` on a free 127.0.0.1 port; ``uri`` once it answers, ``stop()`` to end it."""

    def __init__(self, storage: Path, port: int | None = None, timeout: float = 60.0,
                 extra_args: tuple[str, ...] = (), log: Path | None = None) -> None:
        self.port = port or free_port()
        self.uri = f"mongodb://127.0.0.1:{self.port}/"
        storage.mkdir(parents=True, exist_ok=True)
        self.log = log or storage.parent / f"{storage.name}.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port", str(self.port),
                 "--storage-path", str(storage), "--log-level", "WARNING", *extra_args],
                stdout=log, stderr=subprocess.STDOUT)
        self._wait(timeout)

    def _wait(self, timeout: float) -> None:
        import pymongo

        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"SecantusDB exited with {self.process.returncode}: "
                                   f"{self.log.read_text(errors='replace')[-2000:]}")
            try:
                with pymongo.MongoClient(self.uri, serverSelectionTimeoutMS=500) as client:
                    client.admin.command("ping")
                return
            except pymongo.errors.OperationFailure:  # it answered (refusing an unauthenticated ping)
                return
            except pymongo.errors.PyMongoError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"SecantusDB did not answer on {self.uri} within {timeout:.0f} s")
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


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


from pymongo import monitoring  # noqa: E402


class CommandLog(monitoring.CommandListener):
    """A pymongo command listener that keeps every command a client sent, for tests that assert
    which queries a reader used (``pymongo.MongoClient(..., event_listeners=[log])``)."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, dict[str, Any]]] = []

    def started(self, event: Any) -> None:
        self.commands.append((event.command_name, dict(event.command)))

    def succeeded(self, event: Any) -> None:
        pass

    def failed(self, event: Any) -> None:
        pass

    def sent(self, name: str, collection: str | None = None) -> list[dict[str, Any]]:
        """The ``name`` commands sent (on ``collection`` only, when given), oldest first."""
        return [cmd for command, cmd in self.commands
                if command == name and (collection is None or cmd.get(name) == collection)]

    def clear(self) -> None:
        self.commands.clear()


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
# A local stand-in for download.pytorch.org: small real state_dicts, named as torchvision names its
# files (``<name>-<first 8 hex of sha256>.pth``), served from 127.0.0.1 and registered in
# obdb.models.hub.REGISTRY so lookups compute their names and URLs from it.
class WeightServer:
    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        import http.server
        import threading

        self.root, self.monkeypatch = root, monkeypatch
        self.requests: list[str] = []
        self.truncate = False
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, directory=str(root), **kwargs)

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                server.requests.append(self.path)
                if not server.truncate:
                    return super().do_GET()
                data = (root / self.path.lstrip("/")).read_bytes()
                self.send_response(200)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data[: len(data) // 2])  # then the connection drops
                self.close_connection = True

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/models/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def publish(self, state: dict[str, Any], name: str, kind: str = "imagenet", *, wrong_hash: bool = False) -> Any:
        """Serve ``state`` as torchvision would name it and register it for ``(kind, name)``."""
        import hashlib

        import torch

        from obdb.models import hub

        (self.root / "models").mkdir(parents=True, exist_ok=True)
        staging = self.root / f"{name}.staging"
        torch.save(state, staging)
        digest = hashlib.sha256(staging.read_bytes()).hexdigest()
        file_name = f"{name}-{'deadbeef' if wrong_hash else digest[:8]}.pth"
        staging.rename(self.root / "models" / file_name)
        entry = hub.WeightsFile(name, kind, file_name, hub.TORCHVISION_URL_BASE + file_name)
        self.monkeypatch.setitem(hub.REGISTRY, (kind, name), entry)
        return entry

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


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
