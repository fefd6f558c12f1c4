"""MongoDB source: tasks in the original system's layout (see :mod:`obdb.mongo.layout`) as parsed
tasks (:mod:`obdb.sources.contract`); :mod:`obdb.sources.driver` turns them into records exactly as it
does the same annotations exported as files.

All MongoDB I/O is in :mod:`obdb.mongo` (:func:`obdb.mongo.read.read_tasks`: each task in two
queries, never one per frame); this module only converts documents. Frames are the ``meta`` frames
in frame order (the list index is the frame number), named by the ``img_path`` of their first
shape where they have shapes; shapes on a frame ``meta`` does not list still make a frame. Within a
frame, shapes keep the order they were annotated in (``_id`` order). Shapes carry their ``source``
and ``attributes`` (any stored form, :func:`obdb.sources.truth.attribute_values`) for the
ground-truth rule, and a ``rotation`` where a document has one (the original layout has none:
``obdb sync`` stores rotated rectangles as their enclosing box).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from obdb.errors import ServiceUnavailable, UserError
from obdb.mongo.layout import SHAPE_FIELDS, TaskFrames, id_order
from obdb.mongo.read import read_tasks
from obdb.settings.schema import MongoSettings
from obdb.shapes import BOX_KINDS, OUTLINE_KINDS
from obdb.sources.contract import Frame, Shape, SourceError, Task
from obdb.sources.truth import attribute_values

#: The one-letter names of the fields the conversion reads (:data:`obdb.mongo.layout.SHAPE_FIELDS`).
(_ID, _KIND, _POINTS, _CLASS, _LABEL_ID, _OCCLUDED, _IMAGE, _WIDTH, _HEIGHT, _SOURCE, _ATTRIBUTES,
 _ROTATION) = SHAPE_FIELDS
Doc = dict[str, Any]


class MongoSourceUnavailable(SourceError, ServiceUnavailable):
    """MongoDB could not be reached or failed half-way: exit code 3, like the error it wraps."""

    exit_code = ServiceUnavailable.exit_code


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
    """Annotation order within a frame: ``_id`` order (:func:`obdb.mongo.layout.id_order`)."""
    return id_order(shape.get(_ID))


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
                 rotation=(float(rotation) if isinstance(rotation, (int, float)) and not isinstance(rotation, bool)
                           else 0.0),
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
        """Raises SourceError when the server is unreachable (exit 3), a task is missing (exact names;
        the message lists what the database holds) or a document is malformed."""
        if not Path(self.images_dir).is_dir():
            raise SourceError(f"{self.images_dir}: images folder does not exist")
        try:
            stored = read_tasks(self.mongo, self.tasks, progress=progress)
        except ServiceUnavailable as err:
            raise MongoSourceUnavailable(str(err)) from err
        except UserError as err:
            raise SourceError(str(err)) from err
        return [frames_to_task(task, stored.database, Path(self.images_dir)) for task in stored.tasks]
