"""The one ``shape → box`` rule: which box a drawn shape trains as, for every source and ``obdb sync``.

Shapes come in CVAT's JSON form (see :class:`obdb.sources.contract.Shape`):

* ``rectangle``: its box; a ``rotation`` gives the enclosing axis-aligned box;
* ``ellipse`` (``[cx, cy, cx + rx, cy - ry]``, optional rotation): the enclosing box;
* ``mask`` (RLE values, then ``left, top, right, bottom`` inclusive): its bounding box;
* ``polygon`` and ``points``: their bounding box, or skipped with ``data.polygons: "skip"``;
* anything else (``polyline``, ``cuboid``, ``skeleton``, COCO crowd regions...): skipped.

Plain geometry at the bottom of the package (no I/O, no other obdb module), so the sources and the
MongoDB writer share it without importing each other.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

Box = tuple[float, float, float, float]

#: Kinds that always become their (enclosing) box.
BOX_KINDS = ("rectangle", "ellipse", "mask")
#: Kinds that outline an object by points: their bounding box, unless ``polygons`` is ``"skip"``.
OUTLINE_KINDS = ("polygon", "points")


def shape_box(kind: str, points: Sequence[float], rotation: float = 0.0, polygons: str = "bbox") -> Box | None:
    """The axis-aligned box ``x1, y1, x2, y2`` a shape trains as, or None when its kind is skipped
    (see the module docstring). Raises ValueError for a point list of the wrong length."""
    if kind in OUTLINE_KINDS:
        if polygons == "skip":
            return None
        if len(points) < 2 or len(points) % 2:
            raise ValueError(f"a {kind} needs x, y pairs, got {len(points)} values")
        xs, ys = points[0::2], points[1::2]
        return min(xs), min(ys), max(xs), max(ys)
    if kind == "mask":
        if len(points) < 4:
            raise ValueError(f"a mask needs its left, top, right, bottom, got {len(points)} values")
        left, top, right, bottom = points[-4:]
        return left, top, right + 1, bottom + 1  # CVAT's right/bottom are the last pixels inside
    if kind not in ("rectangle", "ellipse"):
        return None
    if len(points) != 4:
        raise ValueError(f"a {kind} needs 4 values, got {len(points)}")
    rad = math.radians(rotation or 0.0)
    if kind == "ellipse":
        cx, cy, rx, ry = points[0], points[1], abs(points[2] - points[0]), abs(points[1] - points[3])
        ex, ey = math.hypot(rx * math.cos(rad), ry * math.sin(rad)), math.hypot(rx * math.sin(rad), ry * math.cos(rad))
        return cx - ex, cy - ey, cx + ex, cy + ey
    x1, y1, x2, y2 = points
    if not rotation:
        return x1, y1, x2, y2
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, abs(x2 - x1) / 2, abs(y2 - y1) / 2
    c, s = abs(math.cos(rad)), abs(math.sin(rad))
    ex, ey = hw * c + hh * s, hw * s + hh * c
    return cx - ex, cy - ey, cx + ex, cy + ey
