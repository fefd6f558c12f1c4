"""Where studies live. A file in ``save_dir`` by default (the dashboard opens it directly); a
PostgreSQL URL lets several workers share one study. The environment variable
``OBDB_OPTUNA_STORAGE`` wins over the settings so passwords never have to be written in a file."""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import optuna

log = logging.getLogger(__name__)
ENV_VAR = "OBDB_OPTUNA_STORAGE"


def storage_url(configured: str | None, save_dir: Path) -> str:
    url = os.environ.get(ENV_VAR) or configured
    if url:
        return url
    return f"sqlite:///{(Path(save_dir) / 'optuna.db').resolve()}"


def redact(url: str) -> str:
    """The URL with any password replaced, for logs."""
    return re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def is_single_host_file(url: str) -> bool:
    """SQLite files are used by one runner at a time, so RUNNING trials found at start are stale."""
    return url.startswith("sqlite:")


def open_storage(url: str) -> optuna.storages.BaseStorage:
    if url.startswith("sqlite:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
    if url.startswith(("postgresql", "mysql")):
        return optuna.storages.RDBStorage(url, heartbeat_interval=30, grace_period=120,
                                          engine_kwargs={"pool_pre_ping": True})
    return url  # type: ignore[return-value]  # optuna resolves other URL schemes itself
