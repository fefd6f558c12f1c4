"""Several workers on one study: locks held in the study's database, and claims.

Workers started on one PostgreSQL study (``scripts/run_training.sh --workers N``) agree on two
things through the database, never through files or the network between them:

* **trial slots** — a worker starts a trial only while it holds the study's lock and the study has
  fewer than ``max_num_trials`` finished + running trials, so the budget cannot be overshot;
* **the final model** — per variant, the worker that holds the ``final`` lock trains it, the
  others log that and go on (and exit 0 at the end).

The locks are PostgreSQL advisory locks (``GET_LOCK`` on MySQL) on a connection of their own: a
killed worker's connection closes and its locks go with it, so nothing is left to clean up.

A SQLite study has **one runner at a time**: :func:`runner_lock` takes a lock file next to the
database for each study the run touches (its search and its final training), recording host, pid
and start time. A second runner on the same study stops at once with a message naming the holder;
a lock whose holder died (kill -9, a stopped container) is taken over. Inside that lock the
database locks and claims are always free.
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import hashlib
import json
import logging
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterator

try:
    import fcntl
except ImportError:  # not POSIX: the lock file's content alone decides
    fcntl = None  # type: ignore[assignment]

from ..errors import UserError
from ..fileio import host_name, process_gone, process_start

import optuna
import sqlalchemy

log = logging.getLogger(__name__)

#: Environment variable naming a worker in logs (``run_training.sh`` sets it to the worker index).
WORKER_ENV = "OBDB_WORKER_ID"


def worker_id() -> str:
    return os.environ.get(WORKER_ENV) or f"{socket.gethostname()}:{os.getpid()}"


_LOCK_ENGINES: dict[str, sqlalchemy.engine.Engine] = {}


def lock_engine(engine: sqlalchemy.engine.Engine) -> sqlalchemy.engine.Engine:
    """An engine without a pool for lock connections: a connection is really closed when the lock
    is released or garbage-collected, so a session lock can never linger in a pooled connection."""
    key = engine.url.render_as_string(hide_password=False)
    if key not in _LOCK_ENGINES:
        _LOCK_ENGINES[key] = sqlalchemy.create_engine(engine.url, poolclass=sqlalchemy.pool.NullPool)
    return _LOCK_ENGINES[key]


def lock_key(name: str) -> int:
    """A signed 64-bit key for ``pg_advisory_lock`` derived from a readable name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


class DatabaseLock:
    """A named lock in the database behind ``storage``; re-entrant use is not supported.

    ``try_acquire()`` never waits; ``acquire(timeout)`` polls until it holds the lock or the time is
    up (every wait in obdb is bounded). Use as a context manager for the blocking form.
    """

    def __init__(self, storage: Any, name: str, *, timeout: float = 600.0, poll: float = 0.1) -> None:
        self.name = name
        self.timeout = timeout
        self.poll = poll
        engine = getattr(storage, "engine", None)
        url = str(getattr(storage, "url", "") or "")
        self.dialect = engine.dialect.name if engine is not None and not url.startswith("sqlite") else "none"
        self._engine = lock_engine(engine) if self.dialect in ("postgresql", "mysql") else None
        self._conn: sqlalchemy.engine.Connection | None = None
        self.held = False

    def _execute(self, sql: str, **params: Any) -> Any:
        assert self._conn is not None
        return self._conn.execute(sqlalchemy.text(sql), params).scalar()

    def try_acquire(self) -> bool:
        if self.held:
            raise RuntimeError(f"lock {self.name!r} is already held by this object")
        if self.dialect not in ("postgresql", "mysql"):
            self.held = True  # one runner at a time (SQLite) or a storage without locks
            return True
        if self._conn is None:
            self._conn = self._engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        if self.dialect == "postgresql":
            got = self._execute("SELECT pg_try_advisory_lock(:key)", key=lock_key(self.name))
        else:
            got = self._execute("SELECT GET_LOCK(:name, 0)", name="obdb-" + hashlib.sha256(
                self.name.encode()).hexdigest()[:40]) == 1
        self.held = bool(got)
        if not self.held:
            self._close()
        return self.held

    def acquire(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while not self.try_acquire():
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not take the database lock {self.name!r} within "
                                   f"{self.timeout if timeout is None else timeout:.0f} s")
            time.sleep(self.poll)

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if self._conn is None:
            return
        try:
            if self.dialect == "postgresql":
                self._execute("SELECT pg_advisory_unlock(:key)", key=lock_key(self.name))
            else:
                self._execute("SELECT RELEASE_LOCK(:name)", name="obdb-" + hashlib.sha256(
                    self.name.encode()).hexdigest()[:40])
        except Exception as err:  # noqa: BLE001 - a lost connection has released the lock already
            log.warning("releasing lock %s: %s", self.name, err)
        finally:
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:  # noqa: BLE001
                pass
            self._conn = None

    def __enter__(self) -> "DatabaseLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def study_lock(storage: Any, name: str, timeout: float = 600.0) -> DatabaseLock:
    """The lock that guards trial slots (and study set-up) of the study ``name``."""
    return DatabaseLock(storage, f"obdb-study:{name}", timeout=timeout)


class FinalClaim:
    """Who trains the final model of one variant. ``held`` is True for the one worker that does;
    the claim lasts until :meth:`release` (or the worker's death). Prefer :func:`final_claim`,
    which releases it in a ``finally``."""

    def __init__(self, storage: Any, name: str) -> None:
        self.name = name
        self._lock = DatabaseLock(storage, f"obdb-final:{name}") if storage is not None else None
        self.held = self._lock.try_acquire() if self._lock is not None else True

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def __enter__(self) -> "FinalClaim":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def claim_final(storage: optuna.storages.BaseStorage | None, name: str) -> FinalClaim:
    claim = FinalClaim(storage, name)
    if claim.held:
        log.info("worker %s: claimed the final training of %s", worker_id(), name)
    else:
        log.info("worker %s: another worker is training the final model of %s; this worker skips it",
                 worker_id(), name)
    return claim


@contextlib.contextmanager
def final_claim(storage: optuna.storages.BaseStorage | None, name: str) -> Iterator[FinalClaim]:
    """:func:`claim_final` as a context manager: the claim is released however the block ends."""
    claim = claim_final(storage, name)
    try:
        yield claim
    finally:
        claim.release()


# --- SQLite: one runner per study --------------------------------------------------------------
class StudyBusy(UserError):
    """Another live runner works on the same SQLite study (the message names it)."""


def lock_file(db_path: Path, study: str) -> Path:
    """``<folder>/.<db name>.<study>.lock`` next to the SQLite file (``study`` is a checked name)."""
    return db_path.parent / f".{db_path.name}.{study}.lock"


def _holder_text(holder: dict[str, Any]) -> str:
    return (f"host {holder.get('host', '?')}, pid {holder.get('pid', '?')}, started {holder.get('started', '?')}"
            + (f", worker {holder['worker']}" if holder.get("worker") else ""))


def _read_holder(fd: int) -> dict[str, Any]:
    os.lseek(fd, 0, os.SEEK_SET)
    raw = os.read(fd, 65536)
    try:
        data = json.loads(raw.decode("utf-8")) if raw.strip() else {}
    except (UnicodeDecodeError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


@contextlib.contextmanager
def runner_lock(db_path: Path, study: str) -> Iterator[None]:
    """Hold the study ``study`` of the SQLite file ``db_path`` for this process.

    The lock is an ``flock`` on the lock file (the kernel drops it when the holder dies, so a
    killed runner's lock is simply taken over); the file records who holds it, for the message a
    second runner gets. On a volume without working ``flock`` the recorded holder decides: it is
    taken over when it ran on this host and its process is gone (host + pid + process start time,
    so a restarted container's PID 1 is not taken for the old one)."""
    path = lock_file(Path(db_path), study)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, locked = _open_locked(path)
    try:
        holder = _read_holder(fd)
        if locked is False or (locked is None and holder and not _holder_gone(holder)):
            raise StudyBusy(f"study {study} ({db_path}) is in use by another runner ({_holder_text(holder)}); "
                            f"wait for it to finish or stop it, then rerun (lock file {path})")
        if holder and holder.get("pid") is not None:
            log.warning("study %s: taking over the lock of a runner that is gone (%s)", study, _holder_text(holder))
        me = {"host": host_name(), "pid": os.getpid(), "process_start": process_start(os.getpid()) or "unknown",
              "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "worker": os.environ.get(WORKER_ENV) or None}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(me) + "\n").encode(), 0)
        os.fsync(fd)
        try:
            yield
        finally:
            with contextlib.suppress(OSError):  # released: the file goes (a failed run leaves nothing behind)
                path.unlink()
    finally:
        os.close(fd)  # drops the flock


def _open_locked(path: Path) -> tuple[int, bool | None]:
    """Open and ``flock`` the lock file. A holder removes the file when it releases, so a lock won
    on a file that is no longer at ``path`` is worthless: then open the new one and try again."""
    for _ in range(50):
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        locked = _flock(fd)
        try:
            current = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            current = None
        if locked is not True or (current is not None and current.st_ino == os.fstat(fd).st_ino):
            return fd, locked
        os.close(fd)  # the previous holder removed this file while we waited for it
    raise StudyBusy(f"the lock file {path} keeps changing; is another runner starting and stopping?")


def _flock(fd: int) -> bool | None:
    """True: locked; False: another process holds it; None: this volume has no working locks."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError as err:
        if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            return False
        return None  # ENOLCK, EOPNOTSUPP...


def _holder_gone(holder: dict[str, Any]) -> bool:
    try:
        return process_gone(str(holder.get("host")), int(holder.get("pid")), holder.get("process_start"))
    except (TypeError, ValueError):
        return True  # not a holder record at all
