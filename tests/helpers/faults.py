"""Helpers of the fault tests: the runner as a killable process group, output checks, a MongoDB
relay that stops its server mid-read, a private PostgreSQL cluster, and a volume that fills up.

Everything here changes only what the test owns: its own processes, servers, temp folders and
mounts (never the machine's PostgreSQL or MongoDB).
"""
from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

from helpers.reliability import QUIET, RUNNER, clean_env


# --------------------------------------------------------------------------- the runner
class Runner:
    """``torch_model_runner.py -f SETTINGS`` in its own process group, output to ``log``."""

    def __init__(self, settings: Path, log: Path, env: Mapping[str, str] | None = None) -> None:
        self.argv = [*RUNNER, "-f", str(settings), *QUIET]
        self.log = log
        with open(log, "wb") as out:
            self.process = subprocess.Popen(self.argv, stdout=out, stderr=subprocess.STDOUT, env=clean_env(env),
                                            start_new_session=True)

    @property
    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def tail(self, chars: int = 4000) -> str:
        return f"$ {' '.join(self.argv)}\n[exit {self.process.poll()}]\n{self.text[-chars:]}"

    def wait_until(self, ready: Callable[[], Any], what: str, timeout: float = 600.0, poll: float = 0.05) -> Any:
        """Poll ``ready()`` until it returns something truthy (returned); fails when the runner
        exits first or the time is up."""
        deadline = time.monotonic() + timeout
        while True:
            value = ready()
            if value:
                return value
            if self.process.poll() is not None:
                raise AssertionError(f"the runner exited before {what}:\n{self.tail()}")
            if time.monotonic() > deadline:
                self.kill()
                raise AssertionError(f"no {what} within {timeout:.0f} s:\n{self.tail()}")
            time.sleep(poll)

    def kill(self) -> None:
        """SIGKILL the whole process group (loader workers included), as ``docker kill`` does."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def finish(self, timeout: float = 900.0) -> int:
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"the runner did not finish within {timeout:.0f} s:\n{self.tail()}") from None


def run_to_end(settings: Path, log: Path, env: Mapping[str, str] | None = None,
               timeout: float = 900.0) -> Runner:
    runner = Runner(settings, log, env)
    runner.finish(timeout)
    return runner


# --------------------------------------------------------------------------- the study
def trials(where: Path | str, study: str, *, live: bool = False) -> list[Any]:
    """The study's trials, from a SQLite file (``Path``) or a database URL. A file a runner is
    writing (``live``) is opened read-only; otherwise a copy is read as the next run opens it (a
    run killed mid-transaction leaves a journal that SQLite rolls back first). Empty while the
    file, its tables or the study do not exist yet, or the database does not answer."""
    if isinstance(where, Path) and not live:
        with tempfile.TemporaryDirectory(prefix="obdb-faults-db-") as folder:
            return trials(_copy_sqlite(where, Path(folder)), study, live=True) if where.exists() else []
    import optuna

    if isinstance(where, Path):
        if not where.exists():
            return []
        url, connect_args = f"sqlite:///file:{where}?mode=ro&uri=true", {"timeout": 30}
    else:
        url, connect_args = where, {}
    try:
        storage = optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": connect_args})
        try:
            return optuna.load_study(study_name=study, storage=storage).get_trials(deepcopy=True)
        finally:
            storage.engine.dispose()
    except Exception:  # noqa: BLE001 - not created yet, locked for a moment, or restarting: poll again
        return []


def _copy_sqlite(path: Path, folder: Path) -> Path:
    """``path`` with its journal copied into ``folder``, opened once so SQLite rolls the journal back."""
    copy = folder / path.name
    for suffix in ("", "-journal", "-wal"):
        if Path(f"{path}{suffix}").exists():
            shutil.copyfile(f"{path}{suffix}", f"{copy}{suffix}")
    with contextlib.closing(sqlite3.connect(copy)) as db:
        db.execute("PRAGMA schema_version").fetchone()
    return copy


def trial_record(trial: Any) -> tuple:
    """What must never change about a finished trial."""
    return trial.number, trial.state.name, dict(trial.params), trial.values, dict(trial.intermediate_values)


# --------------------------------------------------------------------------- outputs
def temp_files(root: Path) -> list[Path]:
    """Files left by an unfinished atomic write (``.<name>.<random>.tmp``)."""
    return sorted(p for p in root.rglob(".*.tmp") if p.is_file())


def broken_outputs(save_dir: Path) -> list[str]:
    """Every output that exists must be whole: JSON parses, torch files load with
    ``weights_only=True``, ``model.pt`` loads as a model, PNGs decode, the study database passes
    SQLite's integrity check. Returns the problems (empty: all good). Temp files are skipped:
    they are never outputs."""
    import torch
    from PIL import Image

    from obdb.models import load_model

    problems = []
    for path in sorted(p for p in save_dir.rglob("*") if p.is_file() and not p.name.endswith(".tmp")):
        name = path.relative_to(save_dir).as_posix()
        try:
            if path.suffix == ".json":
                json.loads(path.read_text(encoding="utf-8"))
            elif path.name == "model.pt":
                load_model(path)
            elif path.suffix == ".pt":
                torch.load(path, map_location="cpu", weights_only=True)
            elif path.suffix == ".png":
                with Image.open(path) as image:
                    image.load()
            elif path.suffix == ".db":
                verdict = sqlite_integrity(path)
                if verdict != "ok":
                    problems.append(f"{name}: {verdict}")
        except Exception as err:  # noqa: BLE001 - any failure to read is the finding
            problems.append(f"{name}: {type(err).__name__}: {err}")
    return problems


def sqlite_integrity(path: Path) -> str:
    """SQLite's integrity check of the database as the next run opens it (see :func:`trials`)."""
    with tempfile.TemporaryDirectory(prefix="obdb-faults-db-") as folder:
        with contextlib.closing(sqlite3.connect(_copy_sqlite(path, Path(folder)))) as db:
            return db.execute("PRAGMA integrity_check").fetchone()[0]


# --------------------------------------------------------------------------- MongoDB
class MongoRelay:
    """A TCP relay on a fixed 127.0.0.1 port in front of a MongoDB server.

    With ``trip_on`` (a command name), the ``trip_after``-th + 1 client message carrying that
    command is not forwarded: ``on_trip()`` runs (e.g. stops the server), every connection is cut
    and the port is closed, as when the server process dies in the middle of a read. ``reopen()``
    listens again on the same port, relaying to another server."""

    def __init__(self, target_port: int, *, port: int | None = None, trip_on: str | None = None,
                 trip_after: int = 0, on_trip: Callable[[], None] | None = None) -> None:
        self.target_port = target_port
        self.trigger = trip_on.encode() + b"\x00" if trip_on else None
        self.seen = 0
        self.trip_after = trip_after
        self.on_trip = on_trip
        self.tripped = threading.Event()
        self._lock = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._listener: socket.socket | None = None
        self.port = self._listen(port or 0)

    @property
    def uri(self) -> str:
        """The relay's address; ``directConnection`` because the server announces itself as a
        replica set member with its own address, which the driver would otherwise use instead."""
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true"

    def _listen(self, port: int) -> int:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return listener.getsockname()[1]

    def reopen(self, target_port: int) -> None:
        """Relay again, to ``target_port`` (a restarted server), on the same port; no more trips."""
        self.target_port = target_port
        self.trigger = None
        self._listen(self.port)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, from_client: bool) -> None:
        buffer = b""
        try:
            while True:
                data = source.recv(65536)
                if not data:
                    break
                if not from_client or self.trigger is None:
                    sink.sendall(data)
                    continue
                buffer += data
                while len(buffer) >= 4 and len(buffer) >= int.from_bytes(buffer[:4], "little"):
                    size = int.from_bytes(buffer[:4], "little")
                    message, buffer = buffer[:size], buffer[size:]
                    if self._trips(message):
                        self._trip()
                        return
                    sink.sendall(message)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()

    def _trips(self, message: bytes) -> bool:
        if self.trigger is None or self.trigger not in message[16:]:
            return False
        with self._lock:
            self.seen += 1
            return self.seen > self.trip_after and not self.tripped.is_set()

    def _trip(self) -> None:
        self.tripped.set()
        if self._listener is not None:
            self._listener.close()
        if self.on_trip is not None:
            self.on_trip()
        self.cut()

    def cut(self) -> None:
        with self._lock:
            sockets, self._sockets = self._sockets, []
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        if self._listener is not None:
            self._listener.close()
        self.cut()


# --------------------------------------------------------------------------- PostgreSQL
def _as_postgres(argv: Sequence[str]) -> list[str]:
    """initdb refuses to run as root: as root, run cluster commands as the ``postgres`` user."""
    return ["runuser", "-u", "postgres", "--", *argv] if os.geteuid() == 0 else list(argv)


def private_postgres_problem() -> str | None:
    """Why a private PostgreSQL cluster cannot run here (None: it can)."""
    missing = [tool for tool in ("initdb", "pg_ctl") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not on PATH"
    if os.geteuid() == 0:
        import pwd

        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root and there is no postgres user to run initdb as"
        if shutil.which("runuser") is None:
            return "running as root without runuser to run initdb as the postgres user"
    return None


class PrivatePostgres:
    """A throw-away PostgreSQL cluster in a temp folder on a free port (trust auth, 127.0.0.1),
    which the test may restart or stop without touching any other database."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.root = Path(tempfile.mkdtemp(prefix="obdb-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._cluster(["initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"])
        self._cluster(["pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-o",
                       f"-p {port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off", "start"])

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _cluster(self, argv: list[str]) -> None:
        done = subprocess.run(_as_postgres(argv), capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}): {done.stdout[-1500:]} "
                               f"{done.stderr[-1500:]}")

    def restart(self) -> None:
        """``pg_ctl restart -m fast``: every client connection is cut, the server is back in a second."""
        self._cluster(["pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-t", "60", "-m", "fast",
                       "restart"])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._cluster(["pg_ctl", "-D", str(self.data), "-w", "-m", "immediate", "stop"])
        shutil.rmtree(self.root, ignore_errors=True)


# --------------------------------------------------------------------------- volumes
def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


def can_mount_tmpfs() -> bool:
    """Whether this process may mount a tmpfs (root in a sandbox or CI container usually can)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    probe = Path(tempfile.mkdtemp(prefix="obdb-faults-probe-"))
    try:
        if not _mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(probe)):
            return False
        subprocess.run(["umount", str(probe)], capture_output=True)
        return True
    finally:
        probe.rmdir()


@contextlib.contextmanager
def tmpfs(folder: Path, size: int, read_only: bool = False) -> Iterator[Path]:
    """A tmpfs of ``size`` bytes mounted on ``folder`` (created) for the ``with`` block."""
    folder.mkdir(parents=True, exist_ok=True)
    options = f"size={size}" + (",ro" if read_only else "")
    if not _mount("-t", "tmpfs", "-o", options, "tmpfs", str(folder)):
        raise RuntimeError(f"could not mount a tmpfs on {folder}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def shrink_tmpfs(folder: Path, leave: int) -> None:
    """Remount the tmpfs on ``folder`` so that only ``leave`` bytes stay free: the volume is full
    from now on, for whoever writes to it (no filler file: nothing more is kept in memory)."""
    stats = os.statvfs(folder)
    used = (stats.f_blocks - stats.f_bfree) * stats.f_frsize
    if not _mount("-o", f"remount,size={used + leave}", str(folder)):
        raise RuntimeError(f"could not shrink the tmpfs on {folder}")


@contextlib.contextmanager
def read_only_dir(folder: Path) -> Iterator[Path]:
    """``folder`` as a read-only volume: a read-only tmpfs mount where this process may mount
    (root ignores file modes), else a folder without write permission."""
    if can_mount_tmpfs():
        with tmpfs(folder, 1 << 20, read_only=True):
            yield folder
        return
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    try:
        yield folder
    finally:
        folder.chmod(0o755)
