#!/usr/bin/env python3
"""t-SNE split at scale: 100k cached 512-d embeddings → split and report, stage by stage.

    .venv/bin/python scripts/bench_split.py [--images 100000] [--dims 512] [--jobs 2] [--json PATH]

Setup (not timed): synthetic embeddings with known structure (``--scenes`` appearance clusters;
``--groups`` videos, each filmed in one scene, frames = scene + video offset + frame noise; a few
hundred frames re-uploaded under another video as planted near-duplicates; classes depending on
the scene), written as the real feature cache (one ``.npy`` per image content hash, as
:class:`obdb.split.cache.FeatureCache` stores them) plus one dHash per image.

Timed, with the code the runner uses: load the cache → PCA → t-SNE (openTSNE, FFT gradients; fit
on ``--fit-points`` and place the rest, see :mod:`obdb.split.embedding`) → KMeans → group-balanced
split → report (counts, divergences, straddle check, near-duplicate search by embedding and by
dHash, both sub-quadratic) → report files (JSON, CSV, PNG figures). Image decoding and hashing
are not part of it: the features are already cached, which is the case being measured.
Exit status 0 whatever the time: this is a measurement, not a test.
"""
from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))

import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from obdb.records import ImageRecord  # noqa: E402
from obdb.settings.schema import TsneSplitSettings  # noqa: E402
from obdb.split.cache import FeatureCache  # noqa: E402
from obdb.split.embedding import cluster, pca_reduce, tsne_map  # noqa: E402
from obdb.split.report import build_report, summary_lines, write_report  # noqa: E402
from obdb.split.tsne import Analysis, tsne_split  # noqa: E402

TARGET_S = 300.0
EXTRACTOR_ID = "bench-synthetic-512"
CLASSES = ("car", "truck", "person", "bike", "bus", "dog")


def make_data(n: int, dims: int, groups: int, scenes: int, duplicates: int, seed: int):
    """Records, features, dHashes and content keys of a synthetic video data set."""
    rng = np.random.default_rng(seed)
    # Structure lives in a 64-d subspace (real CNN features have a fast-decaying spectrum, which
    # is why PCA to 50 keeps what matters): scene centre + video offset + frame jitter, then a
    # random rotation into ``dims`` and a little isotropic noise.
    latent = 64
    centres = rng.normal(size=(scenes, latent)) * 3.0
    sizes = rng.multinomial(n - duplicates - groups, np.full(groups, 1.0 / groups)) + 1
    group_of = np.repeat(np.arange(groups), sizes)
    scene_of_group = rng.integers(0, scenes, size=groups)
    scene = scene_of_group[group_of]
    offsets = rng.normal(size=(groups, latent)) * 1.5
    z = centres[scene] + offsets[group_of] + rng.normal(size=(len(group_of), latent)) * 0.3
    rotation, _ = np.linalg.qr(rng.normal(size=(dims, latent)))
    features = (z @ rotation.T).astype(np.float32) + rng.normal(size=(len(group_of), dims)).astype(np.float32) * 0.02
    mix = rng.dirichlet(np.full(len(CLASSES), 0.5), size=scenes)
    base_hash = rng.integers(0, 256, size=(groups, 8), dtype=np.uint8)
    hashes = base_hash[group_of].copy()
    flips = rng.integers(0, 64, size=(len(group_of), 12))  # frames of a video differ in ~12 bits
    bits = np.unpackbits(hashes, axis=1)
    np.put_along_axis(bits, flips, 1 - np.take_along_axis(bits, flips, axis=1), axis=1)
    hashes = np.packbits(bits, axis=1)
    originals = rng.choice(len(group_of), size=duplicates, replace=False)
    copies = features[originals] + rng.normal(size=(duplicates, dims)).astype(np.float32) * 0.01
    features = np.vstack([features, copies])
    hashes = np.vstack([hashes, hashes[originals]])
    scene = np.concatenate([scene, scene[originals]])
    group_names = [f"video{g:05d}" for g in group_of] + [f"reupload{d:04d}" for d in range(duplicates)]
    records = []
    for i, (group, s) in enumerate(zip(group_names, scene)):
        k = int(rng.integers(1, 5))
        labels = list(rng.choice(CLASSES, size=k, p=mix[s]))
        records.append(ImageRecord(f"{group}/frame{i:06d}.jpg", Path(f"/bench/{group}/frame{i:06d}.jpg"), 640, 480,
                                   np.tile([[10.0, 10.0, 50.0, 50.0]], (k, 1)), labels, group=group, task=group))
    keys = [hashlib.sha256(f"bench-image-{i}".encode()).hexdigest() for i in range(len(records))]
    return records, features.astype(np.float32), hashes, keys, originals


def write_cache(cache_dir: Path, keys: list[str], features: np.ndarray) -> None:
    """The per-image cache layout, written directly (setup speed; the runner writes atomically)."""
    cache = FeatureCache(cache_dir)
    for key, row in tqdm(list(zip(keys, features)), desc="write cache (setup)", unit="img", leave=False,
                         disable=not sys.stderr.isatty()):
        path = cache.path(EXTRACTOR_ID, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as handle:
            np.save(handle, row, allow_pickle=False)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--dims", type=int, default=512)
    parser.add_argument("--groups", type=int, default=2000, help="videos (split groups)")
    parser.add_argument("--scenes", type=int, default=30, help="true appearance clusters")
    parser.add_argument("--duplicates", type=int, default=300, help="planted re-uploads under another video")
    parser.add_argument("--fit-points", type=int, default=25_000, help="t-SNE fitted on this many, rest placed")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", type=Path, help="feature cache folder (default: a temp folder, removed)")
    parser.add_argument("--out", type=Path, help="report folder (default: a temp folder, removed)")
    parser.add_argument("--json", type=Path, help="write the timings here")
    args = parser.parse_args()

    load_before = os.getloadavg()
    work = Path(tempfile.mkdtemp(prefix="obdb-bench-split-"))
    cache_dir, out_dir = args.cache or work / "features", args.out or work / "report"
    print(f"setup: {args.images} x {args.dims} embeddings, {args.groups} groups, {args.scenes} scenes, "
          f"{args.duplicates} planted duplicates -> {cache_dir}", flush=True)
    records, features, hashes, keys, originals = make_data(args.images, args.dims, args.groups, args.scenes,
                                                           args.duplicates, args.seed)
    write_cache(cache_dir, keys, features)
    del features
    options = TsneSplitSettings(clusters="auto", tsne_fit_points=args.fit_points, thumbnails=False)
    times: dict[str, float] = {}

    def stage(name: str, started: float) -> float:
        times[name] = time.perf_counter() - started
        print(f"  {name:<8} {times[name]:7.1f} s   (load {os.getloadavg()[0]:.2f})", flush=True)
        return time.perf_counter()

    print("timed:", flush=True)
    t0 = t = time.perf_counter()
    loaded = FeatureCache(cache_dir).load_many(EXTRACTOR_ID, keys, progress=False)
    t = stage("load", t)
    pca, pca_info = pca_reduce(loaded, options.pca_dims, args.seed)
    t = stage("pca", t)
    coords, tsne_info = tsne_map(pca, perplexity=options.perplexity, seed=args.seed, backend="opentsne",
                                 fit_points=options.tsne_fit_points, n_jobs=args.jobs)
    t = stage("tsne", t)
    labels, cluster_info = cluster(pca, method="kmeans", n_clusters=options.clusters, seed=args.seed)
    t = stage("cluster", t)
    analysis = Analysis([r.image_id for r in records], [r.group for r in records], pca, labels, coords, hashes,
                        {"features": {"extractor": EXTRACTOR_ID, "dims": args.dims}, "pca": pca_info,
                         "tsne": tsne_info, "clustering": cluster_info})
    manifest = tsne_split(records, analysis, options, val_fraction=0.2, seed=args.seed, n_jobs=args.jobs)
    t = stage("split", t)
    report = build_report(records, manifest, analysis, options, seed=args.seed, n_jobs=args.jobs)
    t = stage("report", t)
    files = write_report(out_dir, report, manifest, analysis, records, thumbnails=False)
    manifest.save(out_dir)
    t = stage("write", t)
    total = t - t0
    print(f"  {'total':<8} {total:7.1f} s   target <= {TARGET_S:.0f} s: {'PASS' if total <= TARGET_S else 'FAIL'}")
    print("\n".join(summary_lines(report)))
    # planted re-uploads that the split put on the other side from their original, and how many
    # of those the leakage check lists (their own group is one image, so the split cannot know)
    first_dup = len(records) - args.duplicates
    across = [(records[o].image_id, records[first_dup + d].image_id) for d, o in enumerate(originals)
              if manifest.assignment[records[o].image_id] != manifest.assignment[records[first_dup + d].image_id]]
    listed = {frozenset((p["a"], p["b"])) for p in report["leakage"]["embedding"]["closest"]}
    found = [pair for pair in across if frozenset(pair) in listed]
    print(f"  planted duplicates on the other side from their original: {len(across)}, listed by the check: "
          f"{len(found)}")
    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
              "load_before": load_before, "load_after": os.getloadavg(),
              "args": {k: str(v) for k, v in vars(args).items()},
              "stages_s": {k: round(v, 2) for k, v in times.items()}, "total_s": round(total, 2),
              "pass": total <= TARGET_S, "tsne": tsne_info, "clusters": cluster_info.get("clusters"),
              "divergence": report["divergence"], "straddling_groups": len(report["groups"]["straddling"]),
              "leak_pairs_embedding": report["leakage"]["embedding"]["pairs"],
              "leak_pairs_dhash": report["leakage"]["dhash"]["pairs"], "planted_across_sides": len(across),
              "planted_found": len(found), "files": {k: str(v) for k, v in files.items()}}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)  # the temp cache/report; --cache and --out folders are kept
    if args.out is not None:
        print(f"report kept in {out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
