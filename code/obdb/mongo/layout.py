"""Write and remove tasks in the original layout, one task at a time, never half-way.

Layout (database ``annotations``, as the original system and its users' mongoexport files have it):

* ``tasks``: ``{type: "task_data", name, labels: [{id, name, color, attributes}], created_date,
  updated_date, ...}``
* ``meta``: ``{task_name, frames: [{name, width, height}]}`` (list index = CVAT frame number)
* ``annotation_data``: one document per shape ``{type: "annotation", task_name, frame, img_path,
  shape_types, points, object_class, label_id, occluded, source, img_width, img_height}``

Every match is by *exact* task name: the original code deleted by a prefix regex, which removed
other tasks' annotations (``gt_val_A`` took ``gt_val_A_2`` with it).

Replacing a task must not leave old and new shapes mixed if the process dies half-way, and a
standalone ``mongod`` has no transactions. So each write carries a *batch* (``obdb_batch``, a hash
of the content) on all three documents: new shapes are inserted first, then ``meta``, then the
``tasks`` document, whose batch is the commit point; old shapes are deleted last. Readers take the
shapes whose batch equals the task's (no batch at all for data imported from the original
system), so an interrupted write leaves the previous version readable, and writing the same
content again is a no-op that leaves every document byte-identical.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from bson import ObjectId
from pymongo.database import Database

#: Field naming the write a document belongs to (see the module docstring).
BATCH = "obdb_batch"
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _check(task: dict[str, Any], frames: list[dict[str, Any]], shapes: list[dict[str, Any]]) -> str:
    name = task.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"task document needs a non-empty string 'name', got {name!r}")
    for i, frame in enumerate(frames):
        if not isinstance(frame, dict) or not isinstance(frame.get("name"), str):
            raise ValueError(f"task {name!r}: frame {i} needs a string 'name', got {frame!r}")
    for i, shape in enumerate(shapes):
        if not isinstance(shape, dict):
            raise ValueError(f"task {name!r}: shape {i} is not a document: {shape!r}")
        if shape.get("task_name", name) != name:
            raise ValueError(f"task {name!r}: shape {i} belongs to task {shape['task_name']!r}")
    return name


def content_batch(task: dict[str, Any], frames: list[dict[str, Any]], shapes: list[dict[str, Any]]) -> str:
    """Hash of what is written: the same content gives the same batch, so a repeated write is a no-op."""
    text = json.dumps([task, frames, shapes], sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def write_task(db: Database, task: dict[str, Any], frames: list[dict[str, Any]],
               shapes: list[dict[str, Any]]) -> bool:
    """Replace task ``task["name"]`` (its ``tasks``, ``meta`` and ``annotation_data`` documents).

    ``task`` holds the ``tasks`` document's fields (``type: "task_data"`` is filled in; missing
    ``created_date`` keeps the stored one or is now, missing ``updated_date`` is now); ``frames`` the
    ``meta.frames`` list; ``shapes`` the ``annotation_data`` documents without ``task_name`` /
    ``type`` (filled in). Returns False when the stored task already had exactly this content.
    """
    name = _check(task, frames, shapes)
    clean = {k: v for k, v in task.items() if k not in ("_id", BATCH)}
    batch = content_batch(clean, frames, [{k: v for k, v in s.items() if k != "_id"} for s in shapes])
    stored = db.tasks.find_one({"name": name}, {BATCH: 1, "created_date": 1})
    stored_meta = db.meta.find_one({"task_name": name}, {BATCH: 1})
    if stored and stored.get(BATCH) == batch and stored_meta and stored_meta.get(BATCH) == batch:
        return False

    now = datetime.now(timezone.utc)
    doc = {"type": "task_data", **clean, BATCH: batch}
    doc.setdefault("labels", [])
    doc.setdefault("created_date", (stored or {}).get("created_date") or now)
    doc.setdefault("updated_date", now)
    # leftovers of an interrupted write of this very content would otherwise be counted twice
    db.annotation_data.delete_many({"task_name": name, BATCH: batch})
    if shapes:
        db.annotation_data.insert_many(
            [{"type": "annotation", **{k: v for k, v in s.items() if k != "_id"}, "task_name": name,
              BATCH: batch} for s in shapes], ordered=False)
    db.meta.replace_one({"task_name": name}, {"task_name": name, "frames": frames, BATCH: batch}, upsert=True)
    db.tasks.replace_one({"name": name}, doc, upsert=True)  # the commit point
    db.annotation_data.delete_many({"task_name": name, BATCH: {"$ne": batch}})
    return True


def delete_task(db: Database, name: str) -> bool:
    """Remove one task (exact name) from all three collections; False if it was not stored.

    The ``tasks`` document goes first, so a reader never sees a task without its shapes."""
    found = db.tasks.delete_one({"name": name}).deleted_count
    found += db.meta.delete_one({"task_name": name}).deleted_count
    found += db.annotation_data.delete_many({"task_name": name}).deleted_count
    return bool(found)


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return _EPOCH
    if not isinstance(value, datetime):
        return _EPOCH
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)


def stored_tasks(db: Database) -> dict[str, datetime]:
    """Task name → ``updated_date`` (timezone-aware UTC; the epoch when a document has none, so it
    counts as older than anything a server reports)."""
    return {doc["name"]: _as_datetime(doc.get("updated_date"))
            for doc in db.tasks.find({}, {"name": 1, "updated_date": 1})
            if isinstance(doc.get("name"), str)}


class TaskNotFound(KeyError):
    """Requested task names that the database does not hold."""

    def __init__(self, missing: list[str], available: list[str]) -> None:
        shown = ", ".join(repr(n) for n in available[:20]) + (
            f" (+{len(available) - 20} more)" if len(available) > 20 else "")
        super().__init__(f"task(s) not found: {missing}; the database holds {len(available)} task(s): "
                         f"{shown or 'none'}")
        self.missing = missing

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class TaskInterrupted(RuntimeError):
    """A task whose last write stopped between its ``meta`` and ``tasks`` documents."""


@dataclass
class StoredTask:
    """One task as committed: its ``tasks`` document, ``meta.frames`` and shape documents."""

    doc: dict[str, Any]
    frames: list[dict[str, Any]]
    shapes: list[dict[str, Any]]

    @property
    def name(self) -> str:
        return self.doc["name"]


def find_tasks(db: Database, names: list[str]) -> list[dict[str, Any]]:
    """The ``tasks`` documents of ``names`` (exact match, in the order asked; one query).

    A task with a ``meta`` document but no ``tasks`` document (hand-made imports) counts too.
    Raises :class:`TaskNotFound` listing every missing name."""
    wanted = list(dict.fromkeys(names))
    docs = {d["name"]: d for d in db.tasks.find({"name": {"$in": wanted}})}
    for meta in db.meta.find({"task_name": {"$in": [n for n in wanted if n not in docs]}}, {"task_name": 1}):
        docs[meta["task_name"]] = {"name": meta["task_name"]}
    missing = [n for n in wanted if n not in docs]
    if missing:
        available = sorted(set(db.tasks.distinct("name")) | set(db.meta.distinct("task_name")))
        raise TaskNotFound(missing, available)
    return [docs[n] for n in wanted]


def shape_order(shape: dict[str, Any]) -> tuple[Any, ...]:
    """Sort key: frame, then ``_id`` (insertion order for ObjectIds; other id types after them)."""
    frame = shape.get("frame")
    ident = shape.get("_id")
    id_key = (0, ident.binary) if isinstance(ident, ObjectId) else (1, str(ident))
    return (frame if isinstance(frame, (int, float)) else -1, id_key)


def read_task(db: Database, doc: dict[str, Any]) -> StoredTask:
    """Frames and shapes of one task's committed write, in two queries (never one per frame).

    Shapes come sorted by frame, then ``_id``, so a frame's boxes keep the order they were
    annotated in. The sort runs here, not on the server: it is cheap in Python, and a server-side
    sort of a large task can hit the server's in-memory sort limit."""
    name = doc["name"]
    batch = doc.get(BATCH)
    meta = db.meta.find_one({"task_name": name}) or {}
    if meta and meta.get(BATCH) != batch:
        raise TaskInterrupted(f"task {name!r}: its last write was interrupted (the meta and tasks documents "
                              f"come from different writes); write the task again (obdb sync or obdb db "
                              f"import) before training on it")
    shapes = list(db.annotation_data.find({"task_name": name, BATCH: batch}))
    shapes.sort(key=shape_order)
    return StoredTask(doc=doc, frames=list(meta.get("frames") or []), shapes=shapes)
