"""What a mode will change (or changed) per task: the table ``--dry-run`` prints.

Every mode first builds a :class:`TaskPlan` per task from reads only; ``--dry-run`` stops there,
a real run applies the plan and prints the same table, so what a dry run shows is what a run does.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence


@dataclass
class TaskPlan:
    """Counts for one task.

    ``kept``: existing shapes left as they are (a track counts once per frame it is on);
    ``added``: new shapes; ``duplicates``: proposed shapes already in the task (not added
    again); ``replaced``: existing auto shapes deleted (``--replace`` only); ``filtered``:
    predictions dropped for overlapping ground truth (mode ``missing``). ``task_id`` is ``None``
    for a task still to be created.
    """

    name: str
    task_id: int | None = None
    create: bool = False
    frames: int = 0
    kept: int = 0
    added: int = 0
    duplicates: int = 0
    replaced: int = 0
    filtered: int = 0
    notes: list[str] = field(default_factory=list)
    # what applying the plan writes (not printed): named shapes to add (frames are task frames,
    # or for a task to create, positions in ``images``), shape ids to delete, attribute specs to
    # add per label id, and for a new task its labels and image files; ``job_state`` for status.
    shapes: list[dict[str, Any]] = field(default_factory=list, repr=False)
    delete_ids: list[int] = field(default_factory=list, repr=False)
    label_patches: dict[int, list[dict[str, Any]]] = field(default_factory=dict, repr=False)
    labels: list[dict[str, Any]] = field(default_factory=list, repr=False)
    images: list[Path] = field(default_factory=list, repr=False)
    job_state: dict[str, str] = field(default_factory=dict, repr=False)
    backup: bool = field(default=True, repr=False)  # False for a task this run created (nothing to back up)

    @property
    def writes(self) -> bool:
        return bool(self.create or self.shapes or self.delete_ids or self.label_patches or self.job_state)

    def to_json(self) -> dict[str, Any]:
        return {"task": self.name, "task_id": self.task_id, "create": self.create, "frames": self.frames,
                "kept": self.kept, "added": self.added, "duplicates": self.duplicates,
                "replaced": self.replaced, "filtered": self.filtered, "notes": list(self.notes)}


def format_plans(plans: Sequence[TaskPlan], *, dry_run: bool) -> str:
    """A fixed-width table, one line per task, then the notes and totals."""
    head = "DRY RUN: nothing was written; this is what would change" if dry_run else "changes made"
    rows = [("task", "id", "frames", "kept", "added", "dup", "replaced", "filtered")]
    for p in plans:
        rows.append((p.name, "new" if p.task_id is None else str(p.task_id), str(p.frames), str(p.kept),
                     str(p.added), str(p.duplicates), str(p.replaced), str(p.filtered)))
    rows.append(("total", "", str(sum(p.frames for p in plans)), str(sum(p.kept for p in plans)),
                 str(sum(p.added for p in plans)), str(sum(p.duplicates for p in plans)),
                 str(sum(p.replaced for p in plans)), str(sum(p.filtered for p in plans))))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [head]
    for row in rows:
        lines.append("  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in
                               enumerate(zip(row, widths))).rstrip())
    for p in plans:
        lines.extend(f"  {p.name}: {note}" for note in p.notes)
    return "\n".join(lines)
