"""Read, write and remove tasks in the original layout, one task at a time, never half-way.

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
of the content) on every document: new shapes are inserted first, then ``meta``, then the ``tasks``
document, whose batch is the commit point; old shapes are deleted last. Readers take the shapes
whose batch equals the task's (no batch at all for data imported from the original system), so an
interrupted write leaves the previous version readable, and writing the same content again is a
no-op that leaves every document byte-identical.
"""
from __future__ import annotations

from obdb.errors import UserError
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from bson import ObjectId
from pymongo.database import Database

#: Field naming the write a document belongs to (see the module docstring).
BATCH = "obdb_batch"
#: The shape fields the reader converts, under the one-letter names the reader's aggregation gives
#: them (they are repeated in every shape, so short names keep the reply small). A missing field
#: stays missing.
SHAPE_FIELDS = {"i": "_id", "t": "shape_types", "p": "points", "c": "object_class", "l": "label_id",
                "o": "occluded", "n": "img_path", "w": "img_width", "h": "img_height",
                "r": "source", "a": "attributes", "d": "rotation"}  # r, a: the ground-truth rule (obdb.sources.truth)
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
    ``type`` (filled in). Returns False, writing nothing, when the stored task already had exactly
    this content.
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
    docs = [{"type": "annotation", **{k: v for k, v in s.items() if k != "_id"}, "task_name": name, BATCH: batch}
            for s in shapes]
    if docs:
        db.annotation_data.insert_many(docs, ordered=False)
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


class TaskNotFound(UserError, KeyError):
    """Requested task names that the database does not hold."""

    def __init__(self, missing: list[str], available: list[str]) -> None:
        shown = ", ".join(repr(n) for n in available[:20]) + (
            f" (+{len(available) - 20} more)" if len(available) > 20 else "")
        super().__init__(f"task(s) not found: {missing}; the database holds {len(available)} task(s): "
                         f"{shown or 'none'}")
        self.missing = missing

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class TaskInterrupted(UserError, RuntimeError):
    """A task whose last write stopped between its ``meta`` and ``tasks`` documents."""


def find_tasks(db: Database, names: list[str]) -> list[dict[str, Any]]:
    """The ``tasks`` documents of ``names`` (exact match, in the order asked; one query, and one
    more only when some names have no ``tasks`` document).

    A task with a ``meta`` document but no ``tasks`` document (hand-made imports) counts too.
    Raises :class:`TaskNotFound` listing every missing name."""
    wanted = list(dict.fromkeys(names))
    docs = {d["name"]: d for d in db.tasks.find({"name": {"$in": wanted}})}
    without = [n for n in wanted if n not in docs]
    for meta in db.meta.find({"task_name": {"$in": without}}, {"task_name": 1}) if without else ():
        docs[meta["task_name"]] = {"name": meta["task_name"]}
    missing = [n for n in wanted if n not in docs]
    if missing:
        available = sorted(set(db.tasks.distinct("name")) | set(db.meta.distinct("task_name")))
        raise TaskNotFound(missing, available)
    return [docs[n] for n in wanted]


def committed_meta(db: Database, doc: dict[str, Any]) -> dict[str, Any]:
    """The ``meta`` document of the task whose ``tasks`` document is ``doc`` (``{}`` if it has none).

    Raises :class:`TaskInterrupted` when the two come from different writes: the last write of the
    task stopped between them, and its shapes cannot be told apart."""
    name = doc["name"]
    meta = db.meta.find_one({"task_name": name}) or {}
    if meta and meta.get(BATCH) != doc.get(BATCH):
        raise TaskInterrupted(f"task {name!r}: its last write was interrupted (the meta and tasks documents "
                              f"come from different writes); write the task again (obdb sync or obdb db "
                              f"import) before training on it")
    return meta


#: Documents per reply: as many of a task's frame groups as fit in a 16 MiB reply (usually all of
#: them, so one round trip), instead of the driver's first batch of 101 and a getMore for the rest.
_BATCH_SIZE = 100_000


def frames_pipeline(name: str, batch: str | None) -> list[dict[str, Any]]:
    """Aggregation giving one document ``{_id: frame, s: [shape, ...]}`` per frame of one task's
    committed write, each shape with the :data:`SHAPE_FIELDS` it has (in no particular order).

    It uses only ``$match`` on the ``(task_name, obdb_batch, frame)`` index and ``$group``/``$push``,
    which every MongoDB server has. The server holds a task's shapes in memory while grouping; past
    about 200 000 shapes that is more than the 100 MiB a ``$group`` may use, which servers before
    6.0 only allow with ``allowDiskUse`` (see :func:`read_task_frames`)."""
    return [{"$match": {"task_name": name, BATCH: batch}},
            {"$group": {"_id": "$frame", "s": {"$push": {short: f"${long}" for short, long in SHAPE_FIELDS.items()}}}}]


@dataclass
class TaskFrames:
    """One task as committed: its ``tasks`` document, ``meta.frames``, and its shapes grouped by
    frame as :func:`frames_pipeline` returns them."""

    doc: dict[str, Any]
    frames: list[dict[str, Any]]
    groups: list[dict[str, Any]]

    @property
    def name(self) -> str:
        return self.doc["name"]


def read_task_frames(db: Database, doc: dict[str, Any]) -> TaskFrames:
    """Frames and shapes of one task (a ``tasks`` document from :func:`find_tasks`) in two queries,
    never one per frame: its ``meta`` document (with the interrupted-write check of
    :func:`committed_meta`), then the :func:`frames_pipeline` aggregation, which returns about ten
    times fewer, smaller documents than whole shapes."""
    name = doc["name"]
    meta = committed_meta(db, doc)
    groups = list(db.annotation_data.aggregate(frames_pipeline(name, doc.get(BATCH)), batchSize=_BATCH_SIZE,
                                               allowDiskUse=True))
    return TaskFrames(doc=doc, frames=list(meta.get("frames") or []), groups=groups)


def id_order(ident: Any) -> tuple[int, Any]:
    """Sort key of a shape's ``_id``: ObjectIds in insertion order, other id types after them."""
    return (0, ident.binary) if isinstance(ident, ObjectId) else (1, str(ident))
