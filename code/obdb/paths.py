"""Names from data and settings that become file paths: kept inside their root.

Image names come from annotation files, MongoDB documents and CVAT servers; variant, experiment,
task and study names come from settings. Any of them may hold ``..``, an absolute path or a
symlink out of its folder (by accident or on purpose). Two rules, used everywhere a name turns
into a path:

* :func:`resolve_inside` resolves an image name under its data root and refuses anything that
  ends up outside it (``..``, absolute paths, symlinks pointing elsewhere);
* :func:`safe_component` checks a name that becomes one path component (a variant's folder, a
  study's file) and refuses separators, ``..`` and control characters.
"""
from __future__ import annotations

import os
import unicodedata
from pathlib import Path

from obdb.errors import UserError


class PathOutsideRoot(UserError):
    """A name resolves to a file outside the folder it must stay in."""


class UnsafeName(UserError):
    """A name cannot be used as a file or folder name."""


def resolve_inside(root: Path | str, name: str | os.PathLike[str]) -> Path:
    """``root / name`` with symlinks resolved, or :class:`PathOutsideRoot` if that leaves ``root``.

    Backslashes (Windows-made exports) count as separators. An absolute ``name`` is refused even
    when it happens to point inside ``root``: annotation files name images relative to their
    share, so an absolute path is never what a user meant.
    """
    text = os.fspath(name).replace("\\", "/")
    if "\x00" in text:
        raise PathOutsideRoot(f"image name {text!r} holds a NUL character")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        raise PathOutsideRoot(f"image name {text!r} is an absolute path; names must be relative to {root}")
    base = Path(root).resolve()
    target = (base / text).resolve()
    if target != base and base not in target.parents:
        raise PathOutsideRoot(f"image name {text!r} resolves to {target}, outside the data root {base}")
    return target


def is_inside(root: Path | str, path: Path | str) -> bool:
    """Whether ``path`` (symlinks resolved) lies inside ``root``."""
    base = Path(root).resolve()
    target = Path(path).resolve()
    return target == base or base in target.parents


def safe_component(name: str, what: str = "name") -> str:
    """Return ``name`` if it can be one path component, else raise :class:`UnsafeName`.

    ``what`` says which setting the name came from (``"variant"``, ``"experiment"``...), so the
    message points at the key to fix.
    """
    problem = None
    if not name or not name.strip():
        problem = "is empty"
    elif name in (".", ".."):
        problem = "is a relative folder reference"
    elif "/" in name or "\\" in name:
        problem = "contains a path separator"
    elif any(unicodedata.category(ch) in ("Cc", "Cf") for ch in name):
        problem = "contains a control or invisible character"
    elif len(name.encode()) > 200:
        problem = "is longer than 200 bytes"
    if problem:
        raise UnsafeName(f"{what} {name!r} {problem}; it becomes a file name, so use letters, digits, '_', '-', '.'")
    return name
