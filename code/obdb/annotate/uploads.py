"""Ground truth to CVAT: one task per annotation task of a data set (mode 3) or per CVAT for
images 1.1 XML file (mode 4), with the images and every shape.

A task that already exists under the target name is a rerun: its frames are matched to the files
by name and only shapes not already there are added, so an upload cut off part-way finishes on
the next run instead of doubling what was written.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ..cvat import AnnotateError, CvatSession, NamedShape, RunOptions, TaskPlan, finish, named_shape, plan_for_files
from ..imageio import probe_image
from ..paths import PathOutsideRoot, is_inside, resolve_inside
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


def checked_image(root: Path | None, path: Path) -> str | None:
    """Why ``path`` must not be uploaded (outside ``root``, symlinks resolved; not a decodable
    image), or None. Containment is checked first, so the bytes of a file outside the data root
    are never read."""
    if root is not None and not is_inside(root, path):
        return f"outside the data root {root}"
    size = probe_image(path)
    return size if isinstance(size, str) else None


def _usable_records(group: Sequence[ImageRecord], roots: Sequence[Path]) -> tuple[list[ImageRecord], list[str]]:
    kept, skipped = [], []
    for record in group:
        reason = None
        if roots and not any(is_inside(root, record.path) for root in roots):
            reason = f"outside the data root ({', '.join(map(str, roots))})"
        elif record.path.is_file():
            reason = checked_image(None, record.path)
        if reason:
            log.warning("%s: not uploaded: %s", record.path, reason)
            skipped.append(f"{record.path.name}: {reason}")
        else:
            kept.append(record)
    return kept, skipped


def upload_records(session: CvatSession, records: Sequence[ImageRecord], labels: Sequence[str],
                   options: RunOptions, *, prefix: str = "", roots: Sequence[Path] = ()) -> list[TaskPlan]:
    """Mode 3: records (from any source) as ground-truth tasks named ``prefix + task``.

    Only decodable images inside one of ``roots`` (the data set's image folders) are uploaded;
    others are left out with a count and examples in the task's notes."""
    if not records:
        raise AnnotateError("no images to upload")
    plans = []
    label_requests = [{"name": name} for name in labels]
    for task, group in records_by_task(records).items():
        group, refused = _usable_records(group, [Path(r) for r in roots])
        missing = [str(r.path) for r in group if not r.path.is_file()]
        if missing:
            raise AnnotateError(f"task {task!r}: {len(missing)} image file(s) not found, e.g. {missing[0]}")
        if not group:
            raise AnnotateError(f"task {task!r}: no image can be uploaded: {_examples(refused)}")
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
        if refused:
            plan.notes.append(f"left out {len(refused)} image(s): {_examples(refused)}")
        plans.append(finish(session, plan, options))
    return plans


def _examples(items: Sequence[str], count: int = 5) -> str:
    return "; ".join(items[:count]) + (f" (+{len(items) - count} more)" if len(items) > count else "")


def _find_image(images_dir: Path, name: str) -> Path | None:
    """The file an XML image name stands for, inside ``images_dir`` (the name as written, else its
    base name); :class:`PathOutsideRoot` when the name leads out of the folder."""
    primary = resolve_inside(images_dir, name)
    base = Path(name.replace("\\", "/")).name
    candidates = [primary] + ([resolve_inside(images_dir, base)] if base and base != name else [])
    return next((p for p in candidates if p.is_file()), None)


def _image_paths(task: XmlTask, images_dir: Path) -> tuple[XmlTask, list[Path], list[str]]:
    """The task reduced to the images that can be uploaded, their files, and ``name: reason`` for
    the images left out (a name leading outside ``images_dir`` — ``..``, absolute, a symlink out —
    or a file that is not a decodable image). Names outside the folder are refused before any
    file is opened. A missing image stops the run, as before."""
    paths, kept, missing, refused = [], [], [], []
    for image in task.images:
        try:
            found = _find_image(images_dir, image.name)
        except PathOutsideRoot:
            refused.append(f"{image.name!r}: outside the image folder {images_dir}")
            continue
        if found is None:
            missing.append(image.name)
            continue
        reason = checked_image(images_dir, found)
        if reason:
            refused.append(f"{image.name!r}: {reason}")
            continue
        paths.append(found)
        kept.append(image)
    if missing:
        raise AnnotateError(f"{task.path}: {len(missing)} image(s) not found under {images_dir}, "
                            f"e.g. {', '.join(missing[:3])}")
    for line in refused:
        log.warning("%s: image %s: not uploaded", task.path, line)
    if not kept:
        raise AnnotateError(f"{task.path}: no image can be uploaded: {_examples(refused)}")
    return replace(task, images=kept), paths, refused


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
    work = [_image_paths(task, images_dir) for task in parsed]
    plans = []
    for task, paths, refused in work:
        plan = plan_for_files(session, prefix + task.name, paths, [label.to_request() for label in task.labels],
                              xml_shapes(task))
        if task.ignored:
            plan.notes.append(f"not uploaded (unsupported kinds): {dict(task.ignored)}")
        if refused:
            plan.notes.append(f"left out {len(refused)} image(s) and their shapes: {_examples(refused)}")
        plans.append(finish(session, plan, options))
    return plans
