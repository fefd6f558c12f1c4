"""Split methods: ``group`` (default, leakage-free), ``random``, ``file`` and ``tsne``.

The original system split every 10th frame of a video, so most validation frames had their
neighbouring frame in training and the scores were inflated. ``group`` keeps every group (video,
recording session, source image) on one side. ``tsne`` (:mod:`obdb.split.tsne`) does too, and
also balances appearance clusters and classes between the sides.
"""
from __future__ import annotations

import csv
import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from ..records import ImageRecord
from .base import TRAIN, VAL, SplitError, SplitManifest


def random_split(records: Sequence[ImageRecord], val_fraction: float, seed: int) -> SplitManifest:
    """Image-level random split. Leaks between neighbouring frames: for unrelated images only."""
    if len(records) < 2:
        raise SplitError(f"a split needs at least 2 images, got {len(records)}")
    ids = sorted(r.image_id for r in records)
    random.Random(seed).shuffle(ids)
    n_val = min(len(ids) - 1, max(1, round(len(ids) * val_fraction)))
    val = set(ids[:n_val])
    return SplitManifest("random", seed, {r.image_id: VAL if r.image_id in val else TRAIN for r in records},
                         {r.image_id: r.group for r in records}, {"val_fraction": val_fraction})


def group_split(records: Sequence[ImageRecord], val_fraction: float, seed: int) -> SplitManifest:
    """Whole groups go to validation, in seeded random order, until it holds ``val_fraction`` of
    the images (the group that crosses the target goes where it brings the fraction closest)."""
    members: dict[str, list[str]] = defaultdict(list)
    for record in records:
        members[record.group].append(record.image_id)
    if len(members) < 2:
        raise SplitError(f"split.method 'group' needs at least 2 groups, found {len(members)} "
                         f"({next(iter(members), 'none')!r}); set data.group_regex to name groups "
                         "from file names, or use split.method 'random'")
    groups = sorted(members)
    random.Random(seed).shuffle(groups)
    target = val_fraction * len(records)
    val_groups: list[str] = []
    n_val = 0
    for group in groups[:-1]:  # the last group always stays in train
        size = len(members[group])
        if n_val >= target:
            break
        if val_groups and abs(n_val + size - target) > abs(n_val - target):
            continue
        val_groups.append(group)
        n_val += size
    chosen = set(val_groups)
    assignment = {r.image_id: VAL if r.group in chosen else TRAIN for r in records}
    return SplitManifest("group", seed, assignment, {r.image_id: r.group for r in records},
                         {"val_fraction": val_fraction, "val_groups": sorted(chosen)})


def file_split(records: Sequence[ImageRecord], path: Path) -> SplitManifest:
    """A split given by the user: our JSON manifest, or CSV rows ``image,split``. The image column
    matches an image id, its path relative to nothing, or its file name. Unlisted images and
    listed images that are absent are errors, so a stale list never silently shrinks a set."""
    path = Path(path)
    if not path.exists():
        raise SplitError(f"split.file {path}: file not found")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise SplitError(f"{path}: invalid JSON at line {err.lineno}: {err.msg}") from err
        wanted = SplitManifest.from_json(data, str(path)).assignment
    else:
        wanted = {}
        with open(path, newline="", encoding="utf-8") as handle:
            for line_no, row in enumerate(csv.reader(handle), start=1):
                if not row or (line_no == 1 and row[:2] == ["image", "split"]):
                    continue
                if len(row) < 2 or row[1].strip() not in (TRAIN, VAL):
                    raise SplitError(f"{path}, line {line_no}: expected 'image,train|val', got {row!r}")
                wanted[row[0].strip()] = row[1].strip()
    assignment: dict[str, str] = {}
    missing = []
    for record in records:
        for key in (record.image_id, str(record.path), record.path.name):
            if key in wanted:
                assignment[record.image_id] = wanted[key]
                break
        else:
            missing.append(record.image_id)
    if missing:
        raise SplitError(f"{path}: {len(missing)} image(s) are not in the split file, e.g. {missing[:3]}")
    known = {key for r in records for key in (r.image_id, str(r.path), r.path.name)}
    absent = [key for key in wanted if key not in known]
    if absent:
        raise SplitError(f"{path}: {len(absent)} listed image(s) are not in the data, e.g. {absent[:3]}")
    if not any(v == VAL for v in assignment.values()) or not any(v == TRAIN for v in assignment.values()):
        raise SplitError(f"{path}: the split must put at least one image in train and one in val")
    return SplitManifest("file", 0, assignment, {r.image_id: r.group for r in records}, {"file": str(path)})


def make_split(records: Sequence[ImageRecord], method: str, *, val_fraction: float, seed: int,
               file: Path | None = None, tsne: Any = None, fold: int | None = None,
               cache_dir: Path | None = None, weights_dir: Path | None = None, pretrained: str = "imagenet",
               progress: bool = False) -> SplitManifest:
    """The split ``method`` makes. ``tsne`` (a ``TsneSplitSettings``; defaults when None), ``fold``,
    ``cache_dir`` (features; none: not cached), ``weights_dir`` and ``pretrained`` (``model.*``)
    only matter for ``"tsne"``."""
    if method == "tsne":
        from .tsne import run_tsne_split

        manifest, _ = run_tsne_split(records, tsne, val_fraction=val_fraction, seed=seed, fold=fold,
                                     cache_dir=cache_dir, weights_dir=weights_dir, pretrained=pretrained,
                                     progress=progress)
        return manifest
    if method == "group":
        return group_split(records, val_fraction, seed)
    if method == "random":
        return random_split(records, val_fraction, seed)
    if method == "file":
        if file is None:
            raise SplitError("split.method 'file' needs split.file")
        return file_split(records, file)
    raise SplitError(f"unknown split method {method!r}")
