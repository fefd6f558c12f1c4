"""Leakage checks: planted near-duplicates across sides are reported, hashing matches brute force."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from obdb.settings.schema import TsneSplitSettings
from obdb.split import TRAIN, VAL, SplitManifest
from obdb.split.leakage import cosine_pairs, dhash_pairs, hamming, straddling_groups
from obdb.split.report import build_report, js_divergence
from obdb.split.tsne import analyse, tsne_split

OPTIONS = TsneSplitSettings(clusters=4, dhash=False, thumbnails=False, near_duplicate_threshold=0.02)


def _flip_duplicates(manifest: SplitManifest, records: list[Any], planted: list[tuple[int, int]]) -> SplitManifest:
    """Put every planted copy (its own one-image group) on the other side from its original:
    a valid group split that leaks exactly the planted pairs."""
    assignment = dict(manifest.assignment)
    for original, duplicate in planted:
        side = assignment[records[original].image_id]
        assignment[records[duplicate].image_id] = VAL if side == TRAIN else TRAIN
    return SplitManifest(manifest.method, manifest.seed, assignment, manifest.groups, manifest.params)


@pytest.fixture(scope="module")
def leaky(synth_factory: Any) -> tuple[Any, Any, SplitManifest]:
    data = synth_factory(groups=40, duplicates=4, seed=1)
    analysis = analyse(data.records, OPTIONS, seed=0, features=data.features, n_jobs=1)
    manifest = _flip_duplicates(tsne_split(data.records, analysis, OPTIONS, val_fraction=0.25, seed=0),
                                data.records, data.planted)
    return data, analysis, manifest


def test_planted_near_duplicates_across_sides_are_reported(leaky: tuple[Any, Any, SplitManifest]) -> None:
    data, analysis, manifest = leaky
    report = build_report(data.records, manifest, analysis, OPTIONS, n_jobs=1)
    block = report["leakage"]["embedding"]
    planted = {frozenset((data.records[a].image_id, data.records[b].image_id)) for a, b in data.planted}
    found = {frozenset((p["a"], p["b"])) for p in block["closest"]}
    assert planted <= found and block["pairs"] == len(found)
    # the copy is also close to the other frames of the video it was copied from, and those are
    # leaks too; nothing else is reported
    allowed = {frozenset((data.records[d].image_id, r.image_id)) for o, d in data.planted
               for r in data.records if r.group == data.records[o].group}
    assert found <= allowed
    assert all(p["side_a"] != p["side_b"] and p["distance"] <= 0.02 for p in block["closest"])
    closest = {frozenset((p["a"], p["b"])): p["distance"] for p in block["closest"]}
    assert all(closest[pair] <= 1e-4 for pair in planted)
    assert report["leakage"]["ok"] is False
    assert report["groups"] == {"total": len({r.group for r in data.records}), "straddling": {}, "ok": True}
    # the unflipped split of the same data is clean
    clean = tsne_split(data.records, analysis, OPTIONS.model_copy(update={"link_near_duplicates": True}),
                       val_fraction=0.25, seed=0)
    assert build_report(data.records, clean, analysis, OPTIONS, n_jobs=1)["leakage"]["ok"] is True


def test_approximate_search_finds_the_same_pairs(leaky: tuple[Any, Any, SplitManifest]) -> None:
    data, analysis, manifest = leaky
    sides = np.asarray([manifest.assignment[i] for i in analysis.ids])
    exact = cosine_pairs(analysis.pca, sides, 0.02)
    annoy = cosine_pairs(analysis.pca, sides, 0.02, exact_pairs=0)  # force the Annoy trees
    assert [(p.a, p.b) for p in annoy] == [(p.a, p.b) for p in exact] and len(exact) >= len(data.planted)


def test_straddling_groups_are_listed(leaky: tuple[Any, Any, SplitManifest]) -> None:
    data, analysis, manifest = leaky
    assignment = dict(manifest.assignment)
    victim = data.records[0]
    assignment[victim.image_id] = VAL if assignment[victim.image_id] == TRAIN else TRAIN
    broken = SplitManifest("file", 0, assignment, manifest.groups)
    report = build_report(data.records, broken, analysis, OPTIONS, n_jobs=1)
    assert report["groups"]["ok"] is False and list(report["groups"]["straddling"]) == [victim.group]
    assert straddling_groups(["a", "a", "b"], ["train", "val", "val"]) == {"a": ["train", "val"]}


def test_dhash_pairs_match_brute_force() -> None:
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 256, size=(400, 8), dtype=np.uint8)
    for i in range(0, 40, 2):  # plant pairs 0..5 bits apart
        hashes[i + 1] = hashes[i]
        flip = rng.choice(64, size=i % 6, replace=False)
        bits = np.unpackbits(hashes[i + 1])
        bits[flip] ^= 1
        hashes[i + 1] = np.packbits(bits)
    sides = rng.integers(0, 3, size=400)
    for max_bits in (0, 2, 4):
        brute = {(a, b) for a in range(400) for b in range(a + 1, 400)
                 if sides[a] != sides[b] and hamming(hashes[a], hashes[b]) <= max_bits}
        found = dhash_pairs(hashes, sides, max_bits)
        assert {(p.a, p.b) for p in found} == brute and brute
        assert all(p.distance <= max_bits and p.by == "dhash" for p in found)


def test_js_divergence_bounds() -> None:
    assert js_divergence([1, 2, 3], [2, 4, 6]) == pytest.approx(0.0)
    assert js_divergence([1, 0], [0, 5]) == pytest.approx(1.0)
    assert 0 < js_divergence([3, 1], [1, 3]) < 1
    assert js_divergence([0, 0], [0, 0]) == 0.0 and js_divergence([0, 0], [1, 0]) == 1.0
