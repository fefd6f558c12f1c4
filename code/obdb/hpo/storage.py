"""Where studies live. A file in ``save_dir`` by default (the dashboard opens it directly); a
PostgreSQL URL lets several workers share one study. The environment variable
``OBDB_OPTUNA_STORAGE`` wins over the settings so passwords never have to be written in a file."""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Iterator

import optuna

from obdb.errors import ServiceUnavailable

from ..redaction import redact as redact_text

log = logging.getLogger(__name__)
ENV_VAR = "OBDB_OPTUNA_STORAGE"


def storage_url(configured: str | None, save_dir: Path) -> str:
    url = os.environ.get(ENV_VAR) or configured
    if url:
        return url
    return f"sqlite:///{(Path(save_dir) / 'optuna.db').resolve()}"


def redact(url: str) -> str:
    """The URL with any password replaced (``user:PASS@`` and ``?password=``), for logs."""
    return redact_text(url)


def is_single_host_file(url: str) -> bool:
    """SQLite files are used by one runner at a time, so RUNNING trials found at start are stale."""
    return url.startswith("sqlite:")


def open_storage(url: str, *, heartbeat_interval: int = 30, grace_period: int = 120,
                 max_retry: int | None = 2) -> optuna.storages.BaseStorage:
    """The storage behind ``url``. Shared databases (PostgreSQL, MySQL) get heartbeats: a worker
    records one for its running trial every ``heartbeat_interval`` seconds, and a trial whose last
    heartbeat is older than ``grace_period`` (its worker was killed) is failed by the next worker
    that looks and queued again with the same parameters, at most ``max_retry`` times."""
    if url.startswith("sqlite:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    if url.startswith(("postgresql", "mysql")):
        if grace_period <= heartbeat_interval:
            raise ValueError(f"grace_period ({grace_period}) must be longer than heartbeat_interval "
                             f"({heartbeat_interval})")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
            return optuna.storages.RDBStorage(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                                              heartbeat_stale_trial_callback=retry,
                                              engine_kwargs={"pool_pre_ping": True})
    return url  # type: ignore[return-value]  # optuna resolves other URL schemes itself


class StorageUnavailable(ServiceUnavailable, RuntimeError):
    """The shared study database cannot be reached (message carries no password)."""


def check_reachable(url: str, *, attempts: int = 3, timeout_s: int = 10) -> None:
    """Connect once to a shared database before a run writes anything, so a wrong host, port or
    password is one clear message in seconds instead of a traceback after the data stage. SQLite
    files and URLs optuna resolves itself are not checked."""
    if not url.startswith(("postgresql", "mysql")):
        return
    import time

    import sqlalchemy

    connect_args = {"connect_timeout": timeout_s}
    last = ""
    for attempt in range(1, attempts + 1):
        engine = sqlalchemy.create_engine(url, connect_args=connect_args, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect():
                return
        except Exception as err:  # noqa: BLE001 - driver errors differ; all mean "not reachable"
            last = " ".join(str(getattr(err, "orig", None) or err).split())
        finally:
            engine.dispose()
        if attempt < attempts:
            time.sleep(2 ** (attempt - 1))
    password = sqlalchemy.engine.make_url(url).password
    if password:
        last = last.replace(password, "***")
    last = redact_text(last)
    raise StorageUnavailable(f"Optuna storage {redact(url)} is not reachable after {attempts} attempt(s): "
                             f"{last[:300]}")


@contextlib.contextmanager
def storage_errors(storage: Any) -> Iterator[None]:
    """A full disk under a SQLite study ("database or disk is full") becomes the ``OSError``
    (ENOSPC) every other full disk is, naming the database file, so the command prints one line
    and a rerun resumes, instead of a driver traceback."""
    try:
        yield
    except Exception as err:  # Optuna wraps driver errors (StorageInternalError from OperationalError)
        if not _disk_full(err):
            raise
        url = storage if isinstance(storage, str) else str(getattr(storage, "url", "") or "")
        where = url.removeprefix("sqlite:///") if url.startswith("sqlite:") else redact_text(url)
        raise OSError(errno.ENOSPC, "No space left on device (the study database is full)", where) from err


def _disk_full(err: BaseException) -> bool:
    """Whether ``err`` or an error it came from is SQLite's "database or disk is full"."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if type(current).__name__ == "OperationalError" and "disk is full" in str(current).lower():
            return True
        current = current.__cause__ or current.__context__
    return False


def is_shared(storage: optuna.storages.BaseStorage | str) -> bool:
    """A database several workers use at once (anything but a SQLite file)."""
    url = storage if isinstance(storage, str) else getattr(storage, "url", "")
    return bool(url) and not url.startswith("sqlite:")
