"""MongoDB source: tasks in the original system's layout (see :mod:`obdb.mongo.layout`) turned into
an :class:`~obdb.records.AnnotationSet` that equals what the local-file source makes of the same
annotations exported as files.

Each task is read in two queries (its ``meta`` document, then one aggregation grouping its shapes
by frame on the server, see :func:`obdb.mongo.layout.read_task_frames`), never one query per frame:
that loop is what made the original loader take minutes per task. All MongoDB I/O is in
:mod:`obdb.mongo`; this module only converts what it reads.

The result is a :class:`~obdb.sources.formats.ParsedFile`: the format-neutral parse result
the file parsers produce, and the images are found, checked and turned into records by the local
source's helpers, so missing images, label maps, group regexes, clipping and empty frames follow
one set of rules whatever the source.

Shapes: ``rectangle`` points are ``[xtl, ytl, xbr, ybr]``; ``polygon`` and ``points`` become their
bounding box (or are skipped with ``data.mongo.polygons = "skip"``); other types are counted and
ignored. A frame whose every shape was skipped or ignored is left out rather than kept as a
negative: it shows objects, just not ones we train on. Within a frame, boxes keep the order they
were annotated in (``_id`` order).

Model proposals (``source`` ``auto``) are left out unless a person accepted them (``review`` in the
``attributes`` that ``obdb sync`` stores; ``data.mongo.include_auto``, see
:mod:`obdb.sources.truth`), as if they were not there; how many is logged.
"""
from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from obdb.errors import ServiceUnavailable, UserError
from obdb.mongo.layout import SHAPE_FIELDS, TaskFrames, id_order
from obdb.mongo.read import read_tasks
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


#: The one-letter names of the fields the conversion reads (:data:`obdb.mongo.layout.SHAPE_FIELDS`).
_ID, _KIND, _POINTS, _CLASS, _LABEL_ID, _OCCLUDED, _IMAGE, _WIDTH, _HEIGHT, _SOURCE, _ATTRIBUTES = SHAPE_FIELDS
Shape = dict[str, Any]


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
    """Annotation order within a frame: ``_id`` order (:func:`obdb.mongo.layout.id_order`)."""
    return id_order(shape.get(_ID))


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
                        collector.missing(tried, len(image.boxes))
                    else:
                        collector.add(task, image, path)
        loaded = collector.finish(len(parsed))
        self._log_shapes(counts)
        return loaded

    def _read(self) -> tuple[list[ParsedFile], _Counts]:
        try:
            stored = read_tasks(self.mongo, self.tasks, progress=self.progress)
        except (UserError, ServiceUnavailable) as err:
            raise SourceError(str(err)) from err
        counts = _Counts(include_auto=self.mongo.include_auto)
        return [frames_to_parsed(task, stored.database, self.mongo.polygons, counts) for task in stored.tasks], counts

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
