"""``obdb sync``: copy CVAT tasks into MongoDB in the original layout (``tasks``, ``meta``,
``annotation_data``), incrementally.

First a plan is made from two cheap listings (CVAT's tasks with their ``updated_date``, the
database's stored tasks): tasks to add, to update (CVAT's ``updated_date`` or task id changed),
left unchanged (nothing downloaded) and to delete (deleted in CVAT). Then the plan is applied one
task at a time with :func:`obdb.mongo.layout.write_task`, which replaces a task atomically and
leaves identical content byte-identical.

Only tasks that sync wrote (``source: "cvat"`` in their ``tasks`` document; ``cvat_id`` and
``cvat_url`` say where from) are ever updated or deleted; a task imported by hand under the same
name is left alone unless ``adopt`` is set. Names are matched exactly, so ``gt_val_A`` never touches ``gt_val_A_2``.
"""
from __future__ import annotations

from obdb.errors import UserError
import difflib
import fnmatch
import logging
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable, Sequence

from pymongo.database import Database
from tqdm.auto import tqdm

from ..cvat import (CvatSession, TaskInfo, expand_tracks, get_annotations, list_tasks, task_frames,
                   task_labels)
from ..cvat.tasks import FrameMeta
from ..shapes import BOX_KINDS, shape_box
from ..sources.truth import attribute_values
from .layout import TaskNotFound, delete_task, find_tasks, stored_tasks, write_task

log = logging.getLogger(__name__)

SOURCE = "cvat"  # value of ``source`` in the tasks documents sync writes
DEFAULT_STATUSES = ("completed",)


class SyncError(UserError, RuntimeError):
    """The plan cannot be made safely (e.g. two CVAT tasks with one name)."""


@dataclass
class SyncPlan:
    add: list[TaskInfo] = field(default_factory=list)
    update: list[TaskInfo] = field(default_factory=list)
    unchanged: list[TaskInfo] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)  # same name stored by hand: left alone

    def lines(self) -> list[str]:
        out = []
        for verb, names in (("add", [t.name for t in self.add]), ("update", [t.name for t in self.update]),
                            ("delete", self.delete), ("leave alone (stored by hand)", self.foreign)):
            out.extend(f"  {verb}: {name}" for name in names)
        return out


@dataclass
class SyncSummary:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    deleted: int = 0
    foreign: int = 0
    shapes: int = 0
    skipped_shapes: Counter[str] = field(default_factory=Counter)
    requests: int = 0

    def line(self) -> str:
        text = (f"{self.added} added, {self.updated} updated, {self.unchanged} unchanged, {self.deleted} deleted"
                f"; {self.shapes} shapes written; {self.requests} CVAT requests")
        if self.foreign:
            text += f"; {self.foreign} left alone (a task of that name was stored by hand; --adopt takes them over)"
        if self.skipped_shapes:
            text += "; skipped " + ", ".join(f"{n} {kind}" for kind, n in sorted(self.skipped_shapes.items()))
        return text


def _to_ms(moment: datetime) -> datetime:
    """MongoDB keeps milliseconds; CVAT sends microseconds. Compare at the stored precision."""
    moment = moment.astimezone(timezone.utc) if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _statuses(statuses: Iterable[str] | None) -> list[str] | None:
    chosen = list(statuses or DEFAULT_STATUSES)
    return None if "any" in chosen else chosen


def plan_sync(session: CvatSession, db: Database, *, names: Sequence[str] | None = None,
              pattern: str | None = None, statuses: Iterable[str] | None = DEFAULT_STATUSES,
              full: bool = False, adopt: bool = False) -> SyncPlan:
    """What to add, update and delete (no data downloaded, nothing written).

    ``statuses`` selects CVAT tasks to copy (``"any"`` for all); ``names``/``pattern`` limit the
    sync, deletions included. A task whose status left the selection stays stored as it was.
    ``full`` re-reads every selected task (the write is still skipped when nothing changed)."""
    wanted = _statuses(statuses)
    everything = list_tasks(session, names=names, pattern=pattern, with_labels=False)
    if names:
        _check_names(session, names, everything)
    selected = [t for t in everything if wanted is None or t.status in wanted]
    counts = Counter(t.name for t in selected)
    duplicates = sorted(name for name, n in counts.items() if n > 1)
    if duplicates:
        ids = {name: [t.id for t in selected if t.name == name] for name in duplicates}
        raise SyncError("CVAT has several tasks with one name, which the database cannot tell apart: "
                        + "; ".join(f"{name!r} (ids {', '.join(map(str, i))})" for name, i in ids.items())
                        + ". Rename them, or leave them out with --tasks/--pattern")

    stored = stored_tasks(db)
    docs = _stored_docs(db, sorted(stored), [t.name for t in selected if t.name not in stored])
    ours = {name: d for name, d in docs.items() if d.get("source") == SOURCE}
    plan = SyncPlan()
    for task in selected:
        doc = docs.get(task.name)
        if doc is None:
            plan.add.append(task)
        elif task.name not in ours and not adopt:
            plan.foreign.append(task.name)
        elif (full or doc.get("cvat_id") != task.id or task.name not in ours
              or _to_ms(stored[task.name]) != _to_ms(task.updated_date)):
            plan.update.append(task)
        else:
            plan.unchanged.append(task)
    in_cvat = {t.name for t in everything}
    plan.delete = sorted(name for name in ours if name not in in_cvat and _in_scope(name, names, pattern))
    return plan


def _check_names(session: CvatSession, names: Sequence[str], found: list[TaskInfo]) -> None:
    """A name in ``--tasks`` that CVAT does not have is an error listing near matches (a typo must
    not make sync silently do less than asked); costs one more listing, only then."""
    missing = [n for n in dict.fromkeys(names) if n not in {t.name for t in found}]
    if not missing:
        return
    every = sorted({t.name for t in list_tasks(session, with_labels=False)})
    parts = []
    for name in missing:
        near = difflib.get_close_matches(name, every, n=3, cutoff=0.6)
        parts.append(f"{name!r}" + (f" (did you mean {', '.join(map(repr, near))}?)" if near else ""))
    raise SyncError(f"CVAT at {session.url} has no task named {'; '.join(parts)}; names match exactly")


def _stored_docs(db: Database, stored: list[str], new: list[str]) -> dict[str, dict[str, Any]]:
    """The ``tasks`` documents of the stored tasks, plus a stand-in for each ``new`` name that
    only has a ``meta`` document (a hand-made import, which sync must not overwrite)."""
    docs = {d["name"]: d for d in find_tasks(db, stored)} if stored else {}
    if new:
        try:
            found = find_tasks(db, new)
        except TaskNotFound as err:
            found = find_tasks(db, [n for n in new if n not in err.missing]) if len(err.missing) < len(new) else []
        docs.update({d["name"]: d for d in found})
    return docs


def _in_scope(name: str, names: Sequence[str] | None, pattern: str | None) -> bool:
    return (names is None or name in names) and (pattern is None or fnmatch.fnmatchcase(name, pattern))


def shape_documents(frames: list[FrameMeta], annotations: dict[str, Any], labels: dict[int, str],
                    skipped: Counter[str], attribute_names: dict[int, str] | None = None) -> list[dict[str, Any]]:
    """``annotation_data`` documents (without ``task_name``) for every shape of a task, tracks
    expanded. Rotated rectangles, ellipses and masks are stored as the rectangle
    :func:`~obdb.shapes.shape_box` gives (the original layout has no rotation, ellipse or
    mask), every other kind as it is: the reader decides about polygons and points
    (``data.polygons``), and a polyline or cuboid tells it that its frame shows an object it does
    not train on (so the frame is no negative). Shapes on deleted frames or with unknown labels are
    counted in ``skipped``.

    Each document keeps the shape's ``source`` and its attribute values as ``attributes: [{name,
    value}]`` (names from ``attribute_names``, spec id → name; a list, not a document, so any
    attribute name is a valid value), so the ground-truth rule (:mod:`obdb.sources.truth`: model
    proposals count only once a person set ``review`` to ``accepted``) works from MongoDB too."""
    docs = []
    names = attribute_names or {}
    for shape in expand_tracks(annotations, len(frames)):
        kind = shape.get("type")
        frame = frames[shape["frame"]]
        if frame.deleted:
            skipped["shape(s) on deleted frames"] += 1
            continue
        if shape.get("label_id") not in labels:
            skipped["shape(s) of unknown labels"] += 1
            continue
        points = [float(p) for p in shape.get("points") or []]
        if kind in BOX_KINDS and (kind != "rectangle" or shape.get("rotation")):
            kind, points = "rectangle", list(shape_box(kind, points, float(shape.get("rotation") or 0.0)))
        docs.append({"type": "annotation", "shape_types": kind, "occluded": bool(shape.get("occluded", False)),
                     "points": points, "frame": shape["frame"], "label_id": shape["label_id"],
                     "source": shape.get("source", "manual"), "object_class": labels[shape["label_id"]],
                     "img_path": frame.name, "img_width": frame.width, "img_height": frame.height,
                     "attributes": [{"name": n, "value": v} for n, v in
                                    attribute_values(shape.get("attributes"), names).items()]})
    return docs


def fetch_task(session: CvatSession, task: TaskInfo,
               skipped: Counter[str]) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """Download one task (labels, frame list, annotations: three requests, no images) as the
    ``tasks`` document fields, ``meta.frames`` and ``annotation_data`` documents."""
    specs = task_labels(session, task.id)
    frames = task_frames(session, task.id)
    annotations = get_annotations(session, task.id)
    labels = {spec["id"]: spec["name"] for spec in specs}
    attribute_names = {a["id"]: a["name"] for spec in specs for a in spec.get("attributes") or [] if "id" in a}
    doc = {"name": task.name, "labels": specs, "created_date": task.created_date,
           "updated_date": task.updated_date, "status": task.status, "size": task.size,
           "source": SOURCE, "cvat_id": task.id, "cvat_url": session.url}
    meta = [{"name": f.name, "width": f.width, "height": f.height} for f in frames]
    return doc, meta, shape_documents(frames, annotations, labels, skipped, attribute_names)


def apply_sync(session: CvatSession, db: Database, plan: SyncPlan, *, progress: bool = True) -> SyncSummary:
    """Carry out ``plan``: each task is downloaded and written on its own, so an interruption
    leaves every task either as it was or fully new (the next sync picks up the rest)."""
    summary = SyncSummary(unchanged=len(plan.unchanged), foreign=len(plan.foreign))
    todo = [(task, "add") for task in plan.add] + [(task, "update") for task in plan.update]
    for task, action in tqdm(todo, desc="syncing CVAT tasks", unit="task", disable=not progress):
        doc, meta, shapes = fetch_task(session, task, summary.skipped_shapes)
        changed = write_task(db, doc, meta, shapes)
        summary.shapes += len(shapes) if changed else 0
        if action == "add":
            summary.added += 1
        elif changed:
            summary.updated += 1
        else:
            summary.unchanged += 1
        log.debug("%s task %r (CVAT id %d): %d shapes", action, task.name, task.id, len(shapes))
    for name in plan.delete:
        delete_task(db, name)
        summary.deleted += 1
        log.info("removed task %r: it is no longer in CVAT", name)
    summary.requests = session.requests  # every request of the session: login and listings included
    return summary
