"""Feature cache: one ``.npy`` per image content and extractor, so features are computed once.

Entries are keyed by the sha256 of the image *file bytes* (not its path: a renamed or copied
frame hits the cache, an edited one does not) and by the extractor ``id`` (another backbone,
weights file or input size is another cache). Layout::

    <cache_dir>/<extractor id>/<sha[:2]>/<sha>.npy            whole-image features
    <cache_dir>/<extractor id>+crops/<sha[:2]>/<sha>-<boxes>.npy   mean of the box-crop features
    <cache_dir>/content_hashes.json                           path|size|mtime -> sha256 (saves re-reading)

Files are plain ``.npy`` written atomically and read with ``allow_pickle=False``; an unreadable
entry is recomputed (with a warning), never trusted.
"""
from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from ..fullhd import cache_key as fullhd_key, crop_image
from ..fileio import file_sha256, read_json, write_json, write_with
from ..imageio import DECODE_VERSION, open_rgb
from ..records import ImageRecord, stable_hash
from .base import SplitError
from .features import FeatureExtractor, crop_boxes

log = logging.getLogger(__name__)

HASH_INDEX = "content_hashes.json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")



class FeatureCache:
    """``.npy`` files under ``root``; ``root=None`` caches nothing (every call computes)."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = Path(root) if root is not None else None
        self.hits = 0
        self.misses = 0

    def path(self, extractor_id: str, key: str) -> Path:
        if self.root is None:
            raise SplitError("this feature cache has no folder")
        return self.root / _UNSAFE.sub("_", extractor_id) / key[:2] / f"{key}.npy"

    def load(self, extractor_id: str, key: str) -> np.ndarray | None:
        if self.root is None:
            return None
        path = self.path(extractor_id, key)
        if not path.is_file():
            return None
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            log.warning("feature cache entry %s is unreadable (%s); recomputing it", path, err)
            return None

    def save(self, extractor_id: str, key: str, array: np.ndarray) -> None:
        if self.root is None:
            return

        def dump(tmp: Path) -> None:
            with open(tmp, "wb") as handle:  # a file object: np.save would append ".npy" to a name
                np.save(handle, np.ascontiguousarray(array), allow_pickle=False)

        write_with(self.path(extractor_id, key), dump)

    def load_many(self, extractor_id: str, keys: Sequence[str], *, progress: bool = False) -> np.ndarray:
        """Stack cached rows for ``keys``; a missing entry is an error naming it (used when the
        features were made elsewhere, e.g. by the benchmark or another machine)."""
        rows = []
        for key in tqdm(keys, desc=f"load {extractor_id}", unit="img", disable=not progress, leave=False):
            row = self.load(extractor_id, key)
            if row is None:
                raise SplitError(f"feature cache {self.root}: no {extractor_id} entry for {key}")
            rows.append(row)
        return np.stack(rows) if rows else np.zeros((0, 0), np.float32)

    # --- content hashes --------------------------------------------------------------------------
    def content_hashes(self, paths: Sequence[Path], *, progress: bool = False) -> list[str]:
        """sha256 of each file, remembered in ``content_hashes.json`` by path, size and mtime so an
        unchanged file is not read again on the next run."""
        index_file = self.root / HASH_INDEX if self.root is not None else None
        index: dict[str, str] = {}
        if index_file is not None and index_file.is_file():
            try:
                loaded = read_json(index_file)
                index = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                log.warning("%s is unreadable; image hashes are recomputed", index_file)
        changed = False
        hashes = []
        for path in tqdm(paths, desc="hash images", unit="img", disable=not progress, leave=False):
            try:
                stat = Path(path).stat()
            except OSError as err:
                raise SplitError(f"cannot read image {path} for split features: {err.strerror or err}") from err
            marker = f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
            sha = index.get(marker)
            if sha is None:
                sha = file_sha256(Path(path))
                index[marker] = sha
                changed = True
            hashes.append(sha)
        if changed and index_file is not None:
            write_json(index_file, index)
        return hashes


def _open_rgb(path: Path) -> Image.Image:
    try:
        return open_rgb(path)
    except (OSError, ValueError) as err:
        raise SplitError(f"cannot read image {path} for split features: {err}") from err


def crops_key(sha: str, boxes: np.ndarray) -> str:
    return f"{sha}-{stable_hash(np.round(np.asarray(boxes, dtype=np.float64), 1).tolist())[:12]}"


def compute_features(records: Sequence[ImageRecord], extractors: Sequence[FeatureExtractor], cache: FeatureCache,
                     *, crops: bool = False, progress: bool = False) -> dict[str, np.ndarray]:
    """Features of every record for every extractor (``{extractor.id: (n, dim) array}``).

    Cached rows are loaded; missing ones are computed in batches, each image decoded once for all
    extractors that miss it, and saved. With ``crops`` the first extractor also gets
    ``"<id>+crops"``: the mean feature of the record's box crops (zeros for a frame without boxes),
    which weights "what the objects look like" next to "what the frame looks like".
    """
    # the decoding version is part of every key: features of pixels decoded another way are stale
    hashes = [f"{h}-d{DECODE_VERSION}" for h in cache.content_hashes([r.path for r in records], progress=progress)]
    hashes = [fullhd_key(h, r) for h, r in zip(hashes, records)]  # full_hd: a cropped frame is another entry
    jobs: list[tuple[str, FeatureExtractor, bool]] = [(e.id, e, False) for e in extractors]
    if crops and extractors:
        jobs.append((f"{extractors[0].id}+crops", extractors[0], True))
    keys = {name: [crops_key(h, r.boxes) if is_crop else h for h, r in zip(hashes, records)]
            for name, _, is_crop in jobs}
    rows: dict[str, list[np.ndarray | None]] = {name: [cache.load(name, k) for k in keys[name]] for name, _, _ in jobs}
    todo = [i for i in range(len(records)) if any(rows[name][i] is None for name, _, _ in jobs)]
    cache.hits += sum(1 for name, _, _ in jobs for row in rows[name] if row is not None)
    cache.misses += sum(1 for name, _, _ in jobs for row in rows[name] if row is None)
    batch_size = max(1, min(e.batch_size for e in extractors)) if extractors else 1
    with tqdm(total=len(todo), desc="split features", unit="img", disable=not progress or not todo) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            images = {i: crop_image(_open_rgb(records[i].path), records[i]) for i in batch}  # full_hd crop
            for name, extractor, is_crop in jobs:
                missing = [i for i in batch if rows[name][i] is None]
                if not missing:
                    continue
                if is_crop:
                    for i in missing:
                        rows[name][i] = _mean_crop_feature(extractor, images[i], records[i].boxes)
                else:
                    out = extractor.extract([images[i] for i in missing])
                    for i, row in zip(missing, out):
                        rows[name][i] = row
                for i in missing:
                    cache.save(name, keys[name][i], rows[name][i])  # type: ignore[arg-type]
            bar.update(len(batch))
    result = {}
    for name, extractor, _ in jobs:
        stacked = [np.asarray(r) for r in rows[name]]
        result[name] = np.stack(stacked).astype(extractor.dtype) if stacked else np.zeros((0, 0), extractor.dtype)
    return result


def _mean_crop_feature(extractor: FeatureExtractor, image: Image.Image, boxes: np.ndarray) -> np.ndarray:
    pieces = crop_boxes(image, boxes)
    if not pieces:
        probe = extractor.extract([image])
        return np.zeros(probe.shape[1], dtype=probe.dtype)
    parts = [extractor.extract(pieces[s:s + extractor.batch_size]) for s in range(0, len(pieces), extractor.batch_size)]
    return np.concatenate(parts).mean(axis=0).astype(extractor.dtype)
