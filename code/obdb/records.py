"""Shared data contracts: every source produces these, everything downstream consumes them.

Sources know nothing of torch, so the contracts hold plain numpy arrays and strings. A record
does not say where it came from (local files, MongoDB, CVAT); only ``task`` and ``meta`` keep
that provenance for reports.
"""
from __future__ import annotations

import hashlib
import json
import unicodedata
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from .errors import UserError

BACKGROUND = "Background"


class LabelError(UserError, ValueError):
    """A label name that cannot be used as a class (control characters, empty, the reserved
    ``Background``); the message names the label and what to do."""


def normalise_label(name: str, where: str = "") -> str:
    """The one rule for label names, applied wherever labels enter (settings class maps and
    ``label_map``, every source):

    * Unicode NFC normalisation, so ``é`` typed as one code point or as ``e`` + accent is one class;
    * invisible format characters (category ``Cf``: zero-width space/joiner, BOM, direction marks)
      are removed, so ``Tree`` and ``Tree`` + U+200B are one class, not two that look alike;
    * leading and trailing spaces are removed;
    * control characters (category ``Cc``: newline, tab, NUL, escape...) are refused with a
      :class:`LabelError`: a label is one line of text in CVAT, reports and file names, and
      silently changing one would merge or split classes behind the user's back;
    * a name that is empty after this is refused.

    ``where`` (a file, task or settings key) goes into the message.
    """
    text = unicodedata.normalize("NFC", str(name))
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf")
    place = f"{where}: " if where else ""
    bad = [ch for ch in text if unicodedata.category(ch) == "Cc"]  # before stripping: "Tree\n" too
    text = text.strip()
    if bad:
        codes = ", ".join(sorted({f"U+{ord(ch):04X}" for ch in bad}))
        raise LabelError(f"{place}label {name!r} contains control character(s) {codes}; labels must be one line "
                         f"of visible text: rename it (in the data, or with data.label_map)")
    if not text:
        raise LabelError(f"{place}label {name!r} is empty (or only invisible characters)")
    return text


def map_label(raw: str, label_map: Mapping[str, str | None], where: str = "") -> str | None:
    """A data label after ``label_map`` and :func:`normalise_label`; None when the map drops it.

    The map is looked up with the label as written first (so ``"Tree\n": "Tree"`` can repair a
    label with a control character), then with its normalised form."""
    if raw in label_map:
        target = label_map[raw]
    else:
        name = normalise_label(raw, where)
        target = label_map.get(name, name)
    return normalise_label(target, where) if target else None


def check_class_names(names: Iterable[str], where: str) -> list[str]:
    """Normalised class names of a class map; ``Background`` is allowed only first (the original
    settings listed it at index 0), anywhere else it is refused: the name is reserved."""
    cleaned = [normalise_label(n, where) for n in names]
    for position, name in enumerate(cleaned):
        if name == BACKGROUND and position > 0:
            place = f"{where}: " if where else ""
            raise LabelError(f"{place}{BACKGROUND!r} is listed at position {position + 1}; the name is reserved "
                             f"for the background class (index 0): list it first or not at all")
    return cleaned


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

    def __post_init__(self) -> None:
        # checked as the data arrives, before anything is written: the name is the model's index 0
        hits = [r for r in self.records if BACKGROUND in r.labels]
        if hits:
            raise LabelError(f"{len(hits)} image(s) have boxes labelled {BACKGROUND!r} (e.g. {hits[0].image_id}); "
                             f"the name is reserved for the background class (index 0): rename the label with "
                             f'data.label_map, e.g. {{"{BACKGROUND}": "background_object"}}, or drop it with null')

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
            raise LabelError(f"class map has duplicate names: {list(self.names)}")
        if BACKGROUND in self.names:
            raise LabelError(f"a label is literally named {BACKGROUND!r}; the name is reserved for the background "
                             f"class (index 0): rename it with data.label_map, e.g. "
                             f'{{"{BACKGROUND}": "background_object"}}')

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
