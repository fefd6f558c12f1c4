"""The split group of a frame: its *recording*. Frames of one group never straddle train and val.

The original system's MongoDB holds every video as two tasks, ``gt_train_<session>_<cam>_<video>``
and ``gt_val_<same>``, with frame paths ``fielddata/<folder>/<date>/<cam>/<video>/<video>frame0029.png``.
A task can also hold frames of another video, and one frame file can sit in two tasks. Grouping
by task name put one video on both sides; grouping by file name cannot tell a video id reused in
another session from the first one. So, without ``data.group_regex``, a frame is tied to two keys:

* its **folder**: the image's relative path without the file name (the recording's folder);
* its **task** with split prefixes/suffixes removed (``gt_train_``, ``gt_val_``, ``train_``,
  ``val_``, ``test_``, ``_train``, …), so the train and val tasks of one video share a key.

Frames sharing either key are one group (a union-find over all frames, :func:`assign_groups`):
the coarser of the two groupings wins everywhere, so a video split over two tasks, a task holding
another video's frames and a frame in two tasks all end up in one group, while the same video id
in another session (another folder, another task) stays another group.

With ``data.group_regex`` the user decides: the regex is searched in the image's file name, then
in its relative path, then in the task name; the first match gives the group (its first capture
group, else the whole match). Frames it matches nothing in fall back to the rule above.
"""
from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Sequence

#: Split words a task name starts or ends with (``gt_train_``, ``val-``, ``_test`` …).
_SPLIT_WORDS = r"(?:train(?:ing)?|val(?:id(?:ation)?)?|test(?:ing)?|eval)"
_PREFIX = re.compile(rf"^(?:gt[_\- ]+)?{_SPLIT_WORDS}[_\- ]+", re.IGNORECASE)
_SUFFIX = re.compile(rf"[_\- ]+{_SPLIT_WORDS}$", re.IGNORECASE)
_GT_PREFIX = re.compile(r"^gt[_\- ]+", re.IGNORECASE)
_SEPARATORS = re.compile(r"[\s_\-]+")
_EXAMPLES = 5


def normalise_name(name: str) -> str:
    """An image name as a ``/``-separated relative path (Windows exports use ``\\``)."""
    path = name.replace("\\", "/")
    while path.startswith("./"):
        path = path[2:]
    return path.strip("/")


def folder_of(name: str) -> str:
    """The relative folder of an image name; ``""`` for a bare file name."""
    path = normalise_name(name)
    return path.rsplit("/", 1)[0] if "/" in path else ""


def strip_split_prefix(task: str) -> str:
    """The recording a task name names: split words removed, separators made one ``_``
    (``gt_train_FieldData 3R GH060070`` and ``gt_val_FieldData_3R_GH060070`` give the same)."""
    stripped = _PREFIX.sub("", task.strip(), count=1)
    stripped = _SUFFIX.sub("", stripped, count=1)
    stripped = _GT_PREFIX.sub("", stripped, count=1)
    stripped = _SEPARATORS.sub("_", stripped).strip("_")
    return stripped or task


def regex_group(name: str, task: str, regex: re.Pattern[str] | None) -> tuple[str, str] | None:
    """``(group, where)`` of the first match of ``regex`` in the file name, the relative path or
    the task name (``where`` says which), else None."""
    if regex is None:
        return None
    path = normalise_name(name)
    for where, text in (("file name", path.rsplit("/", 1)[-1]), ("path", path), ("task", task)):
        match = regex.search(text)
        if match is not None:
            value = match.group(1) if match.re.groups and match.group(1) is not None else match.group(0)
            if value:
                return value, where
    return None


def frame_group(name: str, task: str, regex: re.Pattern[str] | None) -> str:
    """The group of one frame seen alone: the regex match (see :func:`regex_group`), else the
    task without its split prefix. :func:`assign_groups` refines it over all frames (folders
    shared across tasks join their groups); sources call this, the split stage calls that."""
    found = regex_group(name, task, regex)
    if found is not None:
        return found[0]
    return strip_split_prefix(task) if task else (folder_of(name) or normalise_name(name))


def record_name(record: Any) -> str:
    """The image's relative name as the annotations wrote it (``image_id`` is ``task/name``)."""
    name = record.meta.get("name") if isinstance(getattr(record, "meta", None), dict) else None
    if isinstance(name, str) and name:
        return name
    task = record.task or ""
    if task and record.image_id.startswith(task + "/"):
        return record.image_id[len(task) + 1:]
    return record.path.name


@dataclass
class Grouping:
    """How the groups of a record set were formed: for the split report and the log."""

    rule: str
    groups: int = 0
    by_regex: dict[str, int] = field(default_factory=dict)   # where the regex matched -> frames
    by_rule: int = 0                                         # frames grouped by folder + task
    merged: int = 0                                          # groups joining several folders or tasks
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"rule": self.rule, "groups": self.groups, "frames_by_regex": self.by_regex,
                "frames_by_folder_and_task": self.by_rule, "merged_groups": self.merged, "examples": self.examples}

    def lines(self) -> list[str]:
        out = [f"  grouping: {self.groups} group(s); {self.rule}"]
        for example in self.examples[:3]:
            parts = [f"{k} {', '.join(map(repr, v[:3]))}{' …' if len(v) > 3 else ''}"
                     for k, v in (("folders", example.get("folders", [])), ("tasks", example.get("tasks", [])))
                     if v]
            how = example.get("regex") or "; ".join(parts)
            out.append(f"    e.g. {example['group']!r} ({example['frames']} frames) <- {how}")
        return out


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[tuple[str, str], tuple[str, str]] = {}

    def find(self, key: tuple[str, str]) -> tuple[str, str]:
        self.parent.setdefault(key, key)
        while self.parent[key] != key:
            self.parent[key] = self.parent[self.parent[key]]
            key = self.parent[key]
        return key

    def union(self, a: tuple[str, str], b: tuple[str, str]) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def assign_groups(records: Sequence[Any], group_regex: str | re.Pattern[str] | None = None) -> Grouping:
    """Set ``record.group`` of every record to its recording (in place; see the module docstring)
    and say how the groups were formed. Idempotent: groups are computed from names, not from the
    groups the records had."""
    regex = re.compile(group_regex) if isinstance(group_regex, str) else group_regex
    uf = _UnionFind()
    keys: list[list[tuple[str, str]] | None] = []
    by_regex: Counter[str] = Counter()
    fixed: dict[int, str] = {}
    for i, record in enumerate(records):
        name = record_name(record)
        found = regex_group(name, record.task or "", regex)
        if found is not None:
            fixed[i] = found[0]
            by_regex[found[1]] += 1
            keys.append(None)
            continue
        own = [("task", strip_split_prefix(record.task))] if record.task else []
        folder = folder_of(name)
        if folder:
            own.append(("folder", folder))
        if not own:
            own = [("file", normalise_name(name))]
        for key in own[1:]:
            uf.union(own[0], key)
        uf.find(own[0])
        keys.append(own)
    members: dict[tuple[str, str], dict[str, set[str]]] = {}
    for record, own in zip(records, keys):
        if own is not None:
            bucket = members.setdefault(uf.find(own[0]), {"task": set(), "folder": set(), "file": set(), "raw": set()})
            for kind, value in own:
                bucket[kind].add(value)
            if record.task:
                bucket["raw"].add(record.task)
    names: dict[tuple[str, str], str] = {}
    for root, bucket in members.items():
        tasks = sorted(bucket["task"])
        base = tasks[0] if tasks else sorted(bucket["folder"] or bucket["file"])[0]
        names[root] = base if len(tasks) <= 1 else f"{base}+{len(tasks) - 1}"
    frames: Counter[str] = Counter()
    for i, record in enumerate(records):
        own = keys[i]
        record.group = fixed[i] if own is None else names[uf.find(own[0])]
        frames[record.group] += 1
    return _describe(records, keys, fixed, members, names, frames, by_regex, regex)


def _describe(records: Sequence[Any], keys: list[Any], fixed: dict[int, str], members: dict[Any, dict[str, set[str]]],
              names: dict[Any, str], frames: Counter[str], by_regex: Counter[str],
              regex: re.Pattern[str] | None) -> Grouping:
    if regex is None:
        rule = ("recording = image folder joined with the task name without split prefixes "
                "(frames sharing either are one group)")
    else:
        rule = (f"data.group_regex {regex.pattern!r} on file name, then relative path, then task; "
                "frames it does not match: folder + task")
    merged = [root for root, bucket in members.items() if len(bucket["raw"]) > 1 or len(bucket["folder"]) > 1]
    grouping = Grouping(rule=rule, groups=len(frames), by_regex=dict(by_regex),
                        by_rule=sum(1 for k in keys if k is not None), merged=len(merged))
    # examples: merged groups first (they show the rule at work), then plain ones
    ordered = sorted(members.items(), key=lambda kv: (-(len(kv[1]["raw"]) + len(kv[1]["folder"])), names[kv[0]]))
    for root, bucket in ordered[:_EXAMPLES]:
        grouping.examples.append({"group": names[root], "frames": frames[names[root]],
                                  "folders": sorted(bucket["folder"]), "tasks": sorted(bucket["raw"])})
    seen: set[str] = set()
    for i, group in fixed.items():
        if len(grouping.examples) >= 2 * _EXAMPLES or group in seen:
            continue
        seen.add(group)
        grouping.examples.append({"group": group, "frames": frames[group],
                                  "regex": f"regex on {record_name(records[i])!r} (task {records[i].task!r})"})
    return grouping
