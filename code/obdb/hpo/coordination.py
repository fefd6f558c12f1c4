"""Several workers on one study: locks held in the study's database, and claims.

Workers started on one PostgreSQL study (``scripts/run_training.sh --workers N``) agree on two
things through the database, never through files or the network between them:

* **trial slots** — a worker starts a trial only while it holds the study's lock and the study has
  fewer than ``max_num_trials`` finished + running trials, so the budget cannot be overshot;
* **the final model** — per variant, the worker that holds the ``final`` lock trains it, the
  others log that and go on (and exit 0 at the end).

The locks are PostgreSQL advisory locks (``GET_LOCK`` on MySQL) on a connection of their own: a
killed worker's connection closes and its locks go with it, so nothing is left to clean up.
SQLite studies have one runner at a time and get a lock that is always free.
"""
from __future__ import annotations

import hashlib
import logging
import os
import socket
import time
from typing import Any

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
    the claim lasts until :meth:`release` (or the worker's death)."""

    def __init__(self, storage: Any, name: str) -> None:
        self.name = name
        self._lock = DatabaseLock(storage, f"obdb-final:{name}") if storage is not None else None
        self.held = self._lock.try_acquire() if self._lock is not None else True

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()


def claim_final(storage: optuna.storages.BaseStorage | None, name: str) -> FinalClaim:
    claim = FinalClaim(storage, name)
    if claim.held:
        log.info("worker %s: claimed the final training of %s", worker_id(), name)
    else:
        log.info("worker %s: another worker is training the final model of %s; this worker skips it",
                 worker_id(), name)
    return claim
