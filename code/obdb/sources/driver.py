"""The one driver: parsed tasks from any source (:mod:`obdb.sources.contract`) → an
:class:`~obdb.records.AnnotationSet`. Every source goes through :func:`load`, so local files,
MongoDB, CVAT and what ``obdb sync`` stored follow one set of rules:

* ``image_id = f"{task}/{name}"``; the same id twice is an error (two files with one task name, or
  one image on two frames of a task);
* every image name resolves inside the task's root (:func:`obdb.paths.resolve_inside`): a name with
  ``..``, an absolute path or a symlink out of it is *skipped* and listed, and never opened. Images
  are looked up as ``root / name``, then ``root / basename(name)``; one that is missing, empty,
  unreadable or truncated (:func:`obdb.imageio.probe_image`) is skipped and listed, never fatal;
* shapes that are model proposals not taken as ground truth (:func:`obdb.sources.truth.is_ground_truth`
  with ``include_auto``) are left out and counted: the frame is judged on its ground truth alone;
* each shape becomes a box by :func:`~obdb.shapes.shape_box`; shapes it skips are counted
  by kind. **A frame that had shapes skipped and has no box left is left out** (counted), never
  kept as an empty negative: it shows objects, just not ones we train on. A frame with boxes left
  keeps them;
* labels are renamed by ``label_map`` and normalised (:func:`obdb.records.map_label`;
  ``""``/``None`` drops the box: a deliberate drop, so a frame left without boxes that way is a
  negative); the group comes from :func:`obdb.sources.grouping.frame_group`;
* the real image size wins over the annotation's; boxes are clipped to it and what is thinner than
  1 px (or not finite) is dropped and counted;
* frames without boxes are kept as negatives unless ``keep_empty`` is off.

One summary is logged at the end (a line per kind of thing left out, with examples).
"""
from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from obdb.imageio import probe_image
from obdb.paths import PathOutsideRoot, resolve_inside
from obdb.records import AnnotationSet, ImageRecord, SkippedImage, map_label
from obdb.shapes import OUTLINE_KINDS, shape_box
from obdb.sources.contract import Frame, Source, SourceError, Task
from obdb.sources.grouping import frame_group
from obdb.sources.truth import is_ground_truth

logger = logging.getLogger(__name__)

MIN_BOX_SIZE = 1.0  # px; thinner boxes carry no signal and make some losses blow up
_MAX_EXAMPLES = 5  # how many offending names a summary line quotes
_Raw = tuple[tuple[float, float, float, float], str, bool, bool]  # box, label, occluded, difficult


@dataclass(frozen=True)
class LoadOptions:
    """What turns shapes into records, the same for every source (``data.*`` settings)."""

    keep_empty: bool = True
    label_map: Mapping[str, str | None] = field(default_factory=dict)
    group_regex: str | None = None
    polygons: str = "bbox"
    include_auto: str = "all"


@dataclass
class _Stats:
    """Counters for the end-of-load summary (one line each, not one per frame)."""

    dropped_boxes: list[str] = field(default_factory=list)
    label_dropped: int = 0
    empty_left_out: int = 0
    frames_left_out: int = 0
    proposals: int = 0
    as_bbox: Counter[str] = field(default_factory=Counter)
    skipped_shapes: Counter[str] = field(default_factory=Counter)
    outside: list[str] = field(default_factory=list)
    size_mismatch: list[str] = field(default_factory=list)
    empty_tasks: list[str] = field(default_factory=list)


def load(source: Source, options: LoadOptions | None = None, *, progress: bool = True) -> AnnotationSet:
    """Read ``source``'s tasks and build their records (see the module docstring).

    Raises SourceError for a bad ``group_regex``, malformed shapes or duplicate image ids (and
    whatever the source raises); bad images are listed in ``AnnotationSet.skipped`` instead."""
    options = options or LoadOptions()
    try:
        regex = re.compile(options.group_regex) if options.group_regex else None
    except re.error as err:
        raise SourceError(f"group_regex {options.group_regex!r} is not a valid regular expression: {err}") from err
    tasks = source.read_tasks(progress=progress)
    stats = _Stats(empty_tasks=[f"{t.origin} (task {t.name})" for t in tasks if not t.frames])
    records: list[ImageRecord] = []
    skipped: list[SkippedImage] = []
    owner: dict[str, str] = {}
    with tqdm(total=sum(len(t.frames) for t in tasks), desc="checking images", unit="img",
              disable=not progress) as bar:
        for task in tasks:
            for frame in task.frames:
                bar.update(1)
                image_id = f"{task.name}/{frame.name}"
                if image_id in owner:
                    where = f"in {owner[image_id]} and {task.origin} (two files with the same task name?)" \
                        if owner[image_id] != task.origin else f"on two frames of {task.origin}"
                    raise SourceError(f"duplicate image id {image_id!r}: {where}")
                owner[image_id] = task.origin
                raw = _frame_boxes(task, frame, options, stats)
                if raw is None:
                    continue
                path = _locate(task.root, frame, len(raw), skipped, stats)
                if path is None:
                    continue
                size = probe_image(path)
                if isinstance(size, str):
                    skipped.append(SkippedImage(str(path), size, len(raw)))
                    continue
                record = _record(task, frame, path, size, raw, regex, stats)
                if not len(record.boxes) and not options.keep_empty:
                    stats.empty_left_out += 1
                    continue
                records.append(record)
    _log_summary(len(tasks), records, skipped, stats, options)
    return AnnotationSet(records=records, skipped=skipped, dropped_boxes=len(stats.dropped_boxes))


def _frame_boxes(task: Task, frame: Frame, options: LoadOptions, stats: _Stats) -> list[_Raw] | None:
    """The frame's ground-truth boxes (labels renamed, not clipped), or None when the frame is left
    out because shapes were skipped and no box is left."""
    raw: list[_Raw] = []
    skipped = 0
    for shape in frame.shapes:
        if not is_ground_truth(shape.source, shape.attributes, options.include_auto):
            stats.proposals += 1
            continue
        try:
            box = shape_box(shape.kind, shape.points, shape.rotation, options.polygons)
        except ValueError as err:
            raise SourceError(f"{task.origin}: image {frame.name!r}: {shape.ref or shape.kind}: {err}") from err
        if box is None:
            stats.skipped_shapes[shape.kind] += 1
            skipped += 1
            continue
        if shape.kind in OUTLINE_KINDS:
            stats.as_bbox[shape.kind] += 1
        label = map_label(shape.label, options.label_map, f"{task.name}/{frame.name}")
        if not label:
            stats.label_dropped += 1
            continue
        raw.append((box, label, shape.occluded, shape.difficult))
    if skipped and not raw:
        stats.frames_left_out += 1
        return None
    return raw


def _locate(root: Path, frame: Frame, boxes: int, skipped: list[SkippedImage], stats: _Stats) -> Path | None:
    """The image file of ``frame`` under ``root``, or None (with the reason and the frame's number of
    boxes in ``skipped``)."""
    try:
        resolve_inside(root, frame.name)
        candidates = [Path(frame.file)] if frame.file is not None else [Path(frame.name.replace("\\", "/"))]
        if frame.file is None and candidates[0].name != str(candidates[0]):
            candidates.append(Path(candidates[0].name))
        for candidate in candidates:
            resolve_inside(root, candidate)
    except PathOutsideRoot as err:
        stats.outside.append(frame.name)
        skipped.append(SkippedImage(frame.name, str(err), boxes))
        return None
    tried = [root / c for c in candidates]
    for path in tried:
        if path.is_file():
            return path
    skipped.append(SkippedImage(str(tried[0]), "image file not found (tried " + ", ".join(map(str, tried)) + ")",
                                boxes))
    return None


def _record(task: Task, frame: Frame, path: Path, size: tuple[int, int], raw: list[_Raw],
            regex: re.Pattern[str] | None, stats: _Stats) -> ImageRecord:
    width, height = size
    if (frame.width, frame.height) != (None, None) and (frame.width, frame.height) != size:
        stats.size_mismatch.append(f"{task.name}/{frame.name}: annotation says "
                                   f"{frame.width}x{frame.height}, file is {width}x{height}")
    boxes, labels, occluded, difficult = [], [], [], []
    for box, label, is_occluded, is_difficult in raw:
        x1, x2 = sorted((box[0], box[2]))
        y1, y2 = sorted((box[1], box[3]))
        if all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
            y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
            if x2 - x1 >= MIN_BOX_SIZE and y2 - y1 >= MIN_BOX_SIZE:
                boxes.append((x1, y1, x2, y2))
                labels.append(label)
                occluded.append(is_occluded)
                difficult.append(is_difficult)
                continue
        coords = ", ".join(f"{v:g}" for v in box)
        stats.dropped_boxes.append(f"{task.name}/{frame.name} ({width}x{height}): {label} [{coords}]")
    return ImageRecord(
        image_id=f"{task.name}/{frame.name}", path=path, width=width, height=height,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4), labels=labels,
        group=frame_group(frame.name, task.name, regex), task=task.name, frame=frame.frame,
        meta={"source_file": task.origin, "format": task.format, "occluded": occluded, "difficult": difficult})


def _examples(items: list[str]) -> str:
    more = f" (+{len(items) - _MAX_EXAMPLES} more)" if len(items) > _MAX_EXAMPLES else ""
    return "; ".join(items[:_MAX_EXAMPLES]) + more


def _kinds(counts: Counter[str]) -> str:
    return ", ".join(f"{n} {kind} shape(s)" for kind, n in sorted(counts.items()))


def _log_summary(n_tasks: int, records: list[ImageRecord], skipped: list[SkippedImage], stats: _Stats,
                 options: LoadOptions) -> None:
    n_boxes = sum(len(r.boxes) for r in records)
    n_empty = sum(1 for r in records if not len(r.boxes))
    logger.info("loaded %d images (%d without boxes) with %d boxes from %d task(s)",
                len(records), n_empty, n_boxes, n_tasks)
    if skipped:
        logger.warning("skipped %d image(s): %s", len(skipped), _examples([f"{s.path}: {s.reason}" for s in skipped]))
    if stats.outside:
        logger.warning("skipped %d image name(s) outside the data root (never opened): %s", len(stats.outside),
                       _examples(stats.outside))
    if stats.empty_tasks:
        logger.warning("%d task(s) hold no images: %s", len(stats.empty_tasks), _examples(stats.empty_tasks))
    if stats.dropped_boxes:
        logger.warning("dropped %d degenerate box(es) (outside the image, or narrower or lower than %g px "
                       "after clipping to it); %d boxes kept; e.g. %s", len(stats.dropped_boxes), MIN_BOX_SIZE,
                       n_boxes, _examples(stats.dropped_boxes))
    if stats.proposals:
        logger.info("left out %d model proposal(s) not taken as ground truth (include_auto = %s)",
                    stats.proposals, options.include_auto)
    if stats.as_bbox:
        logger.info("used the bounding box of %s (data.polygons = bbox)", _kinds(stats.as_bbox))
    if stats.skipped_shapes:
        logger.warning("skipped %s", _kinds(stats.skipped_shapes))
    if stats.frames_left_out:
        logger.info("left out %d frame(s) whose every shape was skipped (they are not negatives)",
                    stats.frames_left_out)
    if stats.label_dropped:
        logger.info("dropped %d box(es) whose label maps to nothing in label_map", stats.label_dropped)
    if stats.empty_left_out:
        logger.info("left out %d frame(s) without boxes (keep_empty is off)", stats.empty_left_out)
    if stats.size_mismatch:
        logger.warning("%d image(s) differ in size from their annotation (using the real size; "
                       "swapped width/height usually means EXIF rotation): %s",
                       len(stats.size_mismatch), _examples(stats.size_mismatch))
