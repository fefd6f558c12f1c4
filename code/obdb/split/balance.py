"""Assign whole groups to bins (train/val, or K folds) so every bin gets its share of each stratum.

This is scikit-learn's ``StratifiedGroupKFold`` idea generalised to what a detection split needs:

* several strata families at once (image count, clusters of appearance, object classes), where
  StratifiedGroupKFold takes one label per sample and an image holds boxes of several classes;
* unequal targets (train 80 % / val 20 %) as well as K equal folds;
* a seed that really matters: groups are visited in a size-biased random order (big groups first
  on average, because they are the hard ones to place) and the best of ``restarts`` orders wins.

Each group goes to the bin where the squared deviation of every bin's share of every stratum from
its target is smallest, given what is placed so far. Strata in a family share the family's
weight equally, so a rare class counts as much as a frequent one.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .base import SplitError


@dataclass
class Strata:
    """Per-image counts of one family of strata, ``(n_images, n_labels)``, and its weight."""

    name: str
    counts: np.ndarray
    weight: float = 1.0
    #: every column that occurs in at least as many groups as there are bins gets at least one of
    #: those groups in every bin (e.g. every class in validation): squared-share balancing alone may
    #: leave a rare class out of the small bin, because overshooting its share costs more than 0 %
    cover: bool = False


def _group_matrix(group_index: np.ndarray, n_groups: int,
                  strata: Sequence[Strata]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-group counts of all strata side by side, the weight of each column and which columns
    every bin must cover."""
    blocks, weights, cover = [], [], []
    for family in strata:
        counts = np.asarray(family.counts, dtype=np.float64).reshape(len(group_index), -1)
        present = counts.sum(axis=0) > 0
        counts = counts[:, present]
        if counts.shape[1] == 0 or family.weight <= 0:
            continue
        summed = np.zeros((n_groups, counts.shape[1]))
        np.add.at(summed, group_index, counts)
        blocks.append(summed)
        weights.append(np.full(counts.shape[1], family.weight / counts.shape[1]))
        cover.append(np.full(counts.shape[1], family.cover))
    if not blocks:
        raise SplitError("nothing to balance: every stratum is empty")
    return np.hstack(blocks), np.concatenate(weights), np.concatenate(cover)


def _cost(bins: np.ndarray, totals: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> float:
    share = bins / np.maximum(totals, 1e-12)
    return float((weights * ((share - targets[:, None]) ** 2 / targets[:, None])).sum())


def _greedy(matrix: np.ndarray, order: np.ndarray, targets: np.ndarray, weights: np.ndarray) -> np.ndarray:
    n_bins = len(targets)
    bins = np.zeros((n_bins, matrix.shape[1]))
    assigned = np.zeros(matrix.shape[1])
    choice = np.empty(len(matrix), np.int64)
    t = targets[:, None]
    for g in order:
        row = matrix[g]
        assigned += row
        inv = 1.0 / np.maximum(assigned, 1e-12)
        base = weights * ((bins * inv - t) ** 2 / t)           # every bin as it is
        added = weights * (((bins + row) * inv - t) ** 2 / t)  # every bin with this group added
        cost = base.sum() - base.sum(axis=1) + added.sum(axis=1)
        best = int(np.argmin(cost))
        choice[g] = best
        bins[best] += row
    return choice


def _fill_empty_bins(choice: np.ndarray, sizes: np.ndarray, n_bins: int) -> np.ndarray:
    """Greedy placement may leave a small bin empty when groups are few and large; move the
    smallest group of the fullest bin (by groups) there so every bin has images."""
    choice = choice.copy()
    for b in range(n_bins):
        if (choice == b).any():
            continue
        counts = np.bincount(choice, minlength=n_bins)
        donor = int(np.argmax(counts))
        members = np.flatnonzero(choice == donor)
        choice[members[np.argmin(sizes[members])]] = b
    return choice


def _cover_columns(choice: np.ndarray, matrix: np.ndarray, cover: np.ndarray, sizes: np.ndarray,
                   n_bins: int) -> np.ndarray:
    """Give every bin at least one group of each covered column that spans enough groups, taking
    the smallest such group from the bin that holds the most of them."""
    choice = choice.copy()
    for column in np.flatnonzero(cover):
        holders = np.flatnonzero(matrix[:, column] > 0)
        if len(holders) < n_bins:
            continue
        for b in range(n_bins):
            if (choice[holders] == b).any():
                continue
            per_bin = np.bincount(choice[holders], minlength=n_bins)
            donor = int(np.argmax(per_bin))
            if per_bin[donor] < 2:
                break
            members = holders[choice[holders] == donor]
            choice[members[np.argmin(sizes[members])]] = b
    return choice


def balanced_groups(group_index: np.ndarray, strata: Sequence[Strata], targets: Sequence[float], *, seed: int,
                    restarts: int = 4) -> tuple[np.ndarray, dict[str, float]]:
    """Bin of every image (``0..len(targets)-1``) with whole groups per bin.

    ``group_index`` holds each image's group as an integer ``0..G-1``. Returns the image bins and
    ``{"cost": ..., "restarts": ...}`` of the best of ``restarts`` seeded greedy passes."""
    group_index = np.asarray(group_index, dtype=np.int64)
    target = np.asarray(targets, dtype=np.float64)
    if target.ndim != 1 or len(target) < 2 or (target <= 0).any():
        raise SplitError(f"split targets must be at least two positive shares, got {list(targets)}")
    target = target / target.sum()
    n_groups = int(group_index.max()) + 1 if len(group_index) else 0
    if n_groups < len(target):
        raise SplitError(f"a split into {len(target)} parts needs at least {len(target)} groups, found {n_groups}; "
                         "set data.group_regex to name smaller groups (e.g. one per video), use fewer folds, "
                         "or split.method 'random' for unrelated images")
    matrix, weights, cover = _group_matrix(group_index, n_groups, strata)
    totals = matrix.sum(axis=0)
    sizes = np.bincount(group_index, minlength=n_groups).astype(np.float64)
    best_choice, best_cost = None, np.inf
    for restart in range(max(1, restarts)):
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, restart])
        noisy = sizes * rng.uniform(0.5, 1.5, size=n_groups)
        order = np.lexsort((rng.permutation(n_groups), -noisy))
        choice = _fill_empty_bins(_greedy(matrix, order, target, weights), sizes, len(target))
        choice = _cover_columns(choice, matrix, cover, sizes, len(target))
        placed = np.zeros((len(target), matrix.shape[1]))
        np.add.at(placed, choice, matrix)
        cost = _cost(placed, totals, target, weights)
        if cost < best_cost - 1e-12:
            best_choice, best_cost = choice, cost
    assert best_choice is not None
    return best_choice[group_index], {"cost": float(best_cost), "restarts": int(max(1, restarts))}
