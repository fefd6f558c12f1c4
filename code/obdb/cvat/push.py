"""Plan and apply writes of shapes to CVAT tasks, under one set of safety rules: the public write
path of ``auto_annotate`` (:mod:`obdb.annotate`) and of ``obdb review --push`` (:mod:`obdb.review`).

* Without ``replace`` no existing shape is ever deleted or modified: plans only add.
* With ``replace`` only shapes with ``source == "auto"`` whose review attribute is still
  ``unreviewed`` (or absent) may be deleted; a reviewed auto shape (accepted / rejected) is a
  human decision and stays. Human shapes (``manual``, ``semi-auto``, anything not ``auto``) and
  tracks are never touched.
* Before the first write to an existing task its annotations are exported to
  ``<out>/backups/`` (see :func:`obdb.cvat.writes.backup_annotations`).
* A proposed shape equal to one already in the task is not added (:mod:`.dedupe`), so a rerun
  after a failure part-way through a chunked upload adds exactly the rest.
* ``dry_run`` builds the same plans from reads only and writes nothing, neither to CVAT nor to
  the output folder.
* The target task is checked before anything slow (predicting, uploading) starts: several of one
  name, or a task without any of the labels to write, stop the run. An *empty* task of the name
  (no images: the leftover of a creation cut off before its data arrived) is reused: its images
  are uploaded into it, so the advice after a fault, "rerun the same command", holds.
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Collection, Sequence

from . import tasks as cvat_tasks
from . import writes as cvat_writes
from .connection import CvatSession
from .tasks import TaskInfo
from .dedupe import AUTO, ShapeIndex
from .errors import AnnotateError
from .plan import TaskPlan
from .review import ACCEPTED, REJECTED, REVIEW, missing_review_attributes, review_state, stale_review_spec
from .shapes import NamedShape, frame_lookup, resolve_shapes

log = logging.getLogger(__name__)


@dataclass
class RunOptions:
    """What every mode shares: where backups go, and the safety switches."""

    out_dir: Path
    dry_run: bool = False
    replace: bool = False
    chunk_size: int = 2000
    progress: bool = True

    @property
    def backup_dir(self) -> Path:
        return self.out_dir / "backups"


# --- planning ----------------------------------------------------------------------------------
def _light(shape: NamedShape, label_id: int) -> dict[str, Any]:
    return {"type": shape["type"], "frame": shape["frame"], "label_id": label_id, "points": shape["points"]}


def _spec_by_id(task: TaskInfo) -> dict[int, dict[str, Any]]:
    return {int(spec["id"]): spec for spec in task.label_specs}


def is_replaceable(shape: dict[str, Any], label_spec: dict[str, Any] | None) -> bool:
    """An auto shape nobody has reviewed yet: the only kind ``--replace`` may delete."""
    return shape.get("source") == AUTO and review_state(shape, label_spec) not in (ACCEPTED, REJECTED)


def plan_update(task: TaskInfo, annotations: dict[str, Any], proposed: Sequence[NamedShape], *,
                replace: bool = False, filtered: int = 0, keep_frames: Collection[int] = ()) -> TaskPlan:
    """What writing ``proposed`` (frames = this task's frames) to an existing task changes.
    ``replace`` leaves the shapes of ``keep_frames`` alone (frames that were not predicted)."""
    plan = TaskPlan(task.name, task.id, frames=task.size, filtered=filtered)
    specs = _spec_by_id(task)
    label_ids = {spec["name"]: int(spec["id"]) for spec in task.label_specs}
    existing = cvat_tasks.expand_tracks(annotations, task.size)  # shapes, and tracks frame by frame
    removable = {int(s["id"]): s for s in annotations.get("shapes") or []
                 if replace and int(s["frame"]) not in keep_frames and is_replaceable(s, specs.get(int(s["label_id"])))}
    index = ShapeIndex(s for s in existing if "track_id" in s or int(s["id"]) not in removable)
    old_auto = ShapeIndex(removable.values())
    unknown: Counter[str] = Counter()
    for shape in proposed:
        label_id = label_ids.get(shape["label"])
        if label_id is None:
            unknown[shape["label"]] += 1
            continue
        light = _light(shape, label_id)
        if index.find(light) is not None:
            plan.duplicates += 1
            continue
        same_old = old_auto.find(light)
        if same_old is not None:  # replace would delete and re-add the same box: keep it instead
            removable.pop(int(same_old["id"]), None)
            index.add(same_old)
            plan.duplicates += 1
            continue
        index.add(light)
        plan.shapes.append(shape)
    plan.delete_ids = sorted(int(s["id"]) for s in removable.values())
    plan.replaced = len(plan.delete_ids)
    plan.added = len(plan.shapes)
    plan.kept = len(existing) - plan.replaced
    if unknown:
        plan.notes.append(f"skipped {sum(unknown.values())} shape(s) of labels the task does not have: "
                          f"{dict(sorted(unknown.items()))}")
    stale = [spec["name"] for spec in task.label_specs if stale_review_spec(spec) is not None]
    if stale:
        plan.notes.append(f"label(s) {', '.join(stale)} still have the old review default 'unreviewed', so CVAT shows "
                          f"human shapes as unreviewed: run `auto_annotate.py fix-review --name {task.name!r}`")
    if any(REVIEW in s["attributes"] for s in plan.shapes):
        used = {label_ids[s["label"]] for s in plan.shapes}
        for label_id in sorted(used):
            try:
                missing = missing_review_attributes(specs[label_id])
            except ValueError as err:
                raise AnnotateError(f"task {task.name!r} (id {task.id}): {err}") from err
            if missing:
                plan.label_patches[label_id] = missing
        if plan.label_patches:
            names = ", ".join(specs[i]["name"] for i in plan.label_patches)
            plan.notes.append(f"adds the review/score attribute specs to label(s): {names}")
    return plan


def plan_create(name: str, images: Sequence[Path], labels: Sequence[dict[str, Any]],
                proposed: Sequence[NamedShape]) -> TaskPlan:
    """A task to create: ``proposed`` frames are positions in ``images``."""
    frame_lookup(((i, str(p)) for i, p in enumerate(images)), f"task {name!r}")  # refuse ambiguous names now
    plan = TaskPlan(name, None, create=True, frames=len(images), added=len(proposed))
    plan.shapes, plan.labels, plan.images = list(proposed), list(labels), list(images)
    return plan


def find_task_by_name(session: CvatSession, name: str) -> TaskInfo | None:
    """The task of that exact name, ``None`` if there is none; several are an error (a write
    must never guess which one is meant)."""
    found = [t for t in cvat_tasks.list_tasks(session, names=[name]) if t.name == name]
    if len(found) > 1:
        raise AnnotateError(f"{len(found)} tasks are named {name!r} (ids {', '.join(str(t.id) for t in found)}); "
                            f"rename all but one in CVAT, or use another name")
    return found[0] if found else None


def check_target(task: TaskInfo, label_names: Sequence[str], *, review: bool = True) -> None:
    """Refuse, before any prediction, a task that cannot take shapes of ``label_names``: one with
    none of those labels, or (``review``: shapes with review attributes) one whose review
    attribute is of another kind."""
    have = {spec["name"] for spec in task.label_specs}
    if task.label_specs and not have & set(label_names):
        raise AnnotateError(f"task {task.name!r} (id {task.id}) has none of the labels {sorted(label_names)} "
                            f"(it has {sorted(have)}); nothing could be written to it")
    for spec in task.label_specs if review else []:
        if spec["name"] in label_names:
            try:
                missing_review_attributes(spec)
            except ValueError as err:
                raise AnnotateError(f"task {task.name!r} (id {task.id}): {err}") from err


def plan_reuse(task: TaskInfo, images: Sequence[Path], labels: Sequence[dict[str, Any]],
               proposed: Sequence[NamedShape]) -> TaskPlan:
    """An empty leftover task of the name gets the images, then the shapes, as a new one would."""
    plan = plan_create(task.name, images, labels, proposed)
    plan.task_id = task.id
    plan.notes.append(f"reuses the empty task {task.id} (left by a creation that was cut off): uploads its images")
    wanted = {label["name"]: label for label in labels}
    if any(REVIEW in s["attributes"] for s in proposed):
        for spec in task.label_specs:
            if spec["name"] in wanted:
                missing = missing_review_attributes(spec)
                if missing:
                    plan.label_patches[int(spec["id"])] = missing
    return plan


def plan_for_files(session: CvatSession, name: str, images: Sequence[Path], labels: Sequence[dict[str, Any]],
                   proposed: Sequence[NamedShape], *, replace: bool = False,
                   task: TaskInfo | None | bool = False) -> TaskPlan:
    """Plan for shapes on local ``images``: a new task, an empty leftover of that name filled, or
    (a rerun) the existing task of that name, whose frames are matched to the files by file name.
    ``task``: the task of that name when the caller looked it up already (``None``: there is none)."""
    if task is False:
        task = find_task_by_name(session, name)
    if task is None:
        return plan_create(name, images, labels, proposed)
    assert isinstance(task, TaskInfo)
    check_target(task, [label["name"] for label in labels], review=any(REVIEW in s["attributes"] for s in proposed))
    if task.size == 0:
        return plan_reuse(task, images, labels, proposed)
    frames = cvat_tasks.task_frames(session, task.id)
    lookup = frame_lookup(((f.index, f.name) for f in frames), f"task {name!r}")
    position_to_frame = {i: lookup.get(Path(p).name) for i, p in enumerate(images)}
    missing = [Path(images[i]).name for i, f in position_to_frame.items() if f is None]
    moved = [{**s, "frame": position_to_frame[s["frame"]]} for s in proposed
             if position_to_frame.get(s["frame"]) is not None]
    plan = plan_update(task, cvat_tasks.get_annotations(session, task.id), moved, replace=replace)
    if missing:
        plan.notes.append(f"{len(missing)} image(s) are not in the existing task and get no shapes (CVAT cannot "
                          f"add images to a task), e.g. {', '.join(missing[:3])}")
    return plan


# --- applying ----------------------------------------------------------------------------------
def _label_specs(session: CvatSession, task_id: int) -> list[dict[str, Any]]:
    return list(cvat_tasks.get_task(session, task_id).label_specs)


def apply_plan(session: CvatSession, plan: TaskPlan, options: RunOptions) -> TaskPlan:
    """Carry out ``plan`` (never called for a dry run). Order: backup, create or patch labels,
    delete replaced auto shapes, add shapes in chunks, job states. A failure leaves every write
    before it complete, and the same command plans only what is left."""
    if options.dry_run:
        raise RuntimeError("apply_plan called in a dry run")
    if not plan.writes:
        return plan
    if plan.create:
        if plan.task_id is None:
            task = cvat_writes.create_task(session, plan.name, plan.labels, plan.images, progress=options.progress)
        else:  # an empty leftover of the same name
            for label_id, attributes in plan.label_patches.items():
                cvat_writes.add_label_attributes(session, label_id, attributes)
            task = cvat_writes.fill_task(session, plan.task_id, plan.images, progress=options.progress)
        plan.task_id = task.id
        frames = cvat_tasks.task_frames(session, task.id)
        lookup = frame_lookup(((f.index, f.name) for f in frames), f"task {plan.name!r}")
        position_to_frame = {i: lookup[Path(p).name] for i, p in enumerate(plan.images)}
        shapes = [{**s, "frame": position_to_frame[s["frame"]]} for s in plan.shapes]
        label_specs = list(task.label_specs)
    else:
        assert plan.task_id is not None
        if plan.backup:
            path = cvat_writes.backup_annotations(session, plan.task_id, options.backup_dir)
            plan.notes.append(f"backup: {path}")
        if plan.label_patches:
            for label_id, attributes in plan.label_patches.items():
                cvat_writes.add_label_attributes(session, label_id, attributes)
        label_specs = _label_specs(session, plan.task_id)
        if plan.delete_ids:
            cvat_writes.delete_shapes(session, plan.task_id, plan.delete_ids)
        shapes = plan.shapes
    resolved, unmapped = resolve_shapes(shapes, label_specs)
    if unmapped:
        plan.notes.append(f"values of attributes the task's labels do not define were left out: {dict(unmapped)}")
    if resolved:
        cvat_writes.add_shapes(session, plan.task_id, resolved, chunk_size=options.chunk_size)
    if plan.job_state:
        cvat_writes.set_jobs_state(session, plan.task_id, **plan.job_state)
    return plan


def finish(session: CvatSession, plan: TaskPlan, options: RunOptions) -> TaskPlan:
    """Apply ``plan`` unless this is a dry run; the plan either way (for the table)."""
    if not options.dry_run:
        apply_plan(session, plan, options)
    return plan
