"""Reruns add no duplicates: a proposed shape equal to one already in the task is not added.

Two shapes are equal when label, frame and type match and every coordinate is within
``TOLERANCE_PX`` (CVAT stores floats and exports round to 2 decimals, so exact comparison would
fail after a round trip). Any existing shape counts, human or automatic, so a rerun after a
half-finished upload adds exactly what is missing, and a ground-truth upload interrupted between
chunks converges on the next run.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Iterable

AUTO = "auto"
TOLERANCE_PX = 0.5


def _key(shape: dict[str, Any]) -> tuple[int, int, str, int]:
    return int(shape["frame"]), int(shape["label_id"]), str(shape["type"]), len(shape.get("points") or [])


def same_shape(a: dict[str, Any], b: dict[str, Any], tolerance: float = TOLERANCE_PX) -> bool:
    if _key(a) != _key(b):
        return False
    return all(abs(float(p) - float(q)) <= tolerance for p, q in zip(a["points"], b["points"]))


class ShapeIndex:
    """Existing shapes grouped by (frame, label, type, point count) for fast equality lookups."""

    def __init__(self, shapes: Iterable[dict[str, Any]] = (), tolerance: float = TOLERANCE_PX) -> None:
        self.tolerance = tolerance
        self._groups: dict[tuple[int, int, str, int], list[dict[str, Any]]] = defaultdict(list)
        for shape in shapes:
            self.add(shape)

    def add(self, shape: dict[str, Any]) -> None:
        self._groups[_key(shape)].append(shape)

    def find(self, shape: dict[str, Any]) -> dict[str, Any] | None:
        for candidate in self._groups.get(_key(shape), ()):
            if same_shape(shape, candidate, self.tolerance):
                return candidate
        return None


def split_new(existing: Iterable[dict[str, Any]], proposed: Iterable[dict[str, Any]],
              tolerance: float = TOLERANCE_PX) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``(new, duplicates)``: proposed shapes not equal to an existing one (nor to an earlier
    proposed one, so a model's repeated box is added once), and those that are."""
    index = ShapeIndex(existing, tolerance)
    new, duplicates = [], []
    for shape in proposed:
        if index.find(shape) is not None:
            duplicates.append(shape)
        else:
            new.append(shape)
            index.add(shape)
    return new, duplicates
