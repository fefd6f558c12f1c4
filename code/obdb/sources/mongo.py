"""MongoDB source: tasks in the original system's layout (see :mod:`obdb.mongo.layout`) as parsed
tasks (:mod:`obdb.sources.contract`); :mod:`obdb.sources.driver` turns them into records exactly as it
does the same annotations exported as files.

Each task is read in a handful of queries (its ``meta`` document, then its shapes grouped by frame),
never one query per frame: that loop is what made the original loader take minutes per task. The
grouped shapes come from the task's read view (``task_frames``, written by obdb's own writer, used
while it is complete and holds as many shapes as the task has) or else from an aggregation
(:func:`frames_pipeline`) that groups them on the server; both give the same parse.

This module only converts documents: frames are the ``meta`` frames in frame order (the list
index is the frame number), named by the ``img_path`` of their first shape where they have shapes;
shapes on a frame ``meta`` does not list still make a frame. Within a frame, shapes keep the order
they were annotated in (``_id`` order, as :func:`obdb.mongo.layout.shape_order` sorts). Shapes carry
their ``source`` and ``attributes`` for the ground-truth rule, and a ``rotation`` where a document
has one (the original layout has none: ``obdb sync`` stores rotated rectangles as their enclosing box).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo.database import Database
from pymongo.errors import PyMongoError
from tqdm.auto import tqdm

from obdb.mongo.connection import MongoConfigError, MongoUnavailable, connect, ensure_indexes
from obdb.mongo.layout import (BATCH, SHAPE_FIELDS, VIEW, TaskInterrupted, TaskNotFound, committed_meta, find_tasks,
                               view_shapes)
from obdb.settings.schema import MongoSettings
from obdb.shapes import BOX_KINDS, OUTLINE_KINDS
from obdb.sources.contract import Frame, Shape, SourceError, Task
from obdb.sources.truth import attribute_values

logger = logging.getLogger(__name__)

#: The one-letter names of the fields the conversion reads (:data:`obdb.mongo.layout.SHAPE_FIELDS`,
#: the names the view and the aggregation give them).
_ID, _KIND, _POINTS, _CLASS, _LABEL_ID, _OCCLUDED, _IMAGE, _WIDTH, _HEIGHT, _SOURCE, _ATTRIBUTES, _ROTATION = SHAPE_FIELDS
Doc = dict[str, Any]


#: Documents per reply: as many of a task's frame groups (or view parts) as fit in a 16 MiB reply
#: (usually all of them, so one round trip), instead of the driver's first batch of 101 and a
#: getMore for the rest.
_BATCH_SIZE = 100_000


def frames_pipeline(name: str, batch: str | None) -> list[dict[str, Any]]:
    """Aggregation giving one document ``{_id: frame, s: [shape, ...]}`` per frame of one task's
    committed write (each shape with the :data:`SHAPE_FIELDS` it has, in no particular order): the
    groups :func:`obdb.mongo.layout.frame_groups` writes into the view.

    The server holds a task's shapes in memory while grouping; past about 200 000 shapes that is
    more than the 100 MiB a ``$group`` may use, which servers before 6.0 only allow with
    ``allowDiskUse`` (see :func:`read_task_frames`)."""
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


def read_task_frames(db: Database, doc: dict[str, Any], *, view: bool = True) -> TaskFrames:
    """Frames and shapes of one task (a ``tasks`` document from :func:`~obdb.mongo.layout.find_tasks`)
    with the interrupted-write check of :func:`~obdb.mongo.layout.committed_meta`: the ``meta`` document,
    then the task's view (:func:`read_view`) or, where that cannot be used or ``view`` is False,
    the :func:`frames_pipeline` aggregation. Either way the groups convert to the same parse."""
    name = doc["name"]
    batch = doc.get(BATCH)
    meta = committed_meta(db, doc)
    groups = read_view(db, name, batch) if view else None
    if groups is None:
        groups = list(db.annotation_data.aggregate(frames_pipeline(name, batch), batchSize=_BATCH_SIZE,
                                                   allowDiskUse=True))
    return TaskFrames(doc=doc, frames=list(meta.get("frames") or []), groups=groups)


def read_view(db: Database, name: str, batch: Any, *, check_count: bool = True) -> list[dict[str, Any]] | None:
    """The frame groups of task ``name``'s committed write ``batch`` from its ``task_frames`` view, or
    None (logged) when the task has no batch (not written by obdb), its view is missing or
    incomplete, or the view's shape count differs from the shapes stored under that batch (someone
    added or removed shapes by hand): then only the aggregation tells the truth.

    The count is one ``count_documents`` on the ``(task_name, obdb_batch, frame)`` index. A real
    ``mongod`` can answer it from the index; SecantusDB fetches every shape document for it, which is
    most of the view read's server time there (docs/benchmarks.md). ``check_count=False`` trusts the
    view without it (benchmarks use it to show that cost; the source always checks)."""
    if not isinstance(batch, str):
        logger.debug("task %r: not written by obdb (no %s), reading it with the aggregation", name, BATCH)
        return None
    query = {"task_name": name, BATCH: batch}
    parts = list(db[VIEW].find(query, batch_size=_BATCH_SIZE))
    expected = view_shapes(parts)
    if expected is None:
        logger.debug("task %r: %s", name, "its view is incomplete" if parts else "no view (written by an older obdb or "
                     "imported, or the view was dropped; the task's next write, e.g. by obdb sync --full, adds it)")
        return None
    stored = db.annotation_data.count_documents(query) if check_count else expected
    if stored != expected:
        logger.info("task %r: its view holds %d shapes but %d are stored (changed by hand?); reading it with "
                    "the aggregation", name, expected, stored)
        return None
    parts.sort(key=lambda part: part["part"])
    return [group for part in parts for group in part.get("groups") or []]



def frames_to_task(task: TaskFrames, database: str, images_dir: Path) -> Task:
    """One task's documents as a parsed task whose images live under ``images_dir``."""
    name = task.name
    label_names = {lab.get("id"): lab.get("name") for lab in task.doc.get("labels") or []
                   if isinstance(lab, dict) and isinstance(lab.get("name"), str)}
    by_frame: dict[int, list[Doc]] = {}
    for group in task.groups:
        shapes = group["s"]
        by_frame.setdefault(_whole_frame(group["_id"], name, shapes), []).extend(shapes)
    listed: dict[int, Doc] = dict(enumerate(task.frames))
    frames: list[Frame] = []
    for number in sorted(listed.keys() | by_frame.keys()):
        docs = sorted(by_frame.get(number, []), key=_id_order)
        info = listed.get(number, {})
        first = docs[0] if docs else {}
        image_name = first.get(_IMAGE) or info.get("name")
        if not isinstance(image_name, str) or not image_name:
            raise SourceError(f"task {name!r}: frame {number} has no image name (meta frame 'name' or "
                              f"annotation 'img_path')")
        frames.append(Frame(image_name, number, _int_or_none(info.get("width", first.get(_WIDTH))),
                            _int_or_none(info.get("height", first.get(_HEIGHT))),
                            [_shape(doc, name, number, label_names) for doc in docs]))
    return Task(name=name, frames=frames, root=images_dir, origin=f"mongodb:{database}/{name}", format="mongo",
                labels=list(label_names.values()))


def _id_order(shape: Doc) -> tuple[int, Any]:
    """Annotation order within a frame: the ``_id`` part of :func:`obdb.mongo.layout.shape_order`."""
    ident = shape.get(_ID)
    return (0, ident.binary) if isinstance(ident, ObjectId) else (1, str(ident))


def _whole_frame(frame: Any, task: str, shapes: list[Doc]) -> int:
    """``frame`` as an int; else a SourceError naming the first of the ``shapes`` that carry it."""
    if isinstance(frame, float) and frame.is_integer():
        frame = int(frame)
    if not isinstance(frame, int) or isinstance(frame, bool) or frame < 0:
        ident = min(shapes, key=_id_order).get(_ID) if shapes else None
        raise SourceError(f"task {task!r}: annotation_data {ident}: 'frame' must be a whole number >= 0, "
                          f"got {frame!r}")
    return frame


def _shape(doc: Doc, task: str, frame: int, label_names: dict[Any, str]) -> Shape:
    """One shape document as a parsed shape; a SourceError naming the document when it is malformed."""
    where = f"task {task!r}: annotation_data {doc.get(_ID)} (frame {frame})"
    label = doc.get(_CLASS)
    if not isinstance(label, str) or not label:
        if doc.get(_LABEL_ID) not in label_names:
            raise SourceError(f"{where}: shape has no object_class and its label_id {doc.get(_LABEL_ID)!r} "
                              f"is not among the task's labels")
        label = label_names[doc[_LABEL_ID]]
    kind = str(doc.get(_KIND))
    points = doc.get(_POINTS)
    values: list[float] = []
    if kind in BOX_KINDS or kind in OUTLINE_KINDS:  # what becomes a box must have usable points
        try:
            values = [float(v) for v in points] if isinstance(points, list) else []
        except (TypeError, ValueError) as err:
            raise SourceError(f"{where}: 'points' holds a value that is not a number: {points!r}") from err
        if kind != "mask" and (len(values) < 2 or len(values) % 2):
            raise SourceError(f"{where}: 'points' must be a flat list [x1, y1, x2, y2, ...], got {points!r}")
        if kind == "rectangle" and len(values) != 4:
            raise SourceError(f"{where}: a rectangle needs 4 points values [xtl, ytl, xbr, ybr], got {points!r}")
    attributes, rotation = doc.get(_ATTRIBUTES), doc.get(_ROTATION)
    return Shape(kind=kind, points=values, label=label, occluded=bool(doc.get(_OCCLUDED, False)),
                 rotation=float(rotation) if isinstance(rotation, (int, float)) and not isinstance(rotation, bool) else 0.0,
                 source=doc.get(_SOURCE) if isinstance(doc.get(_SOURCE), str) else None,
                 attributes=attribute_values(attributes),
                 ref=f"annotation_data {doc.get(_ID)}")


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass
class MongoSource:
    """Tasks of a MongoDB database in the original layout (all tasks when ``tasks`` is empty), with
    images under ``images_dir``."""

    mongo: MongoSettings
    images_dir: Path
    tasks: list[str] | None = None

    def read_tasks(self, progress: bool = True) -> list[Task]:
        """Raises SourceError when the server is unreachable, a task is missing (exact names; the
        message lists what the database holds) or a document is malformed."""
        if not Path(self.images_dir).is_dir():
            raise SourceError(f"{self.images_dir}: images folder does not exist")
        try:
            db = connect(self.mongo)
        except (MongoUnavailable, MongoConfigError) as err:
            raise SourceError(str(err)) from err
        try:
            return self._read_tasks(db, progress)
        except PyMongoError as err:  # the server went away or refused a query half-way (the driver retried once)
            hosts = ",".join(f"{host}:{port}" for host, port in db.client.topology_description.server_descriptions())
            raise SourceError(f"MongoDB at {hosts} failed while reading database {db.name!r}: "
                              f"{str(err).split(', Timeout:')[0]}. Rerun when the server answers again") from err
        finally:
            db.client.close()

    def _read_tasks(self, db: Database, progress: bool) -> list[Task]:
        try:
            ensure_indexes(db)
        except Exception as err:  # noqa: BLE001 - a read-only user may not create indexes; reading still works
            logger.warning("could not create the MongoDB indexes (%s); reading without them", err)
        try:
            # by name, as the local source orders its files: records do not depend on list order
            docs = find_tasks(db, sorted(set(self.tasks or db.tasks.distinct("name"))))
            return [frames_to_task(read_task_frames(db, doc), db.name, Path(self.images_dir))
                    for doc in tqdm(docs, desc="reading MongoDB tasks", unit="task", disable=not progress)]
        except (TaskNotFound, TaskInterrupted) as err:
            raise SourceError(str(err)) from err
