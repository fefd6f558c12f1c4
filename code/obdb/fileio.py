"""Atomic file output: every file obdb writes goes to a temp file in the same folder first and is
renamed into place, so a crash or a full disk never leaves a half-written output behind."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

try:
    import fcntl
except ImportError:  # not POSIX: temp files are not locked, and none is ever taken for abandoned
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()
TEMP_SUFFIX = ".tmp"  # atomic_path's temp files: ".<name>.<random>.tmp" next to their target


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success fsync it and rename it over ``path``.

    The temp file stays locked (``flock``) until it is renamed or removed, so
    :func:`remove_stale_temps` can tell a write in progress from the leftover of a killed process.
    A failed write raises an ``OSError`` naming ``path`` when the cause was one (a full disk)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TEMP_SUFFIX, dir=target.parent)
    tmp = Path(tmp_name)
    try:
        if fcntl is not None:
            with contextlib.suppress(OSError):  # a volume without locks: the file is just never taken for stale
                fcntl.flock(fd, fcntl.LOCK_EX)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; outputs are shared (dashboards, containers)
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except Exception as err:
        cause = _os_error(err)
        if cause is None or cause.errno is None or cause.filename not in (None, tmp_name, tmp):
            raise  # not about this file (or no OS error at all)
        raise OSError(cause.errno, cause.strerror or os.strerror(cause.errno), str(target)) from err
    finally:
        if tmp.exists():
            tmp.unlink()
        os.close(fd)


def _os_error(err: BaseException) -> OSError | None:
    """The OSError behind ``err`` (itself, or what it was raised from or while handling)."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def remove_stale_temps(root: str | os.PathLike[str], min_age_s: float = 2.0) -> int:
    """Delete the temp files under ``root`` that a killed process left (SIGKILL, power loss, a
    container stopped mid-write). A write in progress holds its temp file's lock, so only
    abandoned ones are taken, even with other processes writing to the same volume. Returns how
    many were removed."""
    if fcntl is None:
        return 0
    removed = 0
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if not (name.startswith(".") and name.endswith(TEMP_SUFFIX)):
                continue
            path = Path(folder) / name
            try:
                fd = os.open(path, os.O_RDWR | getattr(os, "O_NOFOLLOW", 0))
            except OSError:
                continue  # gone already, a link, or not ours to touch
            try:
                if time.time() - os.fstat(fd).st_mtime < min_age_s:
                    continue  # just created: its writer may not hold the lock yet
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                path.unlink()
                removed += 1
            except OSError:
                continue  # locked: being written right now
            finally:
                os.close(fd)
    if removed:
        log.info("removed %d temp file(s) that an interrupted run left under %s", removed, root)
    return removed


def write_text(path: str | os.PathLike[str], text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    return write_text(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def write_with(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> Path:
    """Atomically write with a callback that takes the temp path (e.g. PIL save)."""
    with atomic_path(path) as tmp:
        writer(tmp)
    return Path(path)


def save_torch(path: str | os.PathLike[str], obj: Any) -> Path:
    """``torch.save`` atomically, through a Python file object: a full disk then surfaces as an
    OSError naming ``path`` (torch's own file writer reports only "unexpected pos")."""
    import torch

    def dump(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)

    return write_with(path, dump)


def read_json(path: str | os.PathLike[str]) -> Any:
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (wheels and images can be large)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
