"""The ``tsne`` split on synthetic data: whole groups, balance, determinism and k-fold."""
from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np
import pytest

from obdb.settings.schema import TsneSplitSettings
from obdb.split import TRAIN, VAL, SplitError, SplitManifest, group_split
from obdb.split.balance import Strata, balanced_groups
from obdb.split.report import js_divergence
from obdb.split.tsne import Analysis, analyse, tsne_split

OPTIONS = TsneSplitSettings(clusters=4, dhash=False, thumbnails=False)


def _analysis(data: Any, seed: int = 0, **changes: Any) -> Analysis:
    options = OPTIONS.model_copy(update=changes)
    return analyse(data.records, options, seed=seed, features=data.features, n_jobs=1)


def _sides_per_group(manifest: SplitManifest) -> dict[str, set[str]]:
    sides: dict[str, set[str]] = defaultdict(set)
    for image_id, side in manifest.assignment.items():
        sides[manifest.groups[image_id]].add(side)
    return sides


def _val_share(manifest: SplitManifest, records: list[Any], key: Any) -> dict[Any, float]:
    """Share of each stratum value (key(record) -> iterable of values) that lands in val."""
    total, val = Counter(), Counter()
    for record in records:
        for value in key(record):
            total[value] += 1
            if manifest.assignment[record.image_id] == VAL:
                val[value] += 1
    return {value: val[value] / total[value] for value in total}


@pytest.fixture(scope="module")
def analysed(synthetic: Any) -> Analysis:
    return _analysis(synthetic)


def test_clusters_recover_the_scenes(synthetic: Any, analysed: Analysis) -> None:
    pairs = Counter(zip(analysed.clusters.tolist(), synthetic.scene.tolist()))
    # each found cluster is (almost) one scene: purity above 95 %
    purity = sum(max(c for (k2, _), c in pairs.items() if k2 == k) for k in set(analysed.clusters.tolist()))
    assert purity / len(synthetic.records) > 0.95
    assert analysed.coords.shape == (len(synthetic.records), 2) and np.isfinite(analysed.coords).all()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_no_group_straddles_and_strata_are_balanced(synthetic: Any, analysed: Analysis, seed: int) -> None:
    manifest = tsne_split(synthetic.records, analysed, OPTIONS, val_fraction=0.25, seed=seed)
    assert manifest.method == "tsne" and set(manifest.assignment) == {r.image_id for r in synthetic.records}
    assert all(len(s) == 1 for s in _sides_per_group(manifest).values())
    counts = manifest.counts()
    assert abs(counts[VAL] / len(synthetic.records) - 0.25) <= 0.03
    clusters = dict(zip(analysed.ids, analysed.clusters.tolist()))
    cluster_share = _val_share(manifest, synthetic.records, lambda r: [clusters[r.image_id]])
    assert all(abs(share - 0.25) <= 0.08 for share in cluster_share.values()), cluster_share
    class_share = _val_share(manifest, synthetic.records, lambda r: r.labels)
    assert all(abs(share - 0.25) <= 0.08 for share in class_share.values()), class_share


def test_balance_beats_a_plain_group_split(synthetic: Any, analysed: Analysis) -> None:
    """Over several seeds the balanced split's cluster and class distributions are closer
    between train and val than those of the group split (same groups, same val fraction)."""
    clusters = dict(zip(analysed.ids, analysed.clusters.tolist()))

    def divergences(manifest: SplitManifest) -> tuple[float, float]:
        sides = {TRAIN: Counter(), VAL: Counter()}
        classes = {TRAIN: Counter(), VAL: Counter()}
        for record in synthetic.records:
            side = manifest.assignment[record.image_id]
            sides[side][clusters[record.image_id]] += 1
            classes[side].update(record.labels)
        keys, names = sorted(clusters.values() and set(clusters.values())), sorted(classes[TRAIN] | classes[VAL])
        return (js_divergence([sides[TRAIN][k] for k in keys], [sides[VAL][k] for k in keys]),
                js_divergence([classes[TRAIN][n] for n in names], [classes[VAL][n] for n in names]))

    ours = np.mean([divergences(tsne_split(synthetic.records, analysed, OPTIONS, val_fraction=0.25, seed=s))
                    for s in range(5)], axis=0)
    plain = np.mean([divergences(group_split(synthetic.records, 0.25, s)) for s in range(5)], axis=0)
    assert ours[0] < plain[0] / 3 and ours[1] < plain[1] / 3, (ours, plain)
    assert ours[0] < 0.01 and ours[1] < 0.01


def test_same_seed_same_manifest_other_seed_differs(synthetic: Any, analysed: Analysis) -> None:
    first = tsne_split(synthetic.records, analysed, OPTIONS, val_fraction=0.2, seed=7)
    again = tsne_split(synthetic.records, _analysis(synthetic, seed=7), OPTIONS, val_fraction=0.2, seed=7)
    assert first.hash == again.hash and first.to_json() == again.to_json()
    hashes = {tsne_split(synthetic.records, analysed, OPTIONS, val_fraction=0.2, seed=s).hash for s in range(6)}
    assert len(hashes) > 1


def test_kfold_folds_partition_images_and_groups(synthetic: Any, analysed: Analysis) -> None:
    options = OPTIONS.model_copy(update={"folds": 5})
    vals = []
    for fold in range(5):
        manifest = tsne_split(synthetic.records, analysed, options, val_fraction=0.2, seed=3, fold=fold)
        assert set(manifest.folds) == set(manifest.assignment)
        assert sorted(set(manifest.folds.values())) == [0, 1, 2, 3, 4]
        assert {i for i, f in manifest.folds.items() if f == fold} == set(manifest.ids(VAL))
        assert manifest.params["folds"] == 5 and manifest.params["fold"] == fold
        fold_of_group: dict[str, set[int]] = defaultdict(set)
        for image_id, f in manifest.folds.items():
            fold_of_group[manifest.groups[image_id]].add(f)
        assert all(len(f) == 1 for f in fold_of_group.values())
        sizes = Counter(manifest.folds.values())
        assert all(abs(size / len(synthetic.records) - 0.2) <= 0.04 for size in sizes.values()), sizes
        vals.append(set(manifest.ids(VAL)))
        # the manifest with folds round-trips and its hash covers the folds
        assert SplitManifest.from_json(manifest.to_json()) == manifest
    assert sum(len(v) for v in vals) == len(synthetic.records)
    assert set().union(*vals) == {r.image_id for r in synthetic.records}  # every image is val exactly once


def test_too_few_groups_is_an_error_with_a_hint(synth_factory: Any) -> None:
    data = synth_factory(groups=3)
    analysis = analyse(data.records, OPTIONS.model_copy(update={"clusters": 2}), seed=0, features=data.features,
                       n_jobs=1)
    with pytest.raises(SplitError, match="needs at least 5 groups, found 3.*group_regex"):
        tsne_split(data.records, analysis, OPTIONS.model_copy(update={"folds": 5}), val_fraction=0.2, seed=0)


def test_link_near_duplicates_joins_groups(synth_factory: Any) -> None:
    data = synth_factory(groups=24, duplicates=3)
    options = OPTIONS.model_copy(update={"link_near_duplicates": True})
    analysis = analyse(data.records, options, seed=0, features=data.features, n_jobs=1)
    for seed in range(4):
        manifest = tsne_split(data.records, analysis, options, val_fraction=0.25, seed=seed)
        for original, duplicate in data.planted:
            a, b = data.records[original].image_id, data.records[duplicate].image_id
            assert manifest.assignment[a] == manifest.assignment[b]
    assert len(manifest.params["linked_groups"]) == 3


def test_balanced_groups_unequal_targets_and_every_bin_filled() -> None:
    groups = np.repeat(np.arange(10), 4)
    bins, stats = balanced_groups(groups, [Strata("images", np.ones((40, 1)))], [0.9, 0.1], seed=0)
    assert Counter(bins.tolist()) == {0: 36, 1: 4} and stats["cost"] >= 0
    # two huge groups and one tiny: still both bins get images
    groups = np.asarray([0] * 50 + [1] * 50 + [2])
    bins, _ = balanced_groups(groups, [Strata("images", np.ones((101, 1)))], [0.5, 0.5], seed=0)
    assert set(bins.tolist()) == {0, 1}
    with pytest.raises(SplitError, match="at least two positive shares"):
        balanced_groups(groups, [Strata("images", np.ones((101, 1)))], [1.0], seed=0)


def test_analysis_must_match_the_records(synthetic: Any, analysed: Analysis) -> None:
    with pytest.raises(SplitError, match="does not belong to these records"):
        tsne_split(synthetic.records[1:], analysed, OPTIONS, val_fraction=0.2, seed=0)
    with pytest.raises(SplitError, match="one row per image"):
        analyse(synthetic.records, OPTIONS, seed=0, features=synthetic.features[1:])
