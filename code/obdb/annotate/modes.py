"""The modes that run the model (annotate a folder, annotate tasks, find missing annotations) and
the job status mode. Each returns one :class:`~obdb.cvat.plan.TaskPlan` per task, applied
unless ``options.dry_run``; a task is finished (planned and written) before the next one starts,
so a failure on one task leaves the earlier ones done.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .. import cvat as cvat_tasks
from ..cvat import (AnnotateError, CvatSession, NamedShape, RunOptions, TaskInfo, TaskPlan, auto_shapes, check_target,
                    find_task_by_name, finish, label_definitions, plan_for_files, plan_update)
from ..imageio import probe_image
from ..sources.truth import attribute_values, is_ground_truth
from .candidates import frame_boxes, missing_candidates
from .function import Detections, ModelDetectionFunction


log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


def folder_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    if not folder.is_dir():
        raise AnnotateError(f"{folder}: not a folder")
    images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise AnnotateError(f"{folder}: holds no images ({', '.join(IMAGE_SUFFIXES)})")
    return images


def select_tasks(session: CvatSession, names: Sequence[str] = (), pattern: str | None = None) -> list[TaskInfo]:
    """Tasks by exact names and/or an fnmatch ``pattern``; a name that matches nothing is an
    error (a typo must not silently annotate fewer tasks than asked)."""
    if not names and not pattern:
        raise AnnotateError("name the tasks: --name NAME (repeatable) and/or --pattern GLOB")
    chosen: dict[int, TaskInfo] = {}
    if names:
        found = cvat_tasks.list_tasks(session, names=list(names))
        missing = sorted(set(names) - {t.name for t in found})
        if missing:
            raise AnnotateError(f"no CVAT task named {', '.join(repr(n) for n in missing)}")
        chosen.update((t.id, t) for t in found)
    if pattern:
        matched = cvat_tasks.list_tasks(session, pattern=pattern)
        if not matched:
            raise AnnotateError(f"no CVAT task name matches the pattern {pattern!r}")
        chosen.update((t.id, t) for t in matched)
    return [chosen[i] for i in sorted(chosen)]


def annotate_folder(session: CvatSession, function: ModelDetectionFunction, folder: Path, options: RunOptions,
                    *, name: str | None = None) -> list[TaskPlan]:
    """Mode 1: a task of the folder's images (labels from the model's class map, each with the
    review attributes) with the predictions as auto shapes. Run again, it finds the task by name
    and adds only what is missing (with ``replace``: refreshes the unreviewed auto shapes).

    The target is checked before predicting, and a task still to be made is created (or an empty
    leftover of an interrupted run filled) *before* predicting: a creation cut off costs no
    prediction, and the rerun reuses what it left."""
    images, skipped = usable_images(folder_images(folder))
    task_name = name or folder.resolve().name
    if not images:
        raise AnnotateError(f"{folder}: none of its {len(skipped)} image(s) can be read: {skip_note(skipped)}")
    labels = label_definitions(function.label_names)
    task = find_task_by_name(session, task_name)
    if task is not None:
        check_target(task, function.label_names)
    created: TaskPlan | None = None
    if not options.dry_run and (task is None or task.size == 0):
        created = finish(session, plan_for_files(session, task_name, images, labels, [], task=task), options)
        assert created.task_id is not None
        task = cvat_tasks.get_task(session, created.task_id)
    detections = function.predict_images(images, desc=f"predict {task_name}")
    proposed = [shape for i, found in enumerate(detections) for shape in auto_shapes(i, found)]
    plan = plan_for_files(session, task_name, images, labels, proposed, replace=options.replace, task=task)
    if created is not None:
        plan.backup = False  # made (or filled) by this run: nothing of anyone's to back up
    if skipped:
        plan.notes.append(f"left out {len(skipped)} image(s) that cannot be read: {skip_note(skipped)}")
    plan = finish(session, plan, options)
    if created is not None:
        plan.create = True
        plan.notes[:0] = created.notes
    return [plan]


def usable_images(paths: Sequence[Path]) -> tuple[list[Path], list[tuple[str, str]]]:
    """The images that decode, and ``(name, reason)`` for each that does not (empty, not an
    image, truncated, too large to open safely, a pixel mode with no RGB form). One bad file must
    not stop a folder of good ones, and it is left out the same way on every rerun."""
    kept, skipped = [], []
    for path in paths:
        size = probe_image(path)
        if isinstance(size, str):
            log.warning("%s: left out: %s", path, size)
            skipped.append((path.name, size))
        else:
            kept.append(path)
    return kept, skipped


def skip_note(skipped: Sequence[tuple[str, str]], examples: int = 5) -> str:
    """``name: reason`` for the first few skipped images, and how many more there are."""
    shown = "; ".join(f"{name}: {reason}" for name, reason in skipped[:examples])
    return shown + (f" (+{len(skipped) - examples} more)" if len(skipped) > examples else "")


@dataclass
class TaskPredictions:
    """Detections per frame of one task, and the frames left out because they did not decode
    (``(frame, reason)``: a damaged upload must not cost the other frames their predictions)."""

    found: list[tuple[int, Detections]]
    undecodable: list[tuple[int, str]]

    @property
    def skipped_frames(self) -> set[int]:
        return {frame for frame, _ in self.undecodable}

    def note(self) -> str | None:
        if not self.undecodable:
            return None
        return (f"left out {len(self.undecodable)} frame(s) that cannot be decoded (their shapes are kept): "
                f"{frames_note(self.undecodable)}")


def frames_note(undecodable: Sequence[tuple[int, str]]) -> str:
    return skip_note([(f"frame {frame}", reason) for frame, reason in undecodable])


def _predict_task(session: CvatSession, function: ModelDetectionFunction, task: TaskInfo,
                  threshold: float | None = None) -> TaskPredictions:
    frames = cvat_tasks.task_frames(session, task.id)
    loaders: list[Callable[[], bytes]] = [
        (lambda index=f.index: cvat_tasks.download_frame(session, task.id, index)) for f in frames]
    undecodable: list[tuple[int, str]] = []
    found = function.predict_images(loaders, threshold=threshold, desc=f"predict {task.name}", undecodable=undecodable)
    bad = [(frames[position].index, reason) for position, reason in undecodable]
    if frames and len(bad) == len(frames):
        raise AnnotateError(f"task {task.name!r} (id {task.id}): none of its {len(frames)} frame(s) can be decoded: "
                            f"{frames_note(bad)}; check the task's files in CVAT")
    skipped = {position for position, _ in undecodable}
    return TaskPredictions([(f.index, d) for position, (f, d) in enumerate(zip(frames, found))
                            if position not in skipped],
                           bad)


def with_note(plan: TaskPlan, note: str | None) -> TaskPlan:
    if note:
        plan.notes.append(note)
    return plan


def checked_targets(session: CvatSession, function: ModelDetectionFunction, names: Sequence[str],
                    pattern: str | None) -> list[TaskInfo]:
    """The chosen tasks, each checked before any is predicted: an empty task (no images, e.g. left
    by an interrupted ``folder`` run) or one without the model's labels stops the run."""
    chosen = select_tasks(session, names, pattern)
    empty = [t for t in chosen if t.size == 0]
    if empty:
        raise AnnotateError(f"task(s) {', '.join(f'{t.name!r} (id {t.id})' for t in empty)} hold no images, probably "
                            f"left by a task creation that was cut off: rerun the `folder` command that made them "
                            f"(it fills an empty task of its name), or delete them in CVAT")
    for task in chosen:
        check_target(task, function.label_names)
    return chosen


def annotate_tasks(session: CvatSession, function: ModelDetectionFunction, options: RunOptions, *,
                   names: Sequence[str] = (), pattern: str | None = None) -> list[TaskPlan]:
    """Mode 2: predictions added to existing tasks (one task: a rerun on it)."""
    plans = []
    for task in checked_targets(session, function, names, pattern):
        predictions = _predict_task(session, function, task)
        proposed = [s for frame, found in predictions.found for s in auto_shapes(frame, found)]
        annotations = cvat_tasks.get_annotations(session, task.id)
        plan = plan_update(task, annotations, proposed, replace=options.replace, keep_frames=predictions.skipped_frames)
        plans.append(finish(session, with_note(plan, predictions.note()), options))
    return plans


def ground_truth(annotations: dict, task: TaskInfo) -> dict[int, np.ndarray]:
    """Boxes per frame of the ground truth (shapes and track frames people made, and proposals a
    person accepted: :func:`obdb.sources.truth.is_ground_truth`)."""
    objects = cvat_tasks.expand_tracks(annotations, task.size)  # shapes, and tracks frame by frame
    names = {a["id"]: a["name"] for spec in task.label_specs for a in spec.get("attributes") or [] if "id" in a}
    return frame_boxes(s for s in objects
                       if is_ground_truth(s.get("source"), attribute_values(s.get("attributes"), names)))


def find_missing(session: CvatSession, function: ModelDetectionFunction, options: RunOptions, *,
                 min_score: float, max_iou: float, names: Sequence[str] = (),
                 pattern: str | None = None) -> list[TaskPlan]:
    """Mode 5: on ground-truth tasks, add the predictions with ``score >= min_score`` whose IoU
    with every human box of their frame is ``< max_iou``, as auto shapes to review."""
    if not 0.0 <= max_iou <= 1.0:
        raise AnnotateError(f"IoU limit must be within [0, 1], got {max_iou}")
    plans = []
    empty = np.zeros((0, 4))
    for task in checked_targets(session, function, names, pattern):
        annotations = cvat_tasks.get_annotations(session, task.id)
        gt = ground_truth(annotations, task)
        proposed: list[NamedShape] = []
        filtered = 0
        predictions = _predict_task(session, function, task, threshold=min_score)
        for frame, found in predictions.found:
            candidates = missing_candidates(found, gt.get(frame, empty), min_score=min_score, max_iou=max_iou)
            filtered += len(found) - len(candidates)
            proposed.extend(auto_shapes(frame, candidates))
        plan = plan_update(task, annotations, proposed, replace=options.replace, filtered=filtered,
                           keep_frames=predictions.skipped_frames)
        plans.append(finish(session, with_note(plan, predictions.note()), options))
    return plans


def set_status(session: CvatSession, options: RunOptions, *, state: str | None = None, stage: str | None = None,
               names: Sequence[str] = (), pattern: str | None = None) -> list[TaskPlan]:
    """Mode 6: every job of the chosen tasks to ``state`` and/or ``stage``."""
    if state is None and stage is None:
        raise AnnotateError("give --state and/or --stage")
    change = {k: v for k, v in (("state", state), ("stage", stage)) if v is not None}
    plans = []
    for task in select_tasks(session, names, pattern):
        plan = TaskPlan(task.name, task.id, frames=task.size, job_state=change)
        plan.notes.append(f"jobs: {', '.join(f'{k}={v}' for k, v in change.items())} (task status was {task.status})")
        plans.append(finish(session, plan, options))
    return plans
