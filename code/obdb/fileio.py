"""Atomic file output: every file obdb writes goes to a temp file in the same folder first and is
renamed into place, so a crash or a full disk never leaves a half-written output behind."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import socket
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
TEMP_SUFFIX = ".tmp"
#: atomic_path's temp files, ``.obdb-<pid>-<random>.tmp`` next to their target: a name no other
#: program uses, so cleaning up never touches another program's ``.*.tmp`` files on the volume.
TEMP_PREFIX = ".obdb-"
TEMP_NAME = re.compile(r"^\.obdb-\d+-[A-Za-z0-9_]+\.tmp$")
#: a folder's abandoned temp files are swept when a write first lands in it; this old, because a
#: writer on another host sharing the volume may not see our locks (NFS)
SWEEP_MIN_AGE_S = 600.0
_SWEPT: set[Path] = set()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on success fsync it and rename it over ``path``.

    The temp file stays locked (``flock``) until it is renamed or removed, so
    :func:`remove_stale_temps` can tell a write in progress from the leftover of a killed process.
    A failed write raises an ``OSError`` naming ``path`` when the cause was one (a full disk)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    _sweep_once(target.parent)
    fd, tmp_name = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{os.getpid()}-", suffix=TEMP_SUFFIX, dir=target.parent)
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


def _sweep_once(folder: Path) -> None:
    """Every command that writes a file cleans what killed writers left in that folder (once per
    folder and process), so no command leaves the job to the runner alone."""
    key = folder.resolve()
    if key in _SWEPT:
        return
    _SWEPT.add(key)
    try:
        remove_stale_temps(folder, min_age_s=SWEEP_MIN_AGE_S, recursive=False)
    except OSError as err:  # cleaning is a courtesy; the write itself must not fail for it
        log.debug("could not sweep temp files in %s: %s", folder, err)


def remove_stale_temps(root: str | os.PathLike[str], min_age_s: float = 2.0, *, recursive: bool = True) -> int:
    """Delete obdb's own temp files (:data:`TEMP_NAME`) under ``root`` that a killed process left
    (SIGKILL, power loss, a container stopped mid-write). Other programs' ``.*.tmp`` files are
    never touched. A write in progress holds its temp file's lock, so only abandoned ones are
    taken, even with other processes writing to the same volume. Returns how many were removed."""
    if fcntl is None:
        return 0
    removed = 0
    walk = os.walk(root) if recursive else [(str(root), [], _file_names(root))]
    for folder, _dirs, files in walk:
        for name in files:
            if not TEMP_NAME.match(name):
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


def _file_names(folder: str | os.PathLike[str]) -> list[str]:
    try:
        with os.scandir(folder) as entries:
            return [e.name for e in entries if e.is_file(follow_symlinks=False)]
    except OSError:
        return []


# --- which process made a file: host, pid and the process's start time -------------------------
def process_start(pid: int) -> str | None:
    """An id of the running process ``pid`` that changes when the pid is reused: the boot id and
    the process's start time in clock ticks since boot (``/proc/<pid>/stat`` field 22). None
    when there is no such process or no ``/proc``.

    Why not just "is pid alive": in a container the runner is PID 1 in every start, so a
    leftover of a killed PID 1 always looks like a live process's."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip().replace("-", "")[:8]
    except OSError:
        boot = "noboot"
    return f"{boot}-{ticks}"


def host_name() -> str:
    """This machine's name as one file-name-safe word (dots and odd characters become '-')."""
    return "".join(c if c.isalnum() or c == "-" else "-" for c in socket.gethostname()) or "host"


def process_gone(host: str, pid: int, start: str | None) -> bool:
    """Whether the process that recorded ``(host, pid, start)`` is certainly not running any more:
    it ran on this host and no process ``pid`` runs, or one does that started at another time
    (the pid was reused, e.g. PID 1 of a restarted container). Another host's process is never
    taken for gone (it cannot be asked)."""
    if host != host_name():
        return False
    now = process_start(pid)
    if now is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False  # alive, and no start time to compare
    return start not in (None, "unknown") and now != start


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
