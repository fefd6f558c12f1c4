#!/usr/bin/env python3
"""Dataset lint image pass: what one full read of every image costs, serial vs thread pool vs cache.

    .venv/bin/python scripts/bench_lint.py [--images 48] [--width 1920] [--height 1080] [--rounds 3]

Setup (not timed): ``--images`` synthetic frames (half PNG, half JPEG quality 90) of smooth noise
plus coloured rectangles, the size of the original system's full-HD frames.

Timed arms, alternating in order each round, on the same files:

* **probe**: the loader's quick check (:func:`obdb.imageio.probe_image`: PNG chunk CRCs,
  JPEG decoded at 1/8 scale), which every run already pays;
* **lint-1**: :func:`obdb.lint.images.inspect_all` with one worker (read, sha256, verify, full
  decode, dHash);
* **lint-N**: the same with the default pool (one thread per CPU, at most 16);
* **cached**: ``lint-N`` again on a warm ``image_facts.json`` (what a resumed run pays).

Prints the median seconds per arm, CPU time over wall time (above 1: threads ran in parallel,
i.e. the decoders released the GIL), and the ratios measured in this run. Exit status 0 whatever the
numbers: this is a measurement, not a test.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))

import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from obdb.lint.images import default_workers, inspect_all  # noqa: E402
from obdb.imageio import probe_image  # noqa: E402


def make_images(folder: Path, count: int, width: int, height: int) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(count):
        coarse = Image.fromarray(rng.integers(40, 200, (9, 16, 3)).astype(np.uint8))
        array = np.asarray(coarse.resize((width, height), Image.Resampling.BILINEAR)).copy()
        array += rng.integers(0, 12, array.shape, dtype=np.uint8)  # sensor noise: realistic compression
        for _ in range(5):
            x, y = int(rng.integers(0, width - 200)), int(rng.integers(0, height - 200))
            array[y:y + 120, x:x + 160] = rng.integers(0, 255, 3)
        path = folder / (f"f{i:04d}.png" if i % 2 == 0 else f"f{i:04d}.jpg")
        Image.fromarray(array).save(path, **({"quality": 90} if path.suffix == ".jpg" else {}))
        paths.append(path)
    return paths


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=48)
    parser.add_argument("--width", type=int, default=1920)
    parser.add_argument("--height", type=int, default=1080)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    workers = default_workers()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        paths = make_images(folder, args.images, args.width, args.height)
        size_mb = sum(p.stat().st_size for p in paths) / 1e6
        cache = folder / "image_facts.json"
        inspect_all(paths, workers=workers, cache_file=cache, progress=False)  # warm the cache (and the OS)
        arms = {
            "probe": lambda: [probe_image(p) for p in paths],
            "lint-1": lambda: inspect_all(paths, workers=1, progress=False),
            f"lint-{workers}": lambda: inspect_all(paths, workers=workers, progress=False),
            "cached": lambda: inspect_all(paths, workers=workers, cache_file=cache, progress=False),
        }
        times: dict[str, list[float]] = {name: [] for name in arms}
        cpu: dict[str, list[float]] = {name: [] for name in arms}
        for _ in range(args.rounds):
            for name, arm in arms.items():
                start, start_cpu = time.perf_counter(), time.process_time()
                arm()
                times[name].append(time.perf_counter() - start)
                cpu[name].append(time.process_time() - start_cpu)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"{args.images} images {args.width}x{args.height} (half PNG, half JPEG q90; {size_mb:.1f} MB), "
          f"{args.rounds} rounds, {os.cpu_count()} CPU(s), pool of {workers}, Python {platform.python_version()}, "
          f"load after {load:.2f}")
    print("| arm | median s | ms/image | CPU s / wall s | runs (s) |")
    print("|---|---:|---:|---:|---|")
    median = {name: statistics.median(values) for name, values in times.items()}
    for name, values in times.items():
        busy = sum(cpu[name]) / max(sum(values), 1e-9)
        print(f"| {name} | {median[name]:.3f} | {1000 * median[name] / args.images:.1f} | {busy:.2f} | "
              f"{', '.join(f'{v:.3f}' for v in values)} |")
    pooled = median[f"lint-{workers}"]
    print(f"lint-1 / lint-{workers}: {median['lint-1'] / pooled:.2f}x (thread pool speed-up)")
    print(f"lint-{workers} / probe: {pooled / median['probe']:.2f}x (full lint read vs the loader's quick check)")
    print(f"lint-{workers} / cached: {pooled / median['cached']:.1f}x (resumed run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
