"""K folds for out-of-fold predictions: every image in exactly one fold, whole groups per fold.

With ``split.method: "tsne"`` and ``split.tsne.folds`` set, the review uses the run's own k-fold
split manifest (the same folds cross-validation trains on). Otherwise the groups are balanced
into K folds by image count and boxes per class with the same balancer the t-SNE split uses, so
frames of one video never sit in a fold whose model trained on their neighbours: an
out-of-sample prediction must not have seen a near-copy of its image.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ..records import ImageRecord
from ..settings import Settings
from ..split import SplitError, split_for_run
from ..split.balance import Strata, balanced_groups

log = logging.getLogger(__name__)

DEFAULT_FOLDS = 5


def settings_folds(settings: Settings) -> int | None:
    """The fold count of the run's own k-fold split, if it has one."""
    cfg = settings.split
    return cfg.tsne.folds if cfg.method == "tsne" and cfg.tsne.folds else None


def group_folds(records: Sequence[ImageRecord], k: int, seed: int) -> dict[str, int]:
    """Whole groups into ``k`` folds balanced on image count and boxes per class."""
    if k < 2:
        raise SplitError(f"out-of-fold predictions need at least 2 folds, got {k}")
    names = sorted({r.group for r in records})
    index = {g: i for i, g in enumerate(names)}
    group_index = np.asarray([index[r.group] for r in records], dtype=np.int64)
    classes = sorted({label for r in records for label in r.labels})
    column = {name: j for j, name in enumerate(classes)}
    counts = np.zeros((len(records), max(len(classes), 1)))
    for i, record in enumerate(records):
        for label in record.labels:
            counts[i, column[label]] += 1
    strata = [Strata("images", np.ones((len(records), 1))), Strata("classes", counts, cover=True)]
    try:
        bins, _ = balanced_groups(group_index, strata, [1.0 / k] * k, seed=seed)
    except SplitError as err:
        raise SplitError(f"review folds: {err}") from err
    return {r.image_id: int(b) for r, b in zip(records, bins)}


def assign_folds(records: Sequence[ImageRecord], settings: Settings, k: int | None = None, *,
                 progress: bool = True) -> tuple[dict[str, int], str]:
    """``(image id -> fold, where the folds came from)``; ``k`` None means the run's fold count
    (or :data:`DEFAULT_FOLDS`)."""
    own = settings_folds(settings)
    if own and k in (None, own):
        outcome = split_for_run(records, settings, save_dir=Path(settings.save_dir), progress=progress, report=False,
                                log_summary=False)
        if set(outcome.manifest.folds) == {r.image_id for r in records}:
            return dict(outcome.manifest.folds), f"split manifest {outcome.manifest_file}"
        log.warning("the split manifest has no fold for every image; balancing groups into folds instead")
    k = k or own or DEFAULT_FOLDS
    seed = settings.seed if settings.split.seed is None else settings.split.seed
    return group_folds(records, k, seed), f"{k} group-balanced folds (seed {seed})"
