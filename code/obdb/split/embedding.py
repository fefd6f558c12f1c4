"""PCA, t-SNE and clustering of image features.

The split itself only uses PCA features and clusters, which are deterministic for a seed; the
2-D t-SNE map is for people (the report's scatter plots and, optionally, clustering on the map),
so its approximations cannot change which image goes where unless ``cluster_space`` is ``tsne``.

t-SNE on large sets: openTSNE's FFT-accelerated gradient scales as O(n), but its affinities need
the ~3·perplexity nearest neighbours of every point, which is the slow part on a small CPU. Above
``fit_points`` images we follow openTSNE's recipe for large data: embed a random sample with
the full method and place every other point at the median map position of its 10 nearest
sampled neighbours in PCA space (what openTSNE's ``prepare_partial(initialization="median")``
does before its optional refinement). The sample fixes the map's structure; placed points land
inside the neighbourhoods they belong to, so clusters, splits and near-duplicates read the same.
"""
from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from .base import SplitError
from .neighbours import knn

log = logging.getLogger(__name__)
logging.getLogger("openTSNE").setLevel(logging.WARNING)  # it logs every call's parameters at INFO

MIN_TSNE_POINTS = 5
FFT_MIN_POINTS = 10_000
THREADS_MIN_POINTS = 5_000


def l2_normalise(features: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(features, axis=1, keepdims=True)
    return (features / np.maximum(norms, 1e-12)).astype(np.float32)


def pca_reduce(features: np.ndarray, dims: int, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Row-normalised features projected on their first ``dims`` principal components.

    Unit-length rows first, so one bright frame does not dominate the components (cosine geometry);
    randomized SVD for speed on large sets (exact enough for the leading components)."""
    from sklearn.decomposition import PCA

    x = l2_normalise(np.asarray(features, dtype=np.float32))
    n, d = x.shape
    k = max(1, min(dims, n - 1, d))
    if n < 3:
        return x - x.mean(axis=0), {"dims": d, "explained_variance": 1.0}
    solver = "randomized" if n * d > 2_000_000 and k < 0.8 * min(n, d) else "full"
    pca = PCA(n_components=k, svd_solver=solver, random_state=seed)
    reduced = pca.fit_transform(x).astype(np.float32)
    return reduced, {"dims": int(k), "explained_variance": float(pca.explained_variance_ratio_.sum())}


def tsne_map(x: np.ndarray, *, perplexity: float, seed: int, backend: str = "opentsne", fit_points: int = 25000,
             n_jobs: int = 1) -> tuple[np.ndarray, dict[str, Any]]:
    """2-D t-SNE coordinates of the rows of ``x`` (PCA features) and what was done to get them."""
    n = len(x)
    if n < MIN_TSNE_POINTS:  # t-SNE needs a neighbourhood; a handful of points: first two PCs
        coords = np.zeros((n, 2), np.float32)
        coords[:, :min(2, x.shape[1])] = x[:, :2]
        return coords, {"method": "pca (too few images for t-SNE)", "points": n}
    effective = float(min(perplexity, max(1.0, (n - 1) / 3.0)))
    if effective < perplexity:
        log.info("t-SNE perplexity %.1f is too large for %d images; using %.1f", perplexity, n, effective)
    info: dict[str, Any] = {"backend": backend, "perplexity": effective, "points": n}
    rng = np.random.default_rng(seed)
    if n > fit_points:
        sample = np.sort(rng.choice(n, size=fit_points, replace=False))
        rest = np.setdiff1d(np.arange(n), sample)
        fitted, sub = tsne_map(x[sample], perplexity=perplexity, seed=seed, backend=backend,
                               fit_points=fit_points, n_jobs=n_jobs)
        neighbours, _ = knn(x[sample], x[rest], k=10, seed=seed, n_jobs=n_jobs)
        coords = np.empty((n, 2), np.float32)
        coords[sample] = fitted
        coords[rest] = np.median(fitted[neighbours], axis=1)
        info.update(sub, points=n, fitted_points=int(fit_points),
                    placement="median of 10 nearest fitted neighbours (PCA space)")
        return coords, info
    if backend == "opentsne":
        from openTSNE import TSNE

        # FFT interpolation is O(n) but has a fixed cost per iteration that dominates below ~10k
        # points, where Barnes-Hut is faster (openTSNE's own "auto" rule). Small sets run on one
        # thread: their iterations are so short that thread hand-offs cost more than they save,
        # and far more on a machine shared with other jobs.
        method = "fft" if n >= FFT_MIN_POINTS else "bh"
        threads = n_jobs if n >= THREADS_MIN_POINTS else 1
        embedding = TSNE(n_components=2, perplexity=effective, metric="euclidean", initialization="pca",
                         negative_gradient_method=method, n_jobs=threads, random_state=seed,
                         verbose=False).fit(np.ascontiguousarray(x, dtype=np.float64))
        coords = np.asarray(embedding, dtype=np.float32)
        info.update(gradient=method, threads=threads,
                    kl_divergence=float(getattr(embedding, "kl_divergence", float("nan"))))
    elif backend == "sklearn":
        from sklearn.manifold import TSNE as SkTSNE

        model = SkTSNE(n_components=2, perplexity=min(effective, n - 1.0), init="pca", random_state=seed,
                       n_jobs=n_jobs if n >= THREADS_MIN_POINTS else 1)
        coords = model.fit_transform(x).astype(np.float32)
        info["kl_divergence"] = float(model.kl_divergence_)
    else:
        raise SplitError(f"split.tsne.tsne_backend: unknown backend {backend!r}; use 'opentsne' or 'sklearn'")
    return coords, info


def auto_cluster_count(n: int, groups: int | None = None) -> int:
    """``sqrt(n / 2)`` clusters, at least 2 and at most 50, and at most one per 10 groups: enough to
    describe the look of a data set, few enough that a cluster spans several groups (a cluster
    that is one video cannot be shared between train and val, however the groups are placed)."""
    k = min(50, round(math.sqrt(n / 2.0)))
    if groups is not None:
        k = min(k, groups // 10)
    return int(max(2, k))


def cluster(x: np.ndarray, *, method: str, n_clusters: int | str, seed: int, min_cluster_size: int = 10,
            groups: int | None = None) -> tuple[np.ndarray, dict[str, Any]]:
    """Cluster labels 0..k-1 for the rows of ``x``; HDBSCAN's noise points get their own label k
    (reported as ``noise``), so every image belongs to one stratum."""
    n = len(x)
    if n < 2:
        return np.zeros(n, np.int64), {"method": method, "clusters": 1}
    if method == "kmeans":
        from sklearn.cluster import KMeans

        k = auto_cluster_count(n, groups) if n_clusters == "auto" else int(n_clusters)
        k = max(1, min(k, n))
        model = KMeans(n_clusters=k, n_init=3 if n <= 20000 else 1, random_state=seed)
        labels = model.fit_predict(np.asarray(x, dtype=np.float32)).astype(np.int64)
        return labels, {"method": "kmeans", "clusters": int(k), "inertia": float(model.inertia_)}
    if method == "hdbscan":
        from sklearn.cluster import HDBSCAN

        size = max(2, min(min_cluster_size, n))
        labels = HDBSCAN(min_cluster_size=size, copy=True).fit_predict(np.asarray(x, dtype=np.float64)).astype(np.int64)
        found = int(labels.max()) + 1 if (labels >= 0).any() else 0
        noise = int((labels < 0).sum())
        labels[labels < 0] = found
        return labels, {"method": "hdbscan", "clusters": found + (1 if noise else 0),
                        "noise_label": found if noise else None,
                        "noise_images": noise, "min_cluster_size": size}
    raise SplitError(f"split.tsne.cluster_method: unknown method {method!r}; use 'kmeans' or 'hdbscan'")
