"""A plain reference reader of the original layout, for tests and benchmarks only.

It fetches a task's whole shape documents (no server-side grouping) and groups them here, so the
production reader (:func:`obdb.mongo.layout.read_task_frames`, one ``$group`` aggregation) can be
checked against something simple enough to trust."""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from obdb.mongo.layout import BATCH, SHAPE_FIELDS, TaskFrames, committed_meta, id_order
from obdb.sources.contract import Task
from obdb.sources.mongo import _whole_frame, frames_to_task


@dataclass
class StoredTask:
    """One task as committed: its ``tasks`` document, ``meta.frames`` and whole shape documents."""

    doc: dict[str, Any]
    frames: list[dict[str, Any]]
    shapes: list[dict[str, Any]]

    @property
    def name(self) -> str:
        return self.doc["name"]


def shape_order(shape: dict[str, Any]) -> tuple[Any, ...]:
    """Sort key: frame, then ``_id`` (insertion order for ObjectIds; other id types after them)."""
    frame = shape.get("frame")
    return (frame if isinstance(frame, (int, float)) else -1, id_order(shape.get("_id")))


def read_task(db: Any, doc: dict[str, Any]) -> StoredTask:
    """Frames and whole shape documents of one task's committed write, sorted by frame, then ``_id``."""
    meta = committed_meta(db, doc)
    shapes = list(db.annotation_data.find({"task_name": doc["name"], BATCH: doc.get(BATCH)}))
    shapes.sort(key=shape_order)
    return StoredTask(doc=doc, frames=list(meta.get("frames") or []), shapes=shapes)


def task_to_parsed(stored: StoredTask, database: str, images_dir: Path = Path(".")) -> Task:
    """The source's conversion applied to whole documents grouped here."""
    groups: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for doc in stored.shapes:
        shape = {short: doc[long] for short, long in SHAPE_FIELDS.items() if long in doc}
        groups[_whole_frame(doc.get("frame"), stored.name, [shape])].append(shape)
    task = TaskFrames(stored.doc, stored.frames, [{"_id": f, "s": s} for f, s in groups.items()])
    return frames_to_task(task, database, images_dir)
