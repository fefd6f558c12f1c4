"""The source contract: what a source hands the driver.

A *source* (local export files, MongoDB, CVAT) is small, as a cvat-sdk auto-annotation function
is: it only turns its store into parsed :class:`Task` objects (frames with their shapes exactly as
drawn, plus where each frame's image lives). Everything that decides what becomes training data
happens once, in :mod:`obdb.sources.driver`, so every source gives the same records for the same
task. Shapes keep CVAT's JSON form, the richest of the three stores, so nothing is lost on the way
(``annotate`` re-uploads parsed XML shapes as they are).

Which shape kinds become which boxes is :func:`obdb.shapes.shape_box`'s, the same for every source
and for ``obdb sync``.

Sources know nothing of torch and import nothing from the other sources.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from obdb.errors import UserError


class SourceError(UserError, ValueError):
    """Annotations cannot be read as asked: malformed or unknown file, missing task, bad input.

    A ``ValueError`` so callers that validate user input can catch both alike. The message always
    names the offending file, task or document (and, for XML/JSON syntax errors, the line)."""


@dataclass(slots=True)
class Shape:
    """One shape as drawn, in CVAT's JSON form.

    ``points``: rectangles ``x1, y1, x2, y2``; polygons, polylines and points ``x1, y1, x2, ...``;
    ellipses ``cx, cy, cx + rx, cy - ry``; masks RLE then ``left, top, right, bottom``. ``source``
    and ``attributes`` feed the ground-truth rule (:mod:`obdb.sources.truth`); ``ref`` names the
    shape in error messages (e.g. a MongoDB ``_id``)."""

    kind: str
    points: list[float]
    label: str
    rotation: float = 0.0
    occluded: bool = False
    source: str | None = None
    attributes: dict[str, str] = field(default_factory=dict)
    z_order: int = 0
    group: int = 0
    difficult: bool = False
    ref: str = ""


@dataclass
class Frame:
    """One image of a task. ``name`` is the image name as annotated (the record id is
    ``<task>/<name>``; it must stay inside the task's root); ``width``/``height`` are what the
    annotation claims (the real size is read from the file). ``file`` is where the image is under
    the root when that is not ``name`` (the CVAT cache stores frames by number)."""

    name: str
    frame: int | None
    width: int | None
    height: int | None
    shapes: list[Shape] = field(default_factory=list)
    file: str | None = None


@dataclass
class Task:
    """One task (an annotation file, a MongoDB or CVAT task). ``root`` is the folder every image of
    the task must resolve inside; ``origin`` names the task's file or document for messages and
    ``meta["source_file"]``; ``format`` is ``cvat``, ``coco``, ``voc``, ``mongo`` or ``cvat-api``."""

    name: str
    frames: list[Frame]
    root: Path
    origin: str
    format: str
    labels: list[str] = field(default_factory=list)


@runtime_checkable
class Source(Protocol):
    """Anything that yields parsed tasks; :func:`obdb.sources.driver.load` does the rest."""

    def read_tasks(self, progress: bool = True) -> list[Task]:
        ...


def to_float(value: Any, what: str, origin: Any, where: str) -> float:
    """Parse a coordinate, turning garbage into a SourceError that says file and element."""
    try:
        return float(value)
    except (TypeError, ValueError) as err:
        raise SourceError(f"{origin}: {where}: {what} is not a number: {value!r}") from err


def to_int_or_none(value: Any) -> int | None:
    """Optional integer (image sizes, ids): absent or garbage is None, not fatal (the real size
    comes from the image file anyway)."""
    if value is None:
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None
