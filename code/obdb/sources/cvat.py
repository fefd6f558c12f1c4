"""CVAT source: train straight from CVAT tasks (``data.source = "cvat"``), through a local cache.

Each task of ``annotations_list`` (exact names) is kept under
``<cache_dir>/<task id>-<safe name>/``: its frames as ``frames/<frame:06d><ext>`` (the original
uploaded bytes) and ``task.json`` (labels, frame list, annotations, CVAT's ``updated_date``),
written last, atomically, so a cache entry is either complete or absent. A task whose
``updated_date`` did not change is not downloaded again; frames already cached are never
downloaded twice (a CVAT task's images cannot change). With ``data.cvat.offline`` only the cache
is read and no server is needed.

Shapes become boxes as in a CVAT XML export read by the local source: rectangles (rotated ones
as their enclosing box), polygons and ellipses as their bounding box, other types ignored with a
count; tracks are expanded to per-frame boxes. So a CVAT run and a run on exported files of the
same tasks see the same records.

Model proposals (``source`` ``auto``) are left out unless a person accepted them
(``data.cvat.include_auto``, see :mod:`obdb.sources.truth`); how many is logged.
"""
from __future__ import annotations

import json
import logging
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tqdm.auto import tqdm

from obdb.errors import ServiceUnavailable
from obdb.fileio import atomic_path, write_json
from obdb.records import AnnotationSet
from obdb.settings.schema import CvatSettings, Settings
from obdb.sources.base import SourceError
from obdb.sources.formats import ParsedBox, ParsedFile, ParsedImage, bbox_of_points, rotated_rect_bbox
from obdb.sources.local import RecordCollector
from obdb.sources.truth import attribute_values, is_ground_truth

logger = logging.getLogger(__name__)

CACHE_FORMAT = "obdb-cvat-cache"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:80] or "task"


def _shape_box(shape: dict[str, Any]) -> tuple[float, float, float, float] | None:
    """Box of one CVAT shape (JSON form), or None when the type cannot become a box."""
    kind, p = shape.get("type"), [float(v) for v in shape.get("points", [])]
    if kind == "rectangle" and len(p) == 4:
        return rotated_rect_bbox(p[0], p[1], p[2], p[3], float(shape.get("rotation") or 0.0))
    if kind == "polygon" and len(p) >= 2:
        return bbox_of_points(zip(p[0::2], p[1::2]))
    if kind == "ellipse" and len(p) == 4:  # [cx, cy, cx + rx, cy - ry]
        cx, cy, rx, ry = p[0], p[1], abs(p[2] - p[0]), abs(p[1] - p[3])
        rad = math.radians(float(shape.get("rotation") or 0.0))
        ex, ey = math.hypot(rx * math.cos(rad), ry * math.sin(rad)), math.hypot(rx * math.sin(rad), ry * math.cos(rad))
        return cx - ex, cy - ey, cx + ex, cy + ey
    return None


def parsed_task(entry: dict[str, Any], folder: Path, include_auto: str = "accepted",
                left_out: Counter[str] | None = None) -> ParsedFile:
    """A cached task as the format-neutral parse result the local source's helpers work on;
    proposals that are not ground truth (``include_auto``) are counted in ``left_out[task]``."""
    from obdb.cvat.tasks import expand_tracks  # pure function; no server involved

    name = entry["name"]
    labels = {spec["id"]: spec["name"] for spec in entry["labels"]}
    attribute_names = {a["id"]: a["name"] for spec in entry["labels"] for a in spec.get("attributes") or []
                       if "id" in a}
    frames = entry["frames"]
    ignored: Counter[str] = Counter()
    images = [ParsedImage(f["name"], i, f["width"], f["height"]) for i, f in enumerate(frames)]
    for shape in expand_tracks(entry["annotations"], len(frames)):
        if not is_ground_truth(shape.get("source"), attribute_values(shape.get("attributes"), attribute_names),
                               include_auto):
            if left_out is not None:
                left_out[name] += 1
            continue
        box = _shape_box(shape)
        if box is None:
            ignored[str(shape.get("type"))] += 1
            continue
        if shape.get("label_id") not in labels:
            raise SourceError(f"{folder / 'task.json'}: task {name!r} frame {shape['frame']}: label id "
                              f"{shape.get('label_id')!r} is not one of the task's labels")
        images[shape["frame"]].boxes.append(ParsedBox(*box, label=labels[shape["label_id"]],
                                                      occluded=bool(shape.get("occluded"))))
    kept = [image for image, frame in zip(images, frames) if not frame.get("deleted")]
    return ParsedFile(path=folder, format="cvat-api", task=name, images=kept, ignored=ignored,
                      labels=list(labels.values()))


class CvatSourceUnavailable(SourceError, ServiceUnavailable):
    """CVAT could not be reached after retries: exit code 3, like the CVAT error it wraps."""

    exit_code = ServiceUnavailable.exit_code


def _source_error(err: Exception) -> SourceError:
    """A CVAT failure as the source's error, keeping its exit code (3 for an unreachable server)."""
    message = f"{err} (data.cvat.offline: true trains on the cached copies)"
    return CvatSourceUnavailable(message) if isinstance(err, ServiceUnavailable) else SourceError(message)


def frame_file(folder: Path, index: int, name: str) -> Path:
    suffix = Path(name).suffix.lower() if re.fullmatch(r"\.[A-Za-z0-9]{1,5}", Path(name).suffix) else ".img"
    return folder / "frames" / f"{index:06d}{suffix}"


def read_entry(folder: Path) -> dict[str, Any] | None:
    path = folder / "task.json"
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        logger.warning("ignoring the unreadable CVAT cache entry %s (%s)", path, err)
        return None
    return entry if isinstance(entry, dict) and entry.get("format") == CACHE_FORMAT else None


def cached_folders(cache_dir: Path, name: str) -> list[tuple[Path, dict[str, Any]]]:
    """Cache entries of the task called exactly ``name`` (newest CVAT ``updated_date`` first)."""
    found = []
    for folder in cache_dir.glob(f"*-{_safe_name(name)}"):
        entry = read_entry(folder)
        if entry is not None and entry.get("name") == name:
            found.append((folder, entry))
    return sorted(found, key=lambda item: item[1]["updated_date"], reverse=True)


@dataclass
class CvatSource:
    """The tasks ``tasks`` of the CVAT server in ``cvat`` (credentials from ``env``)."""

    cvat: CvatSettings
    cache_dir: Path
    tasks: list[str]
    keep_empty: bool = True
    label_map: dict[str, str | None] | None = None
    group_regex: str | None = None
    progress: bool = True
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)

    @classmethod
    def from_settings(cls, settings: Settings, progress: bool = True) -> "CvatSource":
        data = settings.data
        cache = Path(data.cvat.cache_dir) if data.cvat.cache_dir else Path(settings.save_dir) / "cvat_cache"
        return cls(cvat=data.cvat, cache_dir=cache, tasks=list(settings.annotations_list),
                   keep_empty=data.keep_empty, label_map=data.label_map or None, group_regex=data.group_regex,
                   progress=progress)

    def load(self) -> AnnotationSet:
        """Bring the cache up to date (unless offline), then build the records from it."""
        if not self.tasks:
            raise SourceError("data.source is 'cvat' but annotations_list is empty: name the CVAT tasks to use")
        try:
            regex = re.compile(self.group_regex) if self.group_regex else None
        except re.error as err:
            raise SourceError(f"group_regex {self.group_regex!r} is not a valid regular expression: {err}") from None
        names = list(dict.fromkeys(self.tasks))
        folders = self._offline(names) if self.cvat.offline else self._online(names)
        left_out: Counter[str] = Counter()
        parsed = [parsed_task(entry, folder, self.cvat.include_auto, left_out) for folder, entry in folders]
        if left_out:
            logger.info("left out %d model proposal(s) (source auto) that are not ground truth (data.cvat.include_auto"
                        " = %s): %s", sum(left_out.values()), self.cvat.include_auto, dict(left_out))
        return self._records(parsed, regex)

    # ------------------------------------------------------------------ cache

    def _offline(self, names: list[str]) -> list[tuple[Path, dict[str, Any]]]:
        out, missing = [], []
        for name in names:
            found = cached_folders(self.cache_dir, name)
            if found:
                out.append(found[0])
            else:
                missing.append(name)
        if missing:
            raise SourceError(f"data.cvat.offline is set but task(s) {missing} are not in the CVAT cache "
                              f"{self.cache_dir}; run once with offline false to download them")
        return out

    def _online(self, names: list[str]) -> list[tuple[Path, dict[str, Any]]]:
        from obdb.cvat import CvatCredentials, CvatError, connect, list_tasks

        try:
            creds = CvatCredentials.from_env(self.env, url=self.cvat.url)
            with connect(creds, allow_version_mismatch=self.cvat.allow_version_mismatch,
                         retries=self.cvat.retries) as session:
                found = list_tasks(session, names=names, with_labels=False)
                missing = [n for n in names if n not in {t.name for t in found}]
                if missing:
                    raise SourceError(f"CVAT at {session.url} has no task named {missing} (names match exactly)")
                doubles = sorted({t.name for t in found if sum(u.name == t.name for u in found) > 1})
                if doubles:
                    raise SourceError(f"CVAT at {session.url} has several tasks named {doubles}; rename all but one")
                by_name = {t.name: t for t in found}
                return [self._refresh(session, by_name[name]) for name in names]
        except CvatError as err:
            raise _source_error(err) from err

    def _refresh(self, session: Any, task: Any) -> tuple[Path, dict[str, Any]]:
        """The task's cache folder, downloading what changed since it was written."""
        from obdb.cvat import download_frame, get_annotations, task_frames, task_labels

        folder = self.cache_dir / f"{task.id}-{_safe_name(task.name)}"
        updated = task.updated_date.isoformat()
        entry = read_entry(folder)
        stale = entry is None or entry.get("updated_date") != updated or entry.get("name") != task.name
        if stale:
            frames = task_frames(session, task.id)
            entry = {"format": CACHE_FORMAT, "server": session.url, "id": task.id, "name": task.name,
                     "status": task.status, "updated_date": updated, "labels": task_labels(session, task.id),
                     "frames": [{"name": f.name, "width": f.width, "height": f.height, "deleted": f.deleted}
                                for f in frames],
                     "annotations": get_annotations(session, task.id)}
        todo = [(i, f["name"]) for i, f in enumerate(entry["frames"])
                if not f.get("deleted") and not frame_file(folder, i, f["name"]).is_file()]
        for index, name in tqdm(todo, desc=f"downloading {task.name}", unit="frame", disable=not self.progress):
            data = download_frame(session, task.id, index)
            with atomic_path(frame_file(folder, index, name)) as tmp:
                tmp.write_bytes(data)
        if stale or todo:
            write_json(folder / "task.json", entry)  # last: the entry is complete once this exists
        return folder, entry

    # ------------------------------------------------------------------ records

    def _records(self, parsed: list[ParsedFile], regex: re.Pattern[str] | None) -> AnnotationSet:
        collector = RecordCollector(self.label_map, regex, self.keep_empty)
        for task in parsed:
            collector.stats.ignored.update({f"cvat:{k}": v for k, v in task.ignored.items()})
            seen: set[str] = set()
            for image in task.images:
                if image.name in seen:
                    raise SourceError(f"task {task.task!r}: image {image.name!r} appears on two frames")
                seen.add(image.name)
                assert image.frame is not None  # every cached image has its CVAT frame number
                path = frame_file(task.path, image.frame, image.name)
                if path.is_file():
                    collector.add(task, image, path)
                else:
                    collector.skip(path, "frame missing from the CVAT cache")
        return collector.finish(len(parsed))
