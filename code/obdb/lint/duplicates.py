"""Duplicate images: exact (same file content) and near (perceptual hash within a few bits).

Duplicates matter twice: they over-weight a frame in training, and two copies on different sides
of the split inflate the validation score (the original system's main defect was this leak).

* **exact**: same sha256 of the file bytes. The first image (in load order, which is stable) of
  each set is kept, the other copies are dropped, whatever their annotations say (the report
  names the kept copy, so differing annotations can be merged at the source).
* **near**: 64-bit dHash (the split's own :class:`~obdb.split.features.DHashExtractor`) within
  ``near_duplicate_hamming`` bits, found with the split's multi-index search
  (:func:`~obdb.split.leakage.dhash_pairs`, every image its own "side" so all pairs count).
  Reported, not dropped, unless ``drop_near_duplicates``: neighbouring video frames are near
  duplicates by nature and the group-aware split keeps them together. A pair from *different*
  groups is a ``warn``: nothing keeps those two on one side of the split. With dropping on, an
  image is dropped when it is near an earlier image that was kept (greedy, in load order), so a
  slowly changing video keeps every frame that differs enough from the last kept one.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import numpy as np

from ..records import ImageRecord
from ..settings.schema import LintSettings
from ..split.leakage import dhash_pairs
from .base import DROPPED_IMAGE, INFO, KEPT, WARN, Issue, issue_for
from .images import ImageFacts


def exact_duplicates(records: Sequence[ImageRecord],
                     facts: dict[str, ImageFacts]) -> tuple[list[ImageRecord], list[Issue]]:
    """Keep the first image of each set with identical file content."""
    first: dict[str, ImageRecord] = {}
    kept: list[ImageRecord] = []
    issues: list[Issue] = []
    for record in records:
        sha = facts[str(record.path)].sha256
        original = first.get(sha)
        if original is None:
            first[sha] = record
            kept.append(record)
            continue
        same_file = original.path == record.path
        issues.append(issue_for(record, "exact_duplicate", WARN, DROPPED_IMAGE,
                                f"{'the same file as' if same_file else 'same content as'} {original.image_id} "
                                f"({original.path})", duplicate_of=original.image_id,
                                duplicate_of_path=str(original.path), cross_group=original.group != record.group))
    return kept, issues


def near_duplicates(records: Sequence[ImageRecord], facts: dict[str, ImageFacts],
                    settings: LintSettings) -> tuple[list[ImageRecord], list[Issue]]:
    """Report (or drop) images whose dHash is within ``near_duplicate_hamming`` bits of an earlier one."""
    max_bits = settings.near_duplicate_hamming
    hashed = [i for i, r in enumerate(records) if facts[str(r.path)].dhash]
    if max_bits is None or len(hashed) < 2:
        return list(records), []
    hashes = np.stack([np.frombuffer(bytes.fromhex(facts[str(records[i].path)].dhash), dtype=np.uint8)
                       for i in hashed])
    earlier: dict[int, list[tuple[int, float]]] = defaultdict(list)  # later row -> [(earlier row, bits)]
    for pair in dhash_pairs(hashes, np.arange(len(hashed)), max_bits):
        a, b = hashed[pair.a], hashed[pair.b]
        earlier[max(a, b)].append((min(a, b), pair.distance))
    dropped: set[int] = set()
    issues: list[Issue] = []
    for row in sorted(earlier):
        record = records[row]
        partners = earlier[row]
        if settings.drop_near_duplicates:
            partners = [(p, bits) for p, bits in partners if p not in dropped]
            if not partners:
                continue  # its near twins were all dropped: this one stays, as the kept copy
        # the pair that matters most: another group (a possible split leak), then the closest
        partner, bits = min(partners, key=lambda pb: (records[pb[0]].group == record.group, pb[1], pb[0]))
        cross = records[partner].group != record.group
        drop = settings.drop_near_duplicates
        if drop:
            dropped.add(row)
        where = f"another group ({records[partner].group})" if cross else "the same group"
        issues.append(issue_for(record, "near_duplicate", WARN if cross or drop else INFO,
                                DROPPED_IMAGE if drop else KEPT,
                                f"{int(bits)} bit(s) from {records[partner].image_id} in {where}",
                                near=records[partner].image_id, near_path=str(records[partner].path), bits=int(bits),
                                cross_group=cross, partners=len(earlier[row])))
    return [r for i, r in enumerate(records) if i not in dropped], issues
