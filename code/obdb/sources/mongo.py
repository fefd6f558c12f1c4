"""MongoDB source: tasks in the original system's layout (see :mod:`obdb.mongo.layout`) turned into
an :class:`~obdb.records.AnnotationSet` that equals what the local-file source makes of the same
annotations exported as files.

Each task is read in a handful of queries (its ``meta`` document, then its shapes grouped by
frame), never one query per frame: that loop is what made the original loader take minutes per
task. The grouped shapes come from one of two places, both giving one ``{_id: frame, s: [shape,
...]}`` document per frame with only the fields the conversion reads, under one-letter names
(about ten times fewer, smaller documents than whole shapes, which is most of the client's cost):

* the task's **read view** (``task_frames``, see :mod:`obdb.mongo.layout`), written by obdb's own
  writer when the task was written: one ``find`` returns the whole task in a few documents, and
  the server groups nothing. Used for a task whose ``tasks`` document has a batch, when its view
  parts are complete and hold as many shapes as a count of the task's committed
  ``annotation_data`` documents finds: a guard against shapes added or removed by hand, which a
  real ``mongod`` answers from the index but SecantusDB (the tests' server) only by fetching every
  shape, at about two thirds of what the aggregation costs it (docs/benchmarks.md);
* otherwise an **aggregation** (:func:`frames_pipeline`) that groups the shapes on the server: for
  tasks imported from the original system's exports (no batch: their shapes were not written by
  us, so we cannot know when a view would be stale), for tasks written by an older obdb (no view
  yet; the task's next write adds it, and ``obdb sync --full`` writes the views of unchanged
  tasks), and when the guard fails. It uses only ``$match`` on the ``(task_name, obdb_batch,
  frame)`` index and ``$group``/``$push``, which every MongoDB server has, and costs the server CPU
  for every shape on every read.

Both give the same :class:`~obdb.sources.formats.ParsedFile`. It is the format-neutral parse result
the file parsers produce, and the images are found, checked and turned into records by the local
source's helpers, so missing images, label maps, group regexes, clipping and empty frames follow
one set of rules whatever the source.

Shapes: ``rectangle`` points are ``[xtl, ytl, xbr, ybr]``; ``polygon`` and ``points`` become their
bounding box (or are skipped with ``data.mongo.polygons = "skip"``); other types are counted and
ignored. A frame whose every shape was skipped or ignored is left out rather than kept as a
negative: it shows objects, just not ones we train on. Within a frame, boxes keep the order they
were annotated in (``_id`` order, as :func:`obdb.mongo.layout.shape_order` sorts).

Model proposals (``source`` ``auto``) are left out unless a person accepted them (``review`` in the
``attributes`` that ``obdb sync`` stores; ``data.mongo.include_auto``, see
:mod:`obdb.sources.truth`), as if they were not there; how many is logged.
"""
from __future__ import annotations

import logging
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bson import ObjectId
from pymongo.database import Database
from pymongo.errors import PyMongoError
from tqdm.auto import tqdm

from obdb.mongo.connection import MongoConfigError, MongoUnavailable, connect, ensure_indexes
from obdb.mongo.layout import (BATCH, SHAPE_FIELDS, VIEW, StoredTask, TaskInterrupted, TaskNotFound, committed_meta,
                               find_tasks, view_shapes)
from obdb.records import AnnotationSet
from obdb.settings.schema import MongoSettings, Settings
from obdb.sources.base import SourceError
from obdb.sources.formats import ParsedBox, ParsedFile, ParsedImage, bbox_of_points
from obdb.sources.local import RecordCollector, resolve_image
from obdb.sources.truth import attribute_values, is_ground_truth

logger = logging.getLogger(__name__)

_POLYGONS = ("polygon", "points")


@dataclass
class _Counts:
    """What the conversion of shape documents did, for one log line each."""

    as_bbox: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    frames_left_out: int = 0
    include_auto: str = "accepted"  # which model proposals are ground truth (obdb.sources.truth)
    proposals_left_out: int = 0


#: The one-letter names of the fields the conversion reads (:data:`obdb.mongo.layout.SHAPE_FIELDS`,
#: the names the view and the aggregation give them).
_ID, _KIND, _POINTS, _CLASS, _LABEL_ID, _OCCLUDED, _IMAGE, _WIDTH, _HEIGHT, _SOURCE, _ATTRIBUTES = SHAPE_FIELDS
Shape = dict[str, Any]

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


def task_to_parsed(stored: StoredTask, database: str, polygons: str, counts: _Counts) -> ParsedFile:
    """:func:`frames_to_parsed` for shapes read as whole documents (e.g. by
    :func:`~obdb.mongo.layout.read_task`): the same conversion whatever query fetched them."""
    groups: dict[int, list[Shape]] = defaultdict(list)
    for doc in stored.shapes:
        shape = {short: doc[long] for short, long in SHAPE_FIELDS.items() if long in doc}
        groups[_whole_frame(doc.get("frame"), stored.name, [shape])].append(shape)
    return frames_to_parsed(TaskFrames(stored.doc, stored.frames, [{"_id": f, "s": s} for f, s in groups.items()]),
                            database, polygons, counts)


def frames_to_parsed(task: TaskFrames, database: str, polygons: str, counts: _Counts) -> ParsedFile:
    """One task as the format-neutral parse result the local source's helpers work on.

    Images are the ``meta`` frames in frame order (the list index is the frame number), named by
    the ``img_path`` of their first shape where they have shapes; shapes on a frame ``meta`` does
    not list still make an image (sized by ``img_width``/``img_height``)."""
    name = task.name
    label_names = {lab.get("id"): lab.get("name") for lab in task.doc.get("labels") or []
                   if isinstance(lab, dict) and isinstance(lab.get("name"), str)}
    by_frame: dict[int, list[Shape]] = {}
    for group in task.groups:
        shapes = group["s"]
        by_frame.setdefault(_whole_frame(group["_id"], name, shapes), []).extend(shapes)

    frames: dict[int, dict[str, Any]] = dict(enumerate(task.frames))
    images: list[ParsedImage] = []
    for frame in sorted(frames.keys() | by_frame.keys()):
        shapes = by_frame.get(frame, [])
        if len(shapes) > 1:
            shapes.sort(key=_id_order)
        info = frames.get(frame, {})
        first = shapes[0] if shapes else {}
        image_name = first.get(_IMAGE) or info.get("name")
        if not isinstance(image_name, str) or not image_name:
            raise SourceError(f"task {name!r}: frame {frame} has no image name (meta frame 'name' or "
                              f"annotation 'img_path')")
        truth = [s for s in shapes if is_ground_truth(s.get(_SOURCE), attribute_values(s.get(_ATTRIBUTES)),
                                                        counts.include_auto)]
        counts.proposals_left_out += len(shapes) - len(truth)
        shapes = truth  # a frame with only proposals is a frame without shapes, as in the cvat source
        boxes = []
        for shape in shapes:
            box = _box(shape, name, frame, label_names, polygons, counts)
            if box is not None:
                boxes.append(box)
        if shapes and not boxes:
            counts.frames_left_out += 1
            continue
        width = info.get("width", first.get(_WIDTH))
        height = info.get("height", first.get(_HEIGHT))
        images.append(ParsedImage(image_name, frame, _int_or_none(width), _int_or_none(height), boxes))
    return ParsedFile(path=Path(f"mongodb:{database}") / name, format="mongo", task=name, images=images,
                      labels=list(label_names.values()))


def _id_order(shape: Shape) -> tuple[int, Any]:
    """Annotation order within a frame: the ``_id`` part of :func:`obdb.mongo.layout.shape_order`."""
    ident = shape.get(_ID)
    return (0, ident.binary) if isinstance(ident, ObjectId) else (1, str(ident))


def _whole_frame(frame: Any, task: str, shapes: list[Shape]) -> int:
    """``frame`` as an int; else a SourceError naming the first of the ``shapes`` that carry it."""
    if isinstance(frame, float) and frame.is_integer():
        frame = int(frame)
    if not isinstance(frame, int) or isinstance(frame, bool) or frame < 0:
        ident = min(shapes, key=_id_order).get(_ID) if shapes else None
        raise SourceError(f"task {task!r}: annotation_data {ident}: 'frame' must be a whole number >= 0, "
                          f"got {frame!r}")
    return frame


def _where(task: str, shape: Shape, frame: int) -> str:
    return f"task {task!r}: annotation_data {shape.get(_ID)} (frame {frame})"


def _box(shape: Shape, task: str, frame: int, label_names: dict[Any, str], polygons: str,
         counts: _Counts) -> ParsedBox | None:
    """The shape's box, or None (counted) for a shape that is skipped; raises SourceError naming
    the document for one that is malformed. Error texts are only built when they are needed."""
    label = shape.get(_CLASS)
    if not isinstance(label, str) or not label:
        if shape.get(_LABEL_ID) not in label_names:
            raise SourceError(f"{_where(task, shape, frame)}: shape has no object_class and its label_id "
                              f"{shape.get(_LABEL_ID)!r} is not among the task's labels")
        label = label_names[shape[_LABEL_ID]]
    kind = shape.get(_KIND)
    points = shape.get(_POINTS)
    if kind == "rectangle":
        if isinstance(points, list) and len(points) == 4:
            try:  # the common case, straight to the box
                return ParsedBox(float(points[0]), float(points[1]), float(points[2]), float(points[3]), label,
                                 bool(shape.get(_OCCLUDED, False)))
            except (TypeError, ValueError):
                pass  # _number_pairs says what is wrong
        where = _where(task, shape, frame)
        pairs = _number_pairs(points, where)
        if len(pairs) != 2:
            raise SourceError(f"{where}: a rectangle needs 4 points values [xtl, ytl, xbr, ybr], got {points!r}")
        (x1, y1), (x2, y2) = pairs
    elif kind in _POLYGONS and polygons == "bbox":
        x1, y1, x2, y2 = bbox_of_points(_number_pairs(points, _where(task, shape, frame)))
        counts.as_bbox[kind] += 1
    else:
        counts.skipped[str(kind)] += 1
        return None
    return ParsedBox(x1, y1, x2, y2, label, bool(shape.get(_OCCLUDED, False)))


def _number_pairs(points: Any, where: str) -> list[tuple[float, float]]:
    if not isinstance(points, list) or len(points) < 2 or len(points) % 2:
        raise SourceError(f"{where}: 'points' must be a flat list [x1, y1, x2, y2, ...], got {points!r}")
    try:
        values = [float(v) for v in points]
    except (TypeError, ValueError):
        raise SourceError(f"{where}: 'points' holds a value that is not a number: {points!r}") from None
    return list(zip(values[0::2], values[1::2]))


def _int_or_none(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


@dataclass
class MongoSource:
    """Tasks of a MongoDB database in the original layout, with images under ``images_dir``."""

    mongo: MongoSettings
    images_dir: Path
    tasks: list[str] | None = None
    keep_empty: bool = True
    label_map: dict[str, str | None] | None = None
    group_regex: str | None = None
    progress: bool = True

    @classmethod
    def from_settings(cls, settings: Settings, progress: bool = True) -> "MongoSource":
        data = settings.data
        return cls(mongo=data.mongo, images_dir=Path(data.images_dir or settings.dataset_dir),
                   tasks=list(settings.annotations_list) or None, keep_empty=data.keep_empty,
                   label_map=data.label_map or None, group_regex=data.group_regex, progress=progress)

    def load(self) -> AnnotationSet:
        """Read the tasks, check their images and return the records (see the module docstring).

        Raises SourceError when the server is unreachable, a task is missing (exact names; the
        message lists what the database holds) or a document is malformed."""
        try:
            regex = re.compile(self.group_regex) if self.group_regex else None
        except re.error as err:
            raise SourceError(f"group_regex {self.group_regex!r} is not a valid regular expression: {err}") from None
        if not self.images_dir.is_dir():
            raise SourceError(f"{self.images_dir}: images folder does not exist")
        parsed, counts = self._read()
        collector = RecordCollector(self.label_map, regex, self.keep_empty)
        total = sum(len(p.images) for p in parsed)
        with tqdm(total=total, desc="checking images", unit="img", disable=not self.progress) as bar:
            for task in parsed:
                seen: set[str] = set()
                for image in task.images:
                    bar.update(1)
                    if image.name in seen:
                        raise SourceError(f"task {task.task!r}: image {image.name!r} appears on two frames")
                    seen.add(image.name)
                    path, tried = resolve_image(self.images_dir, image.name)
                    if path is None:
                        collector.missing(tried)
                    else:
                        collector.add(task, image, path)
        loaded = collector.finish(len(parsed))
        self._log_shapes(counts)
        return loaded

    def _read(self) -> tuple[list[ParsedFile], _Counts]:
        try:
            db = connect(self.mongo)
        except (MongoUnavailable, MongoConfigError) as err:
            raise SourceError(str(err)) from None
        try:
            return self._read_tasks(db)
        except PyMongoError as err:  # the server went away or refused a query half-way (the driver retried once)
            hosts = ",".join(f"{host}:{port}" for host, port in db.client.topology_description.server_descriptions())
            raise SourceError(f"MongoDB at {hosts} failed while reading database {db.name!r}: "
                              f"{str(err).split(', Timeout:')[0]}. Rerun when the server answers again") from None
        finally:
            db.client.close()

    def _read_tasks(self, db: Database) -> tuple[list[ParsedFile], _Counts]:
        try:
            ensure_indexes(db)
        except Exception as err:  # noqa: BLE001 - a read-only user may not create indexes; reading still works
            logger.warning("could not create the MongoDB indexes (%s); reading without them", err)
        try:
            # by name, as the local source orders its files: records do not depend on list order
            names = sorted(set(self.tasks or db.tasks.distinct("name")))
            docs = find_tasks(db, names)
        except TaskNotFound as err:
            raise SourceError(str(err)) from None
        counts = _Counts(include_auto=self.mongo.include_auto)
        parsed: list[ParsedFile] = []
        for doc in tqdm(docs, desc="reading MongoDB tasks", unit="task", disable=not self.progress):
            try:
                stored = read_task_frames(db, doc)
            except TaskInterrupted as err:
                raise SourceError(str(err)) from None
            parsed.append(frames_to_parsed(stored, db.name, self.mongo.polygons, counts))
        return parsed, counts

    def _log_shapes(self, counts: _Counts) -> None:
        if counts.proposals_left_out:
            logger.info("left out %d model proposal(s) (source auto) that are not ground truth "
                        "(data.mongo.include_auto = %s)", counts.proposals_left_out, counts.include_auto)
        if counts.as_bbox:
            logger.info("used the bounding box of %s (data.mongo.polygons = bbox)",
                        ", ".join(f"{n} {kind} shape(s)" for kind, n in sorted(counts.as_bbox.items())))
        if counts.skipped:
            logger.warning("skipped %s", ", ".join(f"{n} {kind} shape(s)" for kind, n in sorted(counts.skipped.items())))
        if counts.frames_left_out:
            logger.info("left out %d frame(s) whose every shape was skipped (they are not negatives)",
                        counts.frames_left_out)
