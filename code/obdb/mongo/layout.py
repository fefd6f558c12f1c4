"""Write and remove tasks in the original layout, one task at a time, never half-way.

Layout (database ``annotations``, as the original system and its users' mongoexport files have it):

* ``tasks``: ``{type: "task_data", name, labels: [{id, name, color, attributes}], created_date,
  updated_date, ...}``
* ``meta``: ``{task_name, frames: [{name, width, height}]}`` (list index = CVAT frame number)
* ``annotation_data``: one document per shape ``{type: "annotation", task_name, frame, img_path,
  shape_types, points, object_class, label_id, occluded, source, img_width, img_height}``

and one collection of our own, a read view the original system never had:

* ``task_frames``: a task's shapes grouped by frame, as the reader's aggregation
  (:func:`obdb.sources.mongo.frames_pipeline`) would return them, split into parts of at most
  :data:`VIEW_PART_BYTES` of BSON: ``{task_name, obdb_batch, part, parts, shapes, groups: [{_id:
  frame, s: [shape with the SHAPE_FIELDS it has, under their one-letter names]}]}`` (``shapes``:
  how many shapes the part holds; a frame too large for one part is split over several groups of
  the same ``_id``).

Why the view: grouping a task's shapes by frame on the server costs it CPU for every shape on every
read (about 50 µs per shape on SecantusDB, which runs its pipeline stages in Python), while the
shapes only change when a task is written. So :func:`write_task` writes the grouped form once, and
the reader fetches a whole task in a handful of documents. Only tasks written here have a view:
data imported from the original system (no ``obdb_batch``) is always read with the aggregation,
since nothing tells us when someone changed its shapes. The reader also checks the view against a
count of the committed shapes and falls back to the aggregation when they differ (see
:func:`obdb.sources.mongo.read_task_frames`). ``obdb db export`` leaves the view out: it is derived
data, rebuilt by the next :func:`write_task` of the task.

Every match is by *exact* task name: the original code deleted by a prefix regex, which removed
other tasks' annotations (``gt_val_A`` took ``gt_val_A_2`` with it).

Replacing a task must not leave old and new shapes mixed if the process dies half-way, and a
standalone ``mongod`` has no transactions. So each write carries a *batch* (``obdb_batch``, a hash
of the content) on every document: new shapes are inserted first, then the new view parts, then
``meta``, then the ``tasks`` document, whose batch is the commit point; old shapes and old view
parts are deleted last. Readers take the shapes and view parts whose batch equals the task's (no
batch at all for data imported from the original system), so an interrupted write leaves the
previous version readable (through its view too), and writing the same content again is a no-op
that leaves every document byte-identical (it only writes the view if the committed write has
none, as after an older obdb, a dropped ``task_frames`` or an import).
"""
from __future__ import annotations

from obdb.errors import UserError
import hashlib
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import bson
from bson import ObjectId
from pymongo.database import Database

#: Field naming the write a document belongs to (see the module docstring).
BATCH = "obdb_batch"
#: Collection of the per-task read view (see the module docstring).
VIEW = "task_frames"
#: Most BSON bytes of frame groups in one view part (a stored document may hold 16 MiB).
VIEW_PART_BYTES = 4 * 1024 * 1024
#: The shape fields the reader converts, under the one-letter names the view and the reader's
#: aggregation give them (they are repeated in every shape). A missing field stays missing.
SHAPE_FIELDS = {"i": "_id", "t": "shape_types", "p": "points", "c": "object_class", "l": "label_id",
                "o": "occluded", "n": "img_path", "w": "img_width", "h": "img_height",
                "r": "source", "a": "attributes"}  # r, a: the ground-truth rule (obdb.sources.truth)
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
    """Replace task ``task["name"]`` (its ``tasks``, ``meta`` and ``annotation_data`` documents, and
    its ``task_frames`` view).

    ``task`` holds the ``tasks`` document's fields (``type: "task_data"`` is filled in; missing
    ``created_date`` keeps the stored one or is now, missing ``updated_date`` is now); ``frames`` the
    ``meta.frames`` list; ``shapes`` the ``annotation_data`` documents without ``task_name`` /
    ``type`` (filled in). Returns False when the stored task already had exactly this content; then
    only a missing or incomplete view is written (from the committed shapes, which stay as they are).
    """
    name = _check(task, frames, shapes)
    clean = {k: v for k, v in task.items() if k not in ("_id", BATCH)}
    batch = content_batch(clean, frames, [{k: v for k, v in s.items() if k != "_id"} for s in shapes])
    stored = db.tasks.find_one({"name": name}, {BATCH: 1, "created_date": 1})
    stored_meta = db.meta.find_one({"task_name": name}, {BATCH: 1})
    if stored and stored.get(BATCH) == batch and stored_meta and stored_meta.get(BATCH) == batch:
        query = {"task_name": name, BATCH: batch}
        parts = list(db[VIEW].find(query, {"part": 1, "parts": 1, "shapes": 1}))
        if view_shapes(parts) != db.annotation_data.count_documents(query):
            _write_view(db, name, batch, list(db.annotation_data.find(query)))
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
        db.annotation_data.insert_many(docs, ordered=False)  # gives each of ``docs`` its ``_id``
    _write_view(db, name, batch, docs)
    db.meta.replace_one({"task_name": name}, {"task_name": name, "frames": frames, BATCH: batch}, upsert=True)
    db.tasks.replace_one({"name": name}, doc, upsert=True)  # the commit point
    db.annotation_data.delete_many({"task_name": name, BATCH: {"$ne": batch}})
    db[VIEW].delete_many({"task_name": name, BATCH: {"$ne": batch}})
    return True


def frame_groups(shapes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``shapes`` (whole ``annotation_data`` documents) grouped by ``frame`` as the reader's
    aggregation groups them: one ``{_id: frame, s: [...]}`` per distinct value (numbers by value,
    other types apart; a missing frame counts as null), each shape with the :data:`SHAPE_FIELDS` it
    has under their one-letter names, in the order given."""
    groups: dict[Any, dict[str, Any]] = {}
    for shape in shapes:
        frame = shape.get("frame")
        key = _group_key(frame)
        group = groups.get(key)
        if group is None:
            group = groups[key] = {"_id": frame, "s": []}
        group["s"].append({short: shape[long] for short, long in SHAPE_FIELDS.items() if long in shape})
    return list(groups.values())


def _group_key(frame: Any) -> Any:
    """What ``$group`` compares frames by: numbers by value (1 and 1.0 are one frame), a bool or
    any other type never equal to a number."""
    if isinstance(frame, (int, float)) and not isinstance(frame, bool):
        return ("nan",) if frame != frame else frame
    try:
        hash(frame)
        return (type(frame).__name__, frame)
    except TypeError:  # a list or document: compare by its BSON form
        return ("bson", bson.encode({"v": frame}))


def view_documents(name: str, batch: str, shapes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ``task_frames`` parts of one task's write: its :func:`frame_groups` in documents of at
    most :data:`VIEW_PART_BYTES` of groups each (always at least one part, so an empty task has a
    complete view too)."""
    limit = VIEW_PART_BYTES
    parts: list[dict[str, Any]] = []
    groups: list[dict[str, Any]] = []
    size = count = 0

    def flush() -> None:
        nonlocal groups, size, count
        parts.append({"task_name": name, BATCH: batch, "part": len(parts), "shapes": count, "groups": groups})
        groups, size, count = [], 0, 0

    for group in frame_groups(shapes):
        for piece, nbytes in _pieces(group, limit):
            if groups and size + nbytes > limit:
                flush()
            groups.append(piece)
            size += nbytes
            count += len(piece["s"])
    if groups or not parts:
        flush()
    for part in parts:
        part["parts"] = len(parts)
    return parts


def _pieces(group: dict[str, Any], limit: int) -> list[tuple[dict[str, Any], int]]:
    """``group`` with its BSON size, or, when larger than ``limit``, split into groups of the same
    frame that each fit (the reader joins a frame's groups)."""
    nbytes = len(bson.encode(group))
    if nbytes <= limit or len(group["s"]) < 2:
        return [(group, nbytes)]
    pieces: list[tuple[dict[str, Any], int]] = []
    shapes: list[dict[str, Any]] = []
    base = len(bson.encode({"_id": group["_id"], "s": []}))
    size = base
    for shape in group["s"]:
        shape_bytes = len(bson.encode(shape)) + 8  # array index key and type byte
        if shapes and size + shape_bytes > limit:
            pieces.append(({"_id": group["_id"], "s": shapes}, size))
            shapes, size = [], base
        shapes.append(shape)
        size += shape_bytes
    pieces.append(({"_id": group["_id"], "s": shapes}, size))
    return pieces


def view_shapes(parts: list[dict[str, Any]]) -> int | None:
    """How many shapes a task's view parts (one batch, any order) hold, or None unless they are
    exactly parts ``0 .. parts-1`` of one view."""
    if not parts:
        return None
    total = parts[0].get("parts")
    numbers = sorted(p.get("part") for p in parts if isinstance(p.get("part"), int))
    if not isinstance(total, int) or numbers != list(range(total)) or any(p.get("parts") != total for p in parts):
        return None
    counts = [p.get("shapes") for p in parts]
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in counts):
        return None
    return sum(counts)


def _write_view(db: Database, name: str, batch: str, shapes: list[dict[str, Any]]) -> None:
    # leftovers of an interrupted write of this very content would make the view look incomplete
    db[VIEW].delete_many({"task_name": name, BATCH: batch})
    db[VIEW].insert_many(view_documents(name, batch, shapes), ordered=True)


def delete_task(db: Database, name: str) -> bool:
    """Remove one task (exact name) from all three collections and its view; False if it was not
    stored.

    The ``tasks`` document goes first, so a reader never sees a task without its shapes."""
    found = db.tasks.delete_one({"name": name}).deleted_count
    found += db.meta.delete_one({"task_name": name}).deleted_count
    found += db.annotation_data.delete_many({"task_name": name}).deleted_count
    db[VIEW].delete_many({"task_name": name})
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


def shape_order(shape: dict[str, Any]) -> tuple[Any, ...]:
    """Sort key: frame, then ``_id`` (insertion order for ObjectIds; other id types after them)."""
    frame = shape.get("frame")
    ident = shape.get("_id")
    id_key = (0, ident.binary) if isinstance(ident, ObjectId) else (1, str(ident))
    return (frame if isinstance(frame, (int, float)) else -1, id_key)


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


def read_task(db: Database, doc: dict[str, Any]) -> StoredTask:
    """Frames and shapes of one task's committed write, in two queries (never one per frame).

    Shapes come sorted by frame, then ``_id``, so a frame's boxes keep the order they were
    annotated in. The sort runs here, not on the server: it is cheap in Python, and a server-side
    sort of a large task can hit the server's in-memory sort limit."""
    name = doc["name"]
    batch = doc.get(BATCH)
    meta = committed_meta(db, doc)
    shapes = list(db.annotation_data.find({"task_name": name, BATCH: batch}))
    shapes.sort(key=shape_order)
    return StoredTask(doc=doc, frames=list(meta.get("frames") or []), shapes=shapes)
