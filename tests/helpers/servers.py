"""Test servers: the machine's PostgreSQL, a SecantusDB (MongoDB wire protocol) subprocess, free ports
and a pymongo listener that records the commands a client sent.

SecantusDB (a test-only dependency) runs as a subprocess so a test can stop its own server
("server down") and one storage folder is only ever opened by one server.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from pymongo import monitoring

PG_URL = "postgresql://postgres@127.0.0.1:5432/test"  # the machine's PostgreSQL (trust auth)


def postgres_up() -> bool:
    """Whether the PostgreSQL the storage tests use answers (CI starts it)."""
    try:
        import psycopg

        psycopg.connect(PG_URL, connect_timeout=3).close()
        return True
    except Exception:  # noqa: BLE001 - any failure means: no server here
        return False


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
