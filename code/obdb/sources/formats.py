"""Format-neutral result of reading one annotation file, and format auto-detection.

Parsers (CVAT XML, COCO JSON, Pascal VOC XML) only turn a file into a :class:`ParsedFile`: raw
boxes in the annotation's own pixel coordinates, exactly as written. Everything that needs the
image itself (finding it, checking it, clipping boxes to its real size) happens once, in
``local.py``, so the rules are identical whatever tool exported the annotations.
"""
from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from obdb.sources.base import SourceError


@dataclass
class ParsedBox:
    """One axis-aligned box as annotated (``x1 <= x2`` not guaranteed; clipping sorts it out)."""

    x1: float
    y1: float
    x2: float
    y2: float
    label: str
    occluded: bool = False
    difficult: bool = False


@dataclass
class ParsedImage:
    """One image entry of an annotation file. ``width``/``height`` are what the file claims
    (``None`` if it does not say); the real size is read from the image later."""

    name: str
    frame: int | None
    width: int | None
    height: int | None
    boxes: list[ParsedBox] = field(default_factory=list)


@dataclass
class ParsedFile:
    """One annotation file = one task. ``ignored`` counts shapes that are not boxes and cannot be
    turned into one (polylines, points, masks...) so the loader can say what it left out."""

    path: Path
    format: str
    task: str
    images: list[ParsedImage]
    ignored: Counter[str] = field(default_factory=Counter)
    labels: list[str] = field(default_factory=list)


def bbox_of_points(points: Iterable[tuple[float, float]]) -> tuple[float, float, float, float]:
    """Bounding box of a polygon; raises ValueError on an empty point list."""
    pts = list(points)
    if not pts:
        raise ValueError("no points")
    xs = [p[0] for p in pts]
    ys = [p[1] for p in pts]
    return min(xs), min(ys), max(xs), max(ys)


def rotated_rect_bbox(x1: float, y1: float, x2: float, y2: float,
                      degrees: float) -> tuple[float, float, float, float]:
    """Axis-aligned bbox of a rectangle rotated by ``degrees`` about its centre (CVAT ``rotation``)."""
    if not degrees:
        return x1, y1, x2, y2
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    hw, hh = abs(x2 - x1) / 2, abs(y2 - y1) / 2
    rad = math.radians(degrees)
    c, s = abs(math.cos(rad)), abs(math.sin(rad))
    ex, ey = hw * c + hh * s, hw * s + hh * c
    return cx - ex, cy - ey, cx + ex, cy + ey


def to_float(value: Any, what: str, path: Path, where: str) -> float:
    """Parse a coordinate, turning garbage into a SourceError that says file and element."""
    try:
        return float(value)
    except (TypeError, ValueError):
        raise SourceError(f"{path}: {where}: {what} is not a number: {value!r}") from None


def to_int_or_none(value: Any) -> int | None:
    """Optional integer attribute (image sizes / ids): absent or garbage -> None (not fatal,
    the real size comes from the image file anyway)."""
    if value is None:
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def parse_file(path: Path) -> ParsedFile:
    """Read one annotation file, detecting its format from its content (not only its suffix,
    since tools are careless about extensions).

    Raises SourceError naming the file (and line for syntax errors) when it is malformed or of a
    format we do not know.
    """
    from obdb.sources.coco import parse_coco
    from obdb.sources.cvat_xml import parse_cvat
    from obdb.sources.voc import parse_voc

    try:
        raw = path.read_bytes()
    except OSError as err:
        raise SourceError(f"{path}: cannot read annotation file: {err}") from None
    head = raw.lstrip()[:1]
    if raw.startswith(b"\xef\xbb\xbf"):  # UTF-8 BOM written by some Windows tools
        head = raw[3:].lstrip()[:1]
    if not head:
        raise SourceError(f"{path}: annotation file is empty")
    if head in (b"{", b"["):
        try:
            data = json.loads(raw.decode("utf-8-sig"))
        except UnicodeDecodeError as err:
            raise SourceError(f"{path}: JSON is not valid UTF-8: {err}") from None
        except json.JSONDecodeError as err:
            raise SourceError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: "
                              f"{err.msg}") from None
        if isinstance(data, dict) and "images" in data and "annotations" in data:
            return parse_coco(path, data)
        raise SourceError(f"{path}: unknown annotation format (JSON but not COCO: expected "
                          f"top-level 'images' and 'annotations')")
    if head == b"<":
        try:
            root = ET.fromstring(raw)
        except ET.ParseError as err:
            line, col = err.position
            reason = str(err).rsplit(": line", 1)[0]  # ParseError repeats the position; say it once
            raise SourceError(f"{path}: malformed XML at line {line}, column {col + 1}: {reason}") from None
        if root.tag == "annotations":
            return parse_cvat(path, root)
        if root.tag == "annotation":
            return parse_voc(path, root)
        raise SourceError(f"{path}: unknown annotation format (XML root <{root.tag}>; expected "
                          f"CVAT <annotations> or Pascal VOC <annotation>)")
    raise SourceError(f"{path}: unknown annotation format (neither XML nor JSON)")
