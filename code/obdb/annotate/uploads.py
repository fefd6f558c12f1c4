"""Ground truth to CVAT: one task per annotation task of a data set (mode 3) or per CVAT for
images 1.1 XML file (mode 4), with the images and every shape.

A task that already exists under the target name is a rerun: its frames are matched to the files
by name and only shapes not already there are added, so an upload cut off part-way finishes on
the next run instead of doubling what was written.
"""
from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path
from typing import Sequence

from ..cvat import AnnotateError, CvatSession, NamedShape, RunOptions, TaskPlan, finish, named_shape, plan_for_files
from ..records import ImageRecord
from .xml_tasks import XmlTask, read_xml_task

log = logging.getLogger(__name__)


def records_by_task(records: Sequence[ImageRecord]) -> dict[str, list[ImageRecord]]:
    """Records grouped by their task (annotation file / CVAT task / Mongo task), each group in
    frame order (then name), groups in order of first appearance."""
    groups: dict[str, list[ImageRecord]] = {}
    for record in records:
        groups.setdefault(record.task or record.group or "images", []).append(record)
    for group in groups.values():
        group.sort(key=lambda r: (r.frame is None, r.frame if r.frame is not None else 0, r.path.name))
    return groups


def upload_records(session: CvatSession, records: Sequence[ImageRecord], labels: Sequence[str],
                   options: RunOptions, *, prefix: str = "") -> list[TaskPlan]:
    """Mode 3: records (from any source) as ground-truth tasks named ``prefix + task``."""
    if not records:
        raise AnnotateError("no images to upload")
    plans = []
    label_requests = [{"name": name} for name in labels]
    for task, group in records_by_task(records).items():
        missing = [str(r.path) for r in group if not r.path.is_file()]
        if missing:
            raise AnnotateError(f"task {task!r}: {len(missing)} image file(s) not found, e.g. {missing[0]}")
        proposed: list[NamedShape] = []
        unknown: Counter[str] = Counter()
        for position, record in enumerate(group):
            for box, label in zip(record.boxes, record.labels):
                if label not in labels:
                    unknown[label] += 1
                    continue
                proposed.append(named_shape("rectangle", position, label, box, source="manual"))
        plan = plan_for_files(session, prefix + task, [r.path for r in group], label_requests, proposed)
        if unknown:
            plan.notes.append(f"left out boxes of labels outside the label list: {dict(unknown)}")
        plans.append(finish(session, plan, options))
    return plans


def _image_paths(task: XmlTask, images_dir: Path) -> list[Path]:
    paths, missing = [], []
    for image in task.images:
        candidates = [images_dir / image.name, images_dir / Path(image.name).name]
        found = next((p for p in candidates if p.is_file()), None)
        if found is None:
            missing.append(image.name)
        else:
            paths.append(found)
    if missing:
        raise AnnotateError(f"{task.path}: {len(missing)} image(s) not found under {images_dir}, "
                            f"e.g. {', '.join(missing[:3])}")
    return paths


def xml_shapes(task: XmlTask) -> list[NamedShape]:
    """Every shape of the file, frames = positions of its images."""
    return [named_shape(s.type, position, s.label, s.points, source=s.source, occluded=s.occluded,
                        z_order=s.z_order, rotation=s.rotation, group=s.group, attributes=s.attributes)
            for position, image in enumerate(task.images) for s in image.shapes]


def upload_xml(session: CvatSession, files: Sequence[Path], images_dir: Path, options: RunOptions, *,
               prefix: str = "") -> list[TaskPlan]:
    """Mode 4: each CVAT for images 1.1 file as a task (name from its ``<meta>``, else the file
    name) with its labels, attribute specs and shapes. All files are read and checked before
    the first task is created, so a bad file stops the run with nothing written."""
    parsed = [read_xml_task(path) for path in files]
    names = Counter(prefix + t.name for t in parsed)
    twice = [n for n, c in names.items() if c > 1]
    if twice:
        raise AnnotateError(f"several files name the same task: {', '.join(map(repr, twice))}; give each file its "
                            f"own <meta><task><name> or upload them separately with --prefix")
    work = [(task, _image_paths(task, images_dir)) for task in parsed]
    plans = []
    for task, paths in work:
        plan = plan_for_files(session, prefix + task.name, paths, [label.to_request() for label in task.labels],
                              xml_shapes(task))
        if task.ignored:
            plan.notes.append(f"not uploaded (unsupported kinds): {dict(task.ignored)}")
        plans.append(finish(session, plan, options))
    return plans
