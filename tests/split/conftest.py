"""Synthetic split data with known groups, clusters and classes (features injected, no images).

Each group is a "video" filmed in one of ``CLUSTERS`` scenes: its frames' features are the scene
centre plus a per-video offset plus small per-frame noise, so KMeans recovers the scenes and
frames of one video are close (the leakage the split must avoid). Scenes differ in their class
mix ("car" scenes, "person" scenes), and a few videos hold a rare "bike" class.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from obdb.records import ImageRecord

CLUSTERS = 4
DIMS = 32


@dataclass
class Synthetic:
    records: list[ImageRecord]
    features: np.ndarray
    scene: np.ndarray          # true cluster of each image
    planted: list[tuple[int, int]]  # (original row, duplicate row) near-duplicate pairs


def make_synthetic(*, groups: int = 60, seed: int = 0, duplicates: int = 0) -> Synthetic:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(CLUSTERS, DIMS)) * 4.0
    classes_by_scene = [("car", "car", "person"), ("car", "truck"), ("person", "person", "car"), ("truck", "person")]
    records, rows, scenes = [], [], []
    for g in range(groups):
        scene = g % CLUSTERS
        offset = rng.normal(size=DIMS) * 2.0  # other videos of a scene: > 0.1 cosine apart
        frames = int(rng.integers(3, 9))
        for f in range(frames):
            labels = list(rng.choice(classes_by_scene[scene], size=int(rng.integers(1, 4))))
            if g % 10 == 3:
                labels.append("bike")
            boxes = np.tile([[10.0, 10.0, 40.0, 40.0]], (len(labels), 1))
            name = f"vid{g:03d}_frame{f:04d}.png"
            records.append(ImageRecord(f"vid{g:03d}/{name}", Path("/nowhere") / name, 96, 96, boxes, labels,
                                       group=f"vid{g:03d}", task=f"vid{g:03d}", frame=f))
            rows.append(centres[scene] + offset + rng.normal(size=DIMS) * 0.3)
            scenes.append(scene)
    planted = []
    for d in range(duplicates):  # a re-upload of one frame under another "video"
        original = int(rng.integers(0, len(records)))
        src = records[original]
        records.append(ImageRecord(f"dup{d}/copy.png", Path("/nowhere") / f"dup{d}.png", 96, 96, src.boxes,
                                   src.labels, group=f"dup{d}", task=f"dup{d}"))
        rows.append(rows[original] + rng.normal(size=DIMS) * 1e-3)
        scenes.append(scenes[original])
        planted.append((original, len(records) - 1))
    return Synthetic(records, np.asarray(rows, dtype=np.float32), np.asarray(scenes), planted)


@pytest.fixture(scope="module")
def synthetic() -> Synthetic:
    return make_synthetic()


@pytest.fixture(scope="session")
def synth_factory():  # type: ignore[no-untyped-def]
    """``make_synthetic`` for tests that need another size, seed or planted duplicates."""
    return make_synthetic
