"""``auto_annotate.py fix-review``: tasks that got the old ``review`` default (``unreviewed``).

Earlier obdb versions added the ``review`` attribute with the default ``unreviewed``. CVAT shows an
attribute's default on every object of the label that has no value of its own (and CVAT 2.2x
returns it on read), and its UI writes the shown value back when a person saves an object: so
every human shape and tag read as ``unreviewed``, and annotators filtering on that got all the
ground truth. Per task this:

1. sets the default of every label's ``review`` attribute to the neutral ``n/a`` (adding that value);
2. reads the annotations again and rewrites ``review`` to ``n/a`` on every *human* object (source
   not ``auto``: shapes, tags, tracks) that still reads ``unreviewed``, i.e. holds it explicitly.

Model proposals (source ``auto``) keep their value: ``unreviewed`` is right for them. Geometry,
labels and every other attribute stay as they are; the annotations are backed up first, and
``--dry-run`` only counts.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

from ..cvat import tasks as cvat_tasks
from ..cvat import writes as cvat_writes
from ..cvat.connection import CvatSession
from ..cvat.tasks import TaskInfo
from ..sources.truth import is_proposal
from .modes import select_tasks
from .plan import TaskPlan
from .push import RunOptions
from .review import NEUTRAL, REVIEW, UNREVIEWED, stale_review_spec

log = logging.getLogger(__name__)


def _review_ids(label_specs: Sequence[dict[str, Any]]) -> set[int]:
    return {int(a["id"]) for spec in label_specs for a in spec.get("attributes") or []
            if a.get("name") == REVIEW and "id" in a}


def human_unreviewed(annotations: dict[str, Any], review_ids: set[int]) -> dict[str, list[dict[str, Any]]]:
    """The human objects (``source`` not a model's) whose review value reads ``unreviewed``, with
    that value changed to ``n/a`` (ready for a PATCH ``action=update``)."""
    def stale(attributes: list[dict[str, Any]]) -> bool:
        return any(a.get("spec_id") in review_ids and a.get("value") == UNREVIEWED for a in attributes)

    def fixed(attributes: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{**a, "value": NEUTRAL} if a.get("spec_id") in review_ids and a.get("value") == UNREVIEWED else a
                for a in attributes]

    out: dict[str, list[dict[str, Any]]] = {"shapes": [], "tags": [], "tracks": []}
    for key in out:
        for obj in annotations.get(key) or []:
            if is_proposal(obj.get("source")):
                continue
            keyframes = obj.get("shapes") or [] if key == "tracks" else []  # a mutable attribute lives here
            if not stale(obj.get("attributes") or []) and not any(stale(k.get("attributes") or []) for k in keyframes):
                continue
            new = {**obj, "attributes": fixed(obj.get("attributes") or [])}
            if keyframes:
                new["shapes"] = [{**k, "attributes": fixed(k.get("attributes") or [])} for k in keyframes]
            out[key].append(new)
    return out


def fix_task(session: CvatSession, task: TaskInfo, options: RunOptions) -> TaskPlan:
    """One task; the plan's notes say what was (or, in a dry run, would be) changed."""
    plan = TaskPlan(task.name, task.id, frames=task.size)
    stale = {int(spec["id"]): fixed for spec in task.label_specs if (fixed := stale_review_spec(spec)) is not None}
    review_ids = _review_ids(task.label_specs)
    if not review_ids:
        plan.notes.append("no label has a review attribute: nothing to fix")
        return plan
    annotations = cvat_tasks.get_annotations(session, task.id)
    candidates = human_unreviewed(annotations, review_ids)
    count = sum(len(v) for v in candidates.values())
    plan.kept = sum(len(annotations.get(k) or []) for k in ("shapes", "tags", "tracks"))
    if not stale and not count:
        plan.notes.append("review attributes already have the neutral default; no human object reads unreviewed")
        return plan
    names = ", ".join(spec["name"] for spec in task.label_specs if int(spec["id"]) in stale)
    if options.dry_run:
        if stale:
            plan.notes.append(f"would set the review default to {NEUTRAL!r} on label(s): {names}")
        plan.notes.append(f"{count} human object(s) read as unreviewed; those holding it explicitly would get "
                          f"{NEUTRAL!r}")
        return plan
    path = cvat_writes.backup_annotations(session, task.id, options.backup_dir)
    plan.notes.append(f"backup: {path}")
    for label_id, spec in stale.items():
        cvat_writes.update_label_attributes(session, label_id, [spec])
    if stale:
        plan.notes.append(f"review default set to {NEUTRAL!r} on label(s): {names}")
        candidates = human_unreviewed(cvat_tasks.get_annotations(session, task.id), review_ids)  # explicit ones
    fixed = sum(len(v) for v in candidates.values())
    if fixed:
        cvat_writes.update_objects(session, task.id, candidates, chunk_size=options.chunk_size)
    plan.notes.append(f"review set to {NEUTRAL!r} on {fixed} human object(s) that held 'unreviewed'")
    log.info("task %r: review default fixed on %d label(s), %d human object(s) rewritten", task.name, len(stale),
             fixed)
    return plan


def fix_review(session: CvatSession, options: RunOptions, *, names: Sequence[str] = (),
               pattern: str | None = None) -> list[TaskPlan]:
    """``fix_task`` for every chosen task (exact names and/or a glob; unknown names are an error)."""
    return [fix_task(session, task, options) for task in select_tasks(session, names, pattern)]
