"""Shared data contracts: every source produces these, everything downstream consumes them.

Sources know nothing of torch, so the contracts hold plain numpy arrays and strings. A record
does not say where it came from (local files, MongoDB, CVAT); only ``task`` and ``meta`` keep
that provenance for reports.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

BACKGROUND = "Background"


@dataclass
class ImageRecord:
    """One image with its boxes.

    ``boxes`` is an (N, 4) float32 array of ``x1, y1, x2, y2`` in pixels of the original image;
    ``labels`` holds the N label names (not indices, so a class map can be applied later).
    ``group`` names the video / session / source image the frame belongs to: frames of one
    group must never straddle train and validation.
    """

    image_id: str
    path: Path
    width: int
    height: int
    boxes: np.ndarray
    labels: list[str]
    group: str = ""
    task: str = ""
    frame: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self.boxes = np.asarray(self.boxes, dtype=np.float32).reshape(-1, 4)
        self.labels = list(self.labels)
        if len(self.labels) != len(self.boxes):
            raise ValueError(f"{self.image_id}: {len(self.boxes)} boxes but {len(self.labels)} labels")
        if not self.group:
            self.group = self.task or self.image_id


@dataclass
class SkippedImage:
    """An image a source could not use, with the reason (shown in logs and reports) and how many
    boxes its annotation held (counted in the lint report, so lost boxes are not invisible)."""

    path: str
    reason: str
    boxes: int = 0


@dataclass
class AnnotationSet:
    """What a source returns: usable records plus an account of what was left out."""

    records: list[ImageRecord]
    skipped: list[SkippedImage] = field(default_factory=list)
    dropped_boxes: int = 0

    def label_names(self) -> list[str]:
        """Label names in order of first appearance (stable across runs for the same data)."""
        seen: dict[str, None] = {}
        for record in self.records:
            for label in record.labels:
                seen.setdefault(label, None)
        return list(seen)

    def by_id(self) -> dict[str, ImageRecord]:
        return {r.image_id: r for r in self.records}


@dataclass(frozen=True)
class ClassMap:
    """Ordered object class names. Index 0 is reserved for the background in torchvision heads,
    so ``names[i]`` has model label ``i + 1``. Saved next to every model so indices never drift."""

    names: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("class map is empty")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"class map has duplicate names: {list(self.names)}")
        if BACKGROUND in self.names:
            raise ValueError(f"class map must not list {BACKGROUND!r}; index 0 is reserved for it")

    @classmethod
    def from_names(cls, names: Iterable[str]) -> "ClassMap":
        """Build from a list that may start with "Background" (the original settings did)."""
        cleaned = [n for n in names if n != BACKGROUND]
        return cls(tuple(cleaned))

    @property
    def num_classes(self) -> int:
        """Number of model outputs, background included."""
        return len(self.names) + 1

    def index(self, name: str) -> int:
        try:
            return self.names.index(name) + 1
        except ValueError:
            raise KeyError(f"label {name!r} is not in the class map {list(self.names)}") from None

    def name(self, index: int) -> str:
        if index == 0:
            return BACKGROUND
        return self.names[index - 1]

    def to_json(self) -> dict[str, Any]:
        return {"background_index": 0, "names": list(self.names),
                "index": {n: i + 1 for i, n in enumerate(self.names)}}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ClassMap":
        return cls(tuple(data["names"]))


def drop_unknown_labels(records: Iterable[ImageRecord], class_map: ClassMap
                        ) -> tuple[list[ImageRecord], dict[str, int]]:
    """The records without boxes whose label is not in ``class_map`` (a changed record is a copy;
    the input is not changed), and the count of dropped boxes per label.

    A model can only learn or be scored on the classes of its map, and keeping the map fixed
    (rather than growing it with the data) is what keeps label indices stable across runs."""
    dropped: dict[str, int] = {}
    out = []
    for record in records:
        keep = [i for i, label in enumerate(record.labels) if label in class_map.names]
        if len(keep) != len(record.labels):
            for label in record.labels:
                if label not in class_map.names:
                    dropped[label] = dropped.get(label, 0) + 1
            record = replace(record, boxes=record.boxes[keep], labels=[record.labels[i] for i in keep])
        out.append(record)
    return out, dropped


def stable_hash(obj: Any) -> str:
    """Short content hash of a JSON-able object (settings, split manifests)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def records_by_split(records: Sequence[ImageRecord], assignment: dict[str, str], split: str) -> list[ImageRecord]:
    """Records whose id the split manifest assigns to ``split`` (in input order)."""
    return [r for r in records if assignment.get(r.image_id) == split]
