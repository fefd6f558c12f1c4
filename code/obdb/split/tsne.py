"""The ``tsne`` split: features → PCA → clusters (+ t-SNE map) → group-balanced train/val or K folds.

:func:`analyse` turns records into an :class:`Analysis` (PCA features, clusters, 2-D map, perceptual
hashes); :func:`tsne_split` assigns whole groups so that image count, appearance clusters and
object classes are shared out as evenly as the groups allow. The analysis is also what the
report (:mod:`obdb.split.report`) measures any split with, so a ``group`` or ``random`` split can
be checked the same way.

Optional ``link_near_duplicates``: images whose features are near-duplicates (the leakage check's
threshold) are put in one group before splitting, even across declared groups, so an unlabelled
re-upload of a video cannot end up on both sides.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..records import ImageRecord
from ..settings.schema import TsneSplitSettings
from .balance import Strata, balanced_groups
from .base import TRAIN, VAL, SplitError, SplitManifest
from .cache import FeatureCache, compute_features
from .embedding import cluster, l2_normalise, pca_reduce, tsne_map
from .features import DHashExtractor, make_extractor
from .leakage import near_pairs

log = logging.getLogger(__name__)


def default_jobs() -> int:
    return max(1, min(os.cpu_count() or 1, 8))


@dataclass
class Analysis:
    """Everything measured about the images, row ``i`` for ``ids[i]``."""

    ids: list[str]
    groups: list[str]
    pca: np.ndarray                 # (n, d) PCA features (the space clusters and leakage use)
    clusters: np.ndarray            # (n,) cluster label 0..k-1
    coords: np.ndarray              # (n, 2) t-SNE map
    dhash: np.ndarray | None = None  # (n, 8) uint8 difference hashes
    info: dict[str, Any] = field(default_factory=dict)

    def cluster_names(self) -> list[str]:
        noise = self.info.get("clustering", {}).get("noise_label")
        k = int(self.clusters.max()) + 1 if len(self.clusters) else 0
        return ["noise" if c == noise else f"c{c}" for c in range(k)]


def analyse(records: Sequence[ImageRecord], options: TsneSplitSettings, *, seed: int,
            cache_dir: str | os.PathLike[str] | None = None, weights_dir: str | os.PathLike[str] | None = None,
            pretrained: str = "imagenet", features: np.ndarray | None = None, dhashes: np.ndarray | None = None,
            progress: bool = False, n_jobs: int | None = None) -> Analysis:
    """Measure ``records``. ``features``/``dhashes`` (rows in record order) skip the image pass,
    for features made elsewhere (the benchmark, an earlier export)."""
    if len(records) < 2:
        raise SplitError(f"a split needs at least 2 images, got {len(records)}")
    jobs = n_jobs or default_jobs()
    info: dict[str, Any] = {}
    if features is None:
        extractor = make_extractor(options.features, backbone=options.backbone, weights_dir=weights_dir,
                                   pretrained=pretrained, image_size=options.image_size, device=options.device,
                                   batch_size=options.batch_size, progress=progress)
        extractors = [extractor, DHashExtractor()] if options.dhash and dhashes is None else [extractor]
        cache = FeatureCache(cache_dir)
        computed = compute_features(records, extractors, cache, crops=options.crops, progress=progress)
        features = computed[extractor.id]
        if options.crops:  # equal weight for "the frame" and "its objects"
            features = np.hstack([l2_normalise(features), l2_normalise(computed[f"{extractor.id}+crops"])])
        if options.dhash and dhashes is None:
            dhashes = computed[DHashExtractor.id]
        info["features"] = {"extractor": extractor.id, "source": extractor.source, "dims": int(features.shape[1]),
                            "crops": options.crops, "cache_dir": str(cache_dir) if cache_dir else None,
                            "cache_hits": cache.hits, "cache_misses": cache.misses}
    else:
        features = np.asarray(features)
        if features.ndim != 2 or len(features) != len(records):
            raise SplitError(f"features must be one row per image: got shape {features.shape} "
                             f"for {len(records)} images")
        info["features"] = {"extractor": "given", "dims": int(features.shape[1])}
    pca, info["pca"] = pca_reduce(features, options.pca_dims, seed)
    coords, info["tsne"] = tsne_map(pca, perplexity=options.perplexity, seed=seed, backend=options.tsne_backend,
                                    fit_points=options.tsne_fit_points, n_jobs=jobs)
    space = coords if options.cluster_space == "tsne" else pca
    labels, info["clustering"] = cluster(space, method=options.cluster_method, n_clusters=options.clusters,
                                         seed=seed, min_cluster_size=options.min_cluster_size,
                                         groups=len({r.group for r in records}))
    info["clustering"]["space"] = options.cluster_space
    return Analysis([r.image_id for r in records], [r.group for r in records], pca, labels, coords,
                    dhashes if options.dhash else None, info)


def class_counts(records: Sequence[ImageRecord]) -> tuple[np.ndarray, list[str]]:
    """Boxes per class per image ``(n, classes)`` and the class names (sorted)."""
    names = sorted({label for r in records for label in r.labels})
    column = {name: j for j, name in enumerate(names)}
    counts = np.zeros((len(records), len(names)))
    for i, record in enumerate(records):
        for label in record.labels:
            counts[i, column[label]] += 1
    return counts, names


def link_groups(groups: Sequence[str], pca: np.ndarray, threshold: float, *, seed: int,
                n_jobs: int) -> tuple[list[str], list[list[str]]]:
    """Union of declared groups joined by near-duplicate images: returns each image's linked
    group name (its declared groups joined by ``+``) and the merged sets."""
    unique = sorted(set(groups))
    parent = {g: g for g in unique}

    def root(g: str) -> str:
        while parent[g] != g:
            parent[g] = parent[parent[g]]
            g = parent[g]
        return g

    for pair in near_pairs(pca, threshold, seed=seed, n_jobs=n_jobs):
        a, b = root(groups[pair.a]), root(groups[pair.b])
        if a != b:
            parent[max(a, b)] = min(a, b)
    members: dict[str, list[str]] = {}
    for g in unique:
        members.setdefault(root(g), []).append(g)
    name = {g: "+".join(m) for m in members.values() for g in m}
    return [name[g] for g in groups], [m for m in members.values() if len(m) > 1]


def tsne_split(records: Sequence[ImageRecord], analysis: Analysis, options: TsneSplitSettings, *,
               val_fraction: float, seed: int, fold: int | None = None, n_jobs: int | None = None) -> SplitManifest:
    """Whole groups to train/val (or to ``options.folds`` folds, ``fold`` being val), balanced on
    image count, clusters and (``balance_classes``) classes."""
    if [r.image_id for r in records] != analysis.ids:
        raise SplitError("the analysis does not belong to these records (image ids differ)")
    groups = [r.group for r in records]
    linked: list[list[str]] = []
    if options.link_near_duplicates:
        groups, linked = link_groups(groups, analysis.pca, options.near_duplicate_threshold, seed=seed,
                                     n_jobs=n_jobs or default_jobs())
        if linked:
            log.warning("link_near_duplicates joined %d set(s) of groups that share near-duplicate images, e.g. %s",
                        len(linked), linked[0][:4])
    names = sorted(set(groups))
    index = {g: i for i, g in enumerate(names)}
    group_index = np.asarray([index[g] for g in groups])
    n_clusters = int(analysis.clusters.max()) + 1
    strata = [Strata("images", np.ones((len(records), 1))),
              Strata("clusters", np.eye(n_clusters)[analysis.clusters])]
    if options.balance_classes:
        counts, _ = class_counts(records)
        if counts.shape[1]:
            strata.append(Strata("classes", counts, cover=True))
    if options.folds:
        targets = [1.0 / options.folds] * options.folds
    else:
        targets = [1.0 - val_fraction, val_fraction]
    try:
        bins, stats = balanced_groups(group_index, strata, targets, seed=seed, restarts=options.restarts)
    except SplitError as err:
        raise SplitError(f"split.method 'tsne': {err}") from err
    params: dict[str, Any] = {"val_fraction": val_fraction, "balance_cost": round(stats["cost"], 8),
                              "clusters": n_clusters, "cluster_method": options.cluster_method,
                              "features": analysis.info.get("features", {}).get("extractor"),
                              "pca_dims": options.pca_dims, "balance_classes": options.balance_classes}
    folds: dict[str, int] = {}
    if options.folds:
        chosen = 0 if fold is None else fold
        if not 0 <= chosen < options.folds:
            raise SplitError(f"split.fold {chosen} is not one of the {options.folds} folds (0 to {options.folds - 1})")
        val_mask = bins == chosen
        folds = {r.image_id: int(b) for r, b in zip(records, bins)}
        params.update(folds=options.folds, fold=chosen)
        params.pop("val_fraction")
    else:
        val_mask = bins == 1
    if linked:
        params["linked_groups"] = linked[:100]
    assignment = {r.image_id: VAL if v else TRAIN for r, v in zip(records, val_mask)}
    return SplitManifest("tsne", seed, assignment, {r.image_id: r.group for r in records}, params, folds)


def run_tsne_split(records: Sequence[ImageRecord], options: TsneSplitSettings | None = None, *, val_fraction: float,
                   seed: int, fold: int | None = None, cache_dir: str | Path | None = None,
                   weights_dir: str | Path | None = None, pretrained: str = "imagenet",
                   progress: bool = False) -> tuple[SplitManifest, Analysis]:
    """Analyse and split in one call (what :func:`obdb.split.make_split` uses for ``"tsne"``)."""
    options = options or TsneSplitSettings()
    analysis = analyse(records, options, seed=seed, cache_dir=cache_dir, weights_dir=weights_dir,
                       pretrained=pretrained, progress=progress)
    return tsne_split(records, analysis, options, val_fraction=val_fraction, seed=seed, fold=fold), analysis
