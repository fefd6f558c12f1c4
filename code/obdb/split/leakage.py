"""Leakage checks: groups that straddle sides, and near-duplicate images on different sides.

A "side" is train/val, or the fold number in k-fold mode (any two folds are each other's train
and val at some point). Two independent signals find near-duplicates:

* **embedding**: cosine distance ``1 - cos`` between unit-length PCA features, below
  ``near_duplicate_threshold`` (0 = identical features, 2 = opposite). For each side, the images of
  every later side are looked up among that side's images with :func:`~obdb.split.neighbours.knn`
  (exact on small sets, Annoy trees on large ones), so the check is never all pairs.
* **dHash**: Hamming distance between 64-bit difference hashes, at most ``dhash_threshold`` bits.
  Multi-index hashing makes it sub-quadratic: a pair within ``t`` bits agrees exactly on at least
  one of ``t + 1`` disjoint chunks of the hash (pigeonhole), so only images sharing a chunk value
  are compared.

A third check needs no features and does not trust the grouping: **neighbouring frames**, files in
the same folder whose names differ only in a trailing frame number (``…frame0029``/``…frame0030``,
``img_0001``/``img_0002``, at most ``neighbour_max_gap`` apart, the same file in two tasks being
0 apart) on different sides (:func:`neighbour_pairs`). It runs for every split method, in the
runner too, because a wrong ``group_regex`` or a task holding another video's frames shows here
first.
"""
from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from ..sources.grouping import normalise_name
from .embedding import l2_normalise
from .neighbours import knn

if TYPE_CHECKING:  # pragma: no cover
    from .base import SplitManifest

_TRAILING_NUMBER = re.compile(r"^(.*?)(\d+)$")


@dataclass(frozen=True)
class Pair:
    """Two images ``a`` < ``b`` (row indices) on different sides, with their distance."""

    a: int
    b: int
    distance: float
    by: str  # "embedding" | "dhash"


def cosine_pairs(features: np.ndarray, sides: np.ndarray, threshold: float, *, k: int = 5, seed: int = 0,
                 n_jobs: int = 1, exact_pairs: int | None = None) -> list[Pair]:
    """Cross-side pairs with cosine distance ``<= threshold`` among each image's ``k`` nearest
    images of every other side."""
    x = l2_normalise(np.asarray(features, dtype=np.float32))
    sides = np.asarray(sides)
    found: dict[tuple[int, int], float] = {}
    labels = np.unique(sides)
    extra = {} if exact_pairs is None else {"exact_pairs": exact_pairs}
    for position, side in enumerate(labels[:-1]):
        index_rows = np.flatnonzero(sides == side)
        query_rows = np.flatnonzero(np.isin(sides, labels[position + 1:]))
        neighbours, distances = knn(x[index_rows], x[query_rows], k=k, seed=seed, n_jobs=n_jobs, **extra)
        cosine = distances.astype(np.float64) ** 2 / 2.0  # unit vectors: |a-b|^2 = 2 (1 - cos)
        for q, row in enumerate(query_rows):
            for j in np.flatnonzero(cosine[q] <= threshold):
                other = int(index_rows[neighbours[q, j]])
                key = (min(other, int(row)), max(other, int(row)))
                found[key] = min(found.get(key, np.inf), float(cosine[q, j]))
    return [Pair(a, b, d, "embedding") for (a, b), d in sorted(found.items(), key=lambda kv: (kv[1], kv[0]))]


def near_pairs(features: np.ndarray, threshold: float, *, k: int = 10, seed: int = 0, n_jobs: int = 1) -> list[Pair]:
    """All pairs (any sides) with cosine distance ``<= threshold`` among each image's ``k``
    nearest neighbours: one neighbour search over the whole set, for linking groups."""
    x = l2_normalise(np.asarray(features, dtype=np.float32))
    neighbours, distances = knn(x, x, k=k + 1, seed=seed, n_jobs=n_jobs)
    cosine = distances.astype(np.float64) ** 2 / 2.0
    found: dict[tuple[int, int], float] = {}
    for row, col in zip(*np.nonzero(cosine <= threshold)):
        other = int(neighbours[row, col])
        if other != row:
            key = (min(other, int(row)), max(other, int(row)))
            found[key] = min(found.get(key, np.inf), float(cosine[row, col]))
    return [Pair(a, b, d, "embedding") for (a, b), d in sorted(found.items())]


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit differences between rows of packed uint8 hashes (broadcasting)."""
    return np.unpackbits(np.bitwise_xor(a, b), axis=-1).sum(axis=-1)


def dhash_pairs(hashes: np.ndarray, sides: np.ndarray, max_bits: int) -> list[Pair]:
    """Cross-side pairs whose dHashes differ in at most ``max_bits`` bits (multi-index hashing)."""
    hashes = np.asarray(hashes, dtype=np.uint8)
    sides = np.asarray(sides)
    bits = np.unpackbits(hashes, axis=1)  # (n, 64)
    chunks = np.array_split(np.arange(bits.shape[1]), max_bits + 1)
    found: dict[tuple[int, int], float] = {}
    for chunk in chunks:
        weights = (1 << np.arange(len(chunk), dtype=np.uint64))
        codes = (bits[:, chunk].astype(np.uint64) * weights).sum(axis=1)
        buckets: dict[int, list[int]] = defaultdict(list)
        for row, code in enumerate(codes.tolist()):
            buckets[code].append(row)
        for members in buckets.values():
            if len(members) < 2:
                continue
            rows = np.asarray(members)
            if len(np.unique(sides[rows])) < 2:
                continue
            for i, a in enumerate(rows[:-1]):
                others = rows[i + 1:]
                others = others[sides[others] != sides[a]]
                if not len(others):
                    continue
                dist = hamming(hashes[a], hashes[others])
                for b, d in zip(others[dist <= max_bits], dist[dist <= max_bits]):
                    found[(int(min(a, b)), int(max(a, b)))] = float(d)
    return [Pair(a, b, d, "dhash") for (a, b), d in sorted(found.items(), key=lambda kv: (kv[1], kv[0]))]


def straddling_groups(groups: Sequence[str], sides: Sequence[Any]) -> dict[str, list[str]]:
    """Groups with images on more than one side, with those sides (should be empty)."""
    seen: dict[str, set[str]] = defaultdict(set)
    for group, side in zip(groups, sides):
        seen[group].add(str(side))
    return {g: sorted(s) for g, s in sorted(seen.items()) if len(s) > 1}


def pairs_json(pairs: Sequence[Pair], ids: Sequence[str], sides: Sequence[Any], groups: Sequence[str],
               limit: int) -> list[dict[str, Any]]:
    """The closest ``limit`` pairs as report rows (ids, sides, groups, distance)."""
    return [{"a": ids[p.a], "b": ids[p.b], "side_a": str(sides[p.a]), "side_b": str(sides[p.b]),
             "group_a": groups[p.a], "group_b": groups[p.b], "distance": round(p.distance, 6), "by": p.by}
            for p in list(pairs)[:limit]]


def sides_of(manifest: "SplitManifest", ids: Sequence[str]) -> list[str]:
    """What the leakage checks compare: ``fold<k>`` in k-fold mode, else train/val."""
    if manifest.folds:
        return [f"fold{manifest.folds[i]}" for i in ids]
    return [manifest.assignment[i] for i in ids]


def sequence_key(name: str) -> tuple[tuple[str, str], int] | None:
    """``((folder, name before the number), frame number)`` of an image name ending in a number
    (extension ignored, case-insensitive), else None."""
    path = normalise_name(name)
    folder, _, base = path.rpartition("/")
    stem = base.rsplit(".", 1)[0] if "." in base else base
    match = _TRAILING_NUMBER.match(stem)
    if match is None:
        return None
    return (folder.lower(), match.group(1).lower()), int(match.group(2))


@dataclass(frozen=True)
class NeighbourPair:
    """Rows ``a`` and ``b``: adjacent frames of one sequence on different sides, ``gap`` apart."""

    a: int
    b: int
    gap: int


def neighbour_pairs(names: Sequence[str], sides: Sequence[Any], max_gap: int) -> list[NeighbourPair]:
    """Frames next to each other in their sequence (same folder and name stem, frame numbers in
    order, at most ``max_gap`` apart) that lie on different sides. O(n log n)."""
    sequences: dict[tuple[str, str], list[tuple[int, str, int]]] = defaultdict(list)
    for row, name in enumerate(names):
        key = sequence_key(name)
        if key is not None:
            sequences[key[0]].append((key[1], str(sides[row]), row))
    pairs = []
    for frames in sequences.values():
        frames.sort()
        for (n1, s1, r1), (n2, s2, r2) in zip(frames, frames[1:]):
            if s1 != s2 and n2 - n1 <= max_gap:
                pairs.append(NeighbourPair(min(r1, r2), max(r1, r2), n2 - n1))
    return sorted(pairs, key=lambda p: (p.gap, p.a, p.b))


def neighbour_block(names: Sequence[str], ids: Sequence[str], sides: Sequence[Any], groups: Sequence[str], *,
                    max_gap: int, limit: int) -> dict[str, Any]:
    """Report block of :func:`neighbour_pairs`: counts and the first ``limit`` pairs."""
    pairs = neighbour_pairs(names, sides, max_gap)
    frames: dict[str, set[int]] = defaultdict(set)
    sequences = set()
    for pair in pairs:
        frames[str(sides[pair.a])].add(pair.a)
        frames[str(sides[pair.b])].add(pair.b)
        sequences.add(sequence_key(names[pair.a])[0])  # type: ignore[index]
    return {"measure": "adjacent frame numbers in one folder", "max_gap": max_gap, "pairs": len(pairs),
            "sequences": len(sequences), "frames_per_side": {k: len(v) for k, v in sorted(frames.items())},
            "examples": [{"a": ids[p.a], "b": ids[p.b], "side_a": str(sides[p.a]), "side_b": str(sides[p.b]),
                          "group_a": groups[p.a], "group_b": groups[p.b], "gap": p.gap} for p in pairs[:limit]]}


def split_leaks(records: Sequence[Any], manifest: "SplitManifest", *, max_gap: int, limit: int) -> dict[str, Any]:
    """The checks that need no features, for any split: groups on both sides and neighbouring
    frames across sides (see :func:`neighbour_pairs`). ``count`` is what fails a split."""
    from ..sources.grouping import record_name

    ids = [r.image_id for r in records]
    sides = sides_of(manifest, ids)
    groups = [manifest.groups.get(i, r.group) for i, r in zip(ids, records)]
    straddling = straddling_groups(groups, sides)
    neighbours = neighbour_block([record_name(r) for r in records], ids, sides, groups, max_gap=max_gap,
                                 limit=limit)
    return {"groups": {"total": len(set(groups)), "straddling": straddling, "ok": not straddling},
            "neighbours": neighbours, "count": len(straddling) + neighbours["pairs"]}
