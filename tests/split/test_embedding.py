"""PCA, t-SNE (both backends, and the sample-and-place path for large sets) and clustering."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from obdb.split import SplitError
from obdb.split.embedding import auto_cluster_count, cluster, pca_reduce, tsne_map


@pytest.fixture(scope="module")
def blobs() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 20)) * 6
    labels = np.repeat(np.arange(3), 120)
    return (centres[labels] + rng.normal(size=(360, 20))).astype(np.float32), labels


def _separated(coords: np.ndarray, labels: np.ndarray) -> bool:
    """Every point's nearest other point on the map has its label (clean blobs stay apart)."""
    d = ((coords[:, None, :] - coords[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    return bool((labels[d.argmin(1)] == labels).mean() > 0.97)


@pytest.mark.parametrize("backend", ["opentsne", "sklearn"])
def test_tsne_backends_keep_blobs_apart(blobs: Any, backend: str) -> None:
    x, labels = blobs
    x, labels = x[::3], labels[::3]  # scikit-learn's exact-gradient loop is slow on a busy CPU
    reduced, info = pca_reduce(x, 10, 0)
    assert reduced.shape == (120, 10) and 0.5 < info["explained_variance"] <= 1.0
    coords, meta = tsne_map(reduced, perplexity=20, seed=0, backend=backend, n_jobs=1)
    assert coords.shape == (120, 2) and np.isfinite(coords).all() and meta["backend"] == backend
    assert _separated(coords, labels)


def test_large_sets_are_fitted_on_a_sample_and_placed(blobs: Any) -> None:
    x, labels = blobs
    coords, info = tsne_map(x, perplexity=20, seed=0, fit_points=120, n_jobs=1)
    assert info["fitted_points"] == 120 and info["points"] == 360 and "median" in info["placement"]
    assert coords.shape == (360, 2) and _separated(coords, labels)
    again, _ = tsne_map(x, perplexity=20, seed=0, fit_points=120, n_jobs=1)
    assert np.allclose(coords, again)


def test_tiny_inputs_and_bad_backend() -> None:
    coords, info = tsne_map(np.eye(3, dtype=np.float32), perplexity=30, seed=0)
    assert coords.shape == (3, 2) and "too few" in info["method"]
    with pytest.raises(SplitError, match="unknown backend 'umap'"):
        tsne_map(np.random.default_rng(0).normal(size=(20, 4)), perplexity=5, seed=0, backend="umap")


def test_kmeans_and_hdbscan_find_the_blobs(blobs: Any) -> None:
    x, labels = blobs
    for method in ("kmeans", "hdbscan"):
        found, info = cluster(x, method=method, n_clusters=3, seed=0, min_cluster_size=20)
        assert info["method"] == method
        agreement = sum(np.bincount(found[labels == k]).max() for k in range(3)) / len(labels)
        assert agreement > 0.9
    noisy = np.vstack([x, np.random.default_rng(1).uniform(-40, 40, size=(5, 20))])
    found, info = cluster(noisy, method="hdbscan", n_clusters="auto", seed=0, min_cluster_size=20)
    assert info["noise_images"] >= 1 and found.max() == info["noise_label"]
    with pytest.raises(SplitError, match="unknown method 'dbscan'"):
        cluster(x, method="dbscan", n_clusters=3, seed=0)


def test_auto_cluster_count() -> None:
    assert auto_cluster_count(12) == 2 and auto_cluster_count(800) == 20 and auto_cluster_count(100_000) == 50
    assert auto_cluster_count(800, groups=40) == 4 and auto_cluster_count(800, groups=4) == 2
