"""Local annotation source: export files on disk (CVAT for images 1.1 XML, COCO JSON, Pascal VOC
XML) plus a folder of images, turned into an :class:`~obdb.records.AnnotationSet`.

Rules that hold whatever the format (so training never depends on which tool exported the data):

* each annotation file is one *task*; ``image_id = f"{task}/{name}"`` is stable across runs;
* images are looked up as ``images_dir / name`` then ``images_dir / basename(name)``; an image
  that is missing, empty, unreadable or truncated is *skipped and reported*, never fatal, because
  one bad frame in a 10 000-frame export must not stop a night of training;
* the real image size (from the file) wins over the size written in the annotation;
* boxes are clipped to the image; what is left thinner than 1 px is dropped and counted.
"""
from __future__ import annotations

import logging
import math
import re
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from obdb.imageio import probe_image
from obdb.records import AnnotationSet, ImageRecord, SkippedImage, map_label
from obdb.sources.base import SourceError
from obdb.sources.formats import ParsedFile, ParsedImage, parse_file
from obdb.sources.grouping import frame_group

logger = logging.getLogger(__name__)

ANNOTATION_SUFFIXES = (".xml", ".json")
MIN_BOX_SIZE = 1.0  # px; thinner boxes carry no signal and make some losses blow up
_MAX_EXAMPLES = 5  # how many offending names a summary warning quotes


def collect_annotation_files(annotations: list[Path] | Path | str | list[str]) -> list[Path]:
    """Expand files and directories (non-recursive: every *.xml and *.json, sorted by name) into
    a de-duplicated list of files, so passing a file and its folder does not load it twice."""
    items: Iterable[Path | str] = [annotations] if isinstance(annotations, (str, Path)) else annotations
    files: list[Path] = []
    seen: set[Path] = set()
    for item in items:
        item = Path(item)
        if item.is_dir():
            found = sorted((p for p in item.iterdir()
                            if p.is_file() and p.suffix.lower() in ANNOTATION_SUFFIXES),
                           key=lambda p: p.name)
            if not found:
                raise SourceError(f"{item}: folder holds no annotation files (*.xml, *.json)")
        elif item.is_file():
            found = [item]
        else:
            raise SourceError(f"{item}: annotation file or folder does not exist")
        for path in found:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                files.append(path)
    if not files:
        raise SourceError("no annotation files given")
    return files


def resolve_image(images_dir: Path, name: str) -> tuple[Path | None, list[Path]]:
    """First existing candidate path for an annotation's image name, plus all candidates tried
    (for the skip reason). Backslashes from Windows-made exports are treated as separators."""
    rel = Path(name.replace("\\", "/"))
    candidates = [images_dir / rel]
    if rel.name != str(rel):
        candidates.append(images_dir / rel.name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate, candidates
    return None, candidates


class _Stats:
    """Counters for the end-of-load summary (one warning line each, not one per frame)."""

    def __init__(self) -> None:
        self.dropped_boxes = 0
        self.dropped_examples: list[str] = []  # the first few, so the log names files, not only a count
        self.empty_files: list[str] = []
        self.label_dropped = 0
        self.empty_left_out = 0
        self.size_mismatch: list[str] = []
        self.ignored: Counter[str] = Counter()

    def drop_box(self, task: str, name: str, label: str, box: tuple[float, ...], width: int, height: int) -> None:
        self.dropped_boxes += 1
        if len(self.dropped_examples) < _MAX_EXAMPLES:
            coords = ", ".join(f"{v:g}" for v in box)
            self.dropped_examples.append(f"{task}/{name} ({width}x{height}): {label} [{coords}]")


def _build_record(parsed: ParsedFile, image: ParsedImage, path: Path, size: tuple[int, int],
                  label_map: dict[str, str | None], regex: re.Pattern[str] | None,
                  stats: _Stats) -> ImageRecord:
    width, height = size
    if (image.width, image.height) != (None, None) and (image.width, image.height) != (width, height):
        stats.size_mismatch.append(f"{parsed.task}/{image.name}: annotation says "
                                   f"{image.width}x{image.height}, file is {width}x{height}")
    boxes: list[tuple[float, float, float, float]] = []
    labels: list[str] = []
    occluded: list[bool] = []
    difficult: list[bool] = []
    for box in image.boxes:
        label = map_label(box.label, label_map, f"{parsed.task}/{image.name}")
        if not label:
            stats.label_dropped += 1
            continue
        x1, x2 = sorted((box.x1, box.x2))
        y1, y2 = sorted((box.y1, box.y2))
        if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
            stats.drop_box(parsed.task, image.name, label, (x1, y1, x2, y2), width, height)
            continue
        x1, x2 = min(max(x1, 0.0), width), min(max(x2, 0.0), width)
        y1, y2 = min(max(y1, 0.0), height), min(max(y2, 0.0), height)
        if x2 - x1 < MIN_BOX_SIZE or y2 - y1 < MIN_BOX_SIZE:
            stats.drop_box(parsed.task, image.name, label, (box.x1, box.y1, box.x2, box.y2), width, height)
            continue
        boxes.append((x1, y1, x2, y2))
        labels.append(label)
        occluded.append(box.occluded)
        difficult.append(box.difficult)
    return ImageRecord(
        image_id=f"{parsed.task}/{image.name}", path=path, width=width, height=height,
        boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4), labels=labels,
        group=frame_group(image.name, parsed.task, regex), task=parsed.task, frame=image.frame,
        meta={"source_file": str(parsed.path), "format": parsed.format,
              "occluded": occluded, "difficult": difficult},
    )


class RecordCollector:
    """What every source does with a parsed image once it knows the file: probe it, build the
    record (labels renamed, boxes clipped), keep or leave out a negative, and count what was left
    out, so local files, MongoDB and CVAT treat images exactly alike."""

    def __init__(self, label_map: dict[str, str | None] | None, regex: re.Pattern[str] | None,
                 keep_empty: bool) -> None:
        self.label_map: dict[str, str | None] = dict(label_map or {})
        self.regex = regex
        self.keep_empty = keep_empty
        self.stats = _Stats()
        self.records: list[ImageRecord] = []
        self.skipped: list[SkippedImage] = []

    def skip(self, path: Path | str, reason: str, boxes: int = 0) -> None:
        self.skipped.append(SkippedImage(str(path), reason, boxes))

    def missing(self, tried: list[Path], boxes: int = 0) -> None:
        self.skip(tried[0], "image file not found (tried " + ", ".join(str(t) for t in tried) + ")", boxes)

    def add(self, parsed: ParsedFile, image: ParsedImage, path: Path) -> None:
        size = probe_image(path)
        if isinstance(size, str):
            self.skip(path, size, len(image.boxes))
            return
        record = _build_record(parsed, image, path, size, self.label_map, self.regex, self.stats)
        if not len(record.boxes) and not self.keep_empty:
            self.stats.empty_left_out += 1
            return
        self.records.append(record)

    def finish(self, n_files: int) -> AnnotationSet:
        _log_summary(n_files, self.records, self.skipped, self.stats)
        return AnnotationSet(records=self.records, skipped=self.skipped, dropped_boxes=self.stats.dropped_boxes)


def _select_tasks(parsed_files: list[ParsedFile], tasks: list[str] | None) -> list[ParsedFile]:
    """Keep files whose task name equals a requested name *exactly*: ``gt_val_A`` must not pull in
    ``gt_val_A_2``, or validation data would silently leak into a different task list."""
    if not tasks:
        return parsed_files
    wanted = list(dict.fromkeys(tasks))
    available = list(dict.fromkeys(p.task for p in parsed_files))
    missing = [t for t in wanted if t not in available]
    if missing:
        raise SourceError(f"task(s) not found: {missing}; available tasks: {available}")
    return [p for p in parsed_files if p.task in set(wanted)]


def load_local(annotations: list[Path] | Path, *, images_dir: Path, tasks: list[str] | None = None,
               keep_empty: bool = True, label_map: dict[str, str] | None = None,
               group_regex: str | None = None, progress: bool = True) -> AnnotationSet:
    """Load annotation files (and/or folders of them) and check their images.

    ``tasks`` keeps only those task names (exact match; a missing one is an error listing what is
    available). ``label_map`` renames labels; mapping to ``""``/``None`` drops the label's boxes.
    ``keep_empty`` keeps box-less frames as negatives. ``group_regex`` derives the split group
    from the image file name (first capture group, else the whole match; no match: the task).

    Raises SourceError for malformed/unknown files, missing tasks, a bad regex or duplicate image
    ids; bad images are skipped and listed in ``AnnotationSet.skipped`` instead.
    """
    images_dir = Path(images_dir)
    renames: dict[str, str | None] = dict(label_map or {})
    try:
        regex = re.compile(group_regex) if group_regex else None
    except re.error as err:
        raise SourceError(f"group_regex {group_regex!r} is not a valid regular expression: {err}") from None

    files = collect_annotation_files(annotations)
    parsed_files = [parse_file(path) for path in
                    tqdm(files, desc="reading annotations", unit="file", disable=not progress)]
    parsed_files = _select_tasks(parsed_files, tasks)
    if not images_dir.is_dir():
        raise SourceError(f"{images_dir}: images folder does not exist")

    collector = RecordCollector(renames, regex, keep_empty)
    collector.stats.empty_files = [f"{p.path} (task {p.task})" for p in parsed_files if not p.images]
    owner: dict[str, Path] = {}
    total = sum(len(p.images) for p in parsed_files)
    with tqdm(total=total, desc="checking images", unit="img", disable=not progress) as bar:
        for parsed in parsed_files:
            collector.stats.ignored.update({f"{parsed.format}:{k}": v for k, v in parsed.ignored.items()})
            for image in parsed.images:
                bar.update(1)
                image_id = f"{parsed.task}/{image.name}"
                if image_id in owner:
                    raise SourceError(f"duplicate image id {image_id!r}: in {owner[image_id]} and "
                                      f"{parsed.path} (two files with the same task name?)")
                owner[image_id] = parsed.path
                path, tried = resolve_image(images_dir, image.name)
                if path is None:
                    collector.missing(tried, len(image.boxes))
                else:
                    collector.add(parsed, image, path)
    return collector.finish(len(parsed_files))


def _examples(items: list[str]) -> str:
    more = f" (+{len(items) - _MAX_EXAMPLES} more)" if len(items) > _MAX_EXAMPLES else ""
    return "; ".join(items[:_MAX_EXAMPLES]) + more


def _log_summary(n_files: int, records: list[ImageRecord], skipped: list[SkippedImage],
                 stats: _Stats) -> None:
    n_boxes = sum(len(r.boxes) for r in records)
    n_empty = sum(1 for r in records if not len(r.boxes))
    logger.info("loaded %d images (%d without boxes) with %d boxes from %d annotation file(s)",
                len(records), n_empty, n_boxes, n_files)
    if skipped:
        logger.warning("skipped %d image(s): %s", len(skipped),
                       _examples([f"{s.path}: {s.reason}" for s in skipped]))
    if stats.empty_files:
        logger.warning("%d annotation file(s) hold no images: %s", len(stats.empty_files),
                       _examples(stats.empty_files))
    if stats.dropped_boxes:
        more = stats.dropped_boxes - len(stats.dropped_examples)
        logger.warning("dropped %d degenerate box(es) (outside the image, or narrower or lower than %g px "
                       "after clipping to it); %d boxes kept; e.g. %s%s", stats.dropped_boxes, MIN_BOX_SIZE, n_boxes,
                       "; ".join(stats.dropped_examples), f" (+{more} more)" if more > 0 else "")
    if stats.label_dropped:
        logger.info("dropped %d box(es) whose label maps to nothing in label_map", stats.label_dropped)
    if stats.empty_left_out:
        logger.info("left out %d frame(s) without boxes (keep_empty is off)", stats.empty_left_out)
    if stats.size_mismatch:
        logger.warning("%d image(s) differ in size from their annotation (using the real size; "
                       "swapped width/height usually means EXIF rotation): %s",
                       len(stats.size_mismatch), _examples(stats.size_mismatch))
    if stats.ignored:
        logger.warning("ignored non-box shapes: %s",
                       ", ".join(f"{k}={v}" for k, v in sorted(stats.ignored.items())))
