"""Nearest neighbours for the leakage check and t-SNE placement, never all pairs on large sets.

Small problems (``len(index) * len(query) <= EXACT_PAIRS``) are answered exactly by scikit-learn's
brute-force search. Larger ones use Annoy (random projection trees; the copy that ships inside
openTSNE, so no extra dependency): building is O(n log n) and each query touches ``search_k``
nodes, so the whole check is sub-quadratic. Annoy is approximate, but what the leakage check asks
for are *near-duplicates*, points much closer to each other than to anything else, which fall in
the same tree leaves and are found with near certainty.
"""
from __future__ import annotations

import numpy as np

EXACT_PAIRS = 200_000_000
ANNOY_TREES = 20
ANNOY_SEARCH_K = 4000


def knn(index: np.ndarray, query: np.ndarray, *, k: int, seed: int = 0, n_jobs: int = 1,
        exact_pairs: int = EXACT_PAIRS) -> tuple[np.ndarray, np.ndarray]:
    """``(indices, distances)`` of the ``k`` nearest rows of ``index`` for each row of ``query``
    (Euclidean; both ``(len(query), k)``, nearest first). ``k`` is capped at ``len(index)``."""
    k = max(1, min(k, len(index)))
    if len(query) == 0 or len(index) == 0:
        return np.zeros((len(query), 0), np.int64), np.zeros((len(query), 0), np.float32)
    if len(index) * len(query) <= exact_pairs:
        from sklearn.neighbors import NearestNeighbors

        model = NearestNeighbors(n_neighbors=k, algorithm="brute", metric="euclidean", n_jobs=n_jobs).fit(index)
        distances, indices = model.kneighbors(query)
        return indices.astype(np.int64), distances.astype(np.float32)
    from openTSNE.dependencies.annoy import AnnoyIndex

    tree = AnnoyIndex(index.shape[1], "euclidean")
    tree.set_seed(int(seed) % (2**31 - 1))
    for i, row in enumerate(np.asarray(index, dtype=np.float32)):
        tree.add_item(i, row)
    tree.build(ANNOY_TREES, n_jobs=max(1, n_jobs))
    indices = np.zeros((len(query), k), np.int64)
    distances = np.zeros((len(query), k), np.float32)
    for i, row in enumerate(np.asarray(query, dtype=np.float32)):
        found, dist = tree.get_nns_by_vector(row, k, search_k=max(ANNOY_SEARCH_K, ANNOY_TREES * k),
                                             include_distances=True)
        indices[i, :len(found)] = found
        distances[i, :len(found)] = dist
        if len(found) < k:  # tiny index / unlucky trees: pad with the farthest found
            indices[i, len(found):] = found[-1] if found else 0
            distances[i, len(found):] = dist[-1] if dist else np.inf
    return indices, distances
