"""Push review problems to their CVAT tasks as ``source=auto`` shapes, through the CVAT package's
write path (:mod:`obdb.cvat.push`, which auto_annotate uses too): same safety rules, backups,
dedupe and plan table.

Each problem becomes the shape an annotator would accept as the fix, marked ``review:
unreviewed`` with the suspicion score in the ``score`` attribute, so it can be sorted, accepted or
rejected in CVAT like any auto-annotation:

* ``missing``: the predicted box with the predicted label (the object to add);
* ``mislocated``: the predicted box with the ground-truth label (the better placement);
* ``wrong_class``: the ground-truth box with the predicted label (the other class);
* ``spurious`` problems have no shape to propose (the box is already in the task and a copy would
  be dropped as a duplicate); they are counted in the plan notes and stay in ``review.json``.

Problems whose record has no CVAT task or frame (images not from CVAT / MongoDB / CVAT XML) are
left out with a count.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping, Sequence

from ..cvat import (AUTO, REVIEW, SCORE, UNREVIEWED, AnnotateError, CvatSession, NamedShape, RunOptions, TaskPlan,
                    find_task_by_name, finish, format_score, get_annotations, named_shape, plan_update)

log = logging.getLogger(__name__)


def problem_shape(row: Mapping[str, Any]) -> NamedShape | None:
    """The proposed fix of one review row (see the module docstring), or None for ``spurious``."""
    kind = row["kind"]
    if kind == "missing":
        box, label = row["predicted_box"], row["predicted_label"]
    elif kind == "mislocated":
        box, label = row["predicted_box"], row["label"]
    elif kind == "wrong_class":
        box, label = row["box"], row["predicted_label"]
    else:
        return None
    score = float(row["score"])
    return named_shape("rectangle", int(row["frame"]), str(label), box, source=AUTO,
                       attributes={REVIEW: UNREVIEWED, SCORE: format_score(score)}, score=score)


def review_shapes(rows: Sequence[Mapping[str, Any]]) -> tuple[dict[str, list[NamedShape]], dict[str, int]]:
    """Proposed shapes per task name, and counts of what was left out (``spurious`` per task,
    ``no_task`` for rows without a CVAT task or frame)."""
    shapes: dict[str, list[NamedShape]] = {}
    skipped: dict[str, int] = {}
    for row in rows:
        if not row.get("task") or row.get("frame") is None:
            skipped["no_task"] = skipped.get("no_task", 0) + 1
            continue
        shape = problem_shape(row)
        if shape is None:
            skipped[f"spurious:{row['task']}"] = skipped.get(f"spurious:{row['task']}", 0) + 1
            continue
        shapes.setdefault(str(row["task"]), []).append(shape)
    return shapes, skipped


def push_review(session: CvatSession, rows: Sequence[Mapping[str, Any]], options: RunOptions) -> list[TaskPlan]:
    """Add the proposed shapes of ``rows`` (``review.json`` problems) to their tasks; one plan per
    task, applied unless ``options.dry_run``. A task name CVAT does not know is an error before
    anything is written."""
    shapes, skipped = review_shapes(rows)
    if skipped.get("no_task"):
        log.warning("%d problem(s) have no CVAT task or frame and are not pushed", skipped["no_task"])
    tasks = {}
    for name in sorted(shapes):
        task = find_task_by_name(session, name)
        if task is None:
            raise AnnotateError(f"no CVAT task named {name!r} (the review's data names it); nothing was written")
        tasks[name] = task
    plans = []
    for name, task in tasks.items():
        plan = plan_update(task, get_annotations(session, task.id), shapes[name])
        spurious = skipped.get(f"spurious:{name}", 0)
        if spurious:
            plan.notes.append(f"{spurious} spurious box(es) not pushed (see review.json)")
        plans.append(finish(session, plan, options))
    return plans
