#!/usr/bin/env python3
"""HTTP requests and wall time to push 10k shapes to CVAT: obdb's batched push vs one request per shape.

Both arms talk to the fake CVAT server of the tests (``tests/helpers/fake_cvat``: a threaded HTTP server on
127.0.0.1 answering the real cvat-sdk) and push the same shapes to two identical tasks:

* **batched**: what ``auto_annotate.py tasks`` does after inference: read the task's annotations,
  plan (dedupe), back the task up, add the review attributes to its labels, then PATCH
  ``action=create`` in chunks of ``--chunk-size`` shapes;
* **per shape**: the original tool's pattern, one PATCH per shape (``add_shapes(chunk_size=1)``),
  with no planning, backup or attribute set-up at all.

    .venv/bin/python scripts/bench_annotate.py                  # 10 000 shapes on 100 frames
    .venv/bin/python scripts/bench_annotate.py --shapes 2000 --json /tmp/bench_annotate.json

Requests are counted on the server (every HTTP request it received, login excluded). The fake
answers in well under a millisecond, so the per-shape arm's time is mostly HTTP round trips on
loopback; against a real CVAT (database writes and a network per request) the gap is wider.
"""
from __future__ import annotations

import argparse
import json
import logging
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))
sys.path.insert(0, str(ROOT / "tests"))


def make_shapes(n: int, frames: int, seed: int = 0) -> list[dict]:
    from obdb.annotate.function import Detections
    from obdb.cvat.shapes import auto_shapes

    import numpy as np

    rng = random.Random(seed)
    per_frame = [[] for _ in range(frames)]
    for i in range(n):
        x, y = rng.uniform(0, 1800), rng.uniform(0, 1000)
        per_frame[i % frames].append((x, y, x + rng.uniform(10, 100), y + rng.uniform(10, 70), rng.random()))
    shapes = []
    for frame, boxes in enumerate(per_frame):
        found = Detections(np.array([b[:4] for b in boxes], np.float32), np.array([b[4] for b in boxes], np.float32),
                           [("weed", "crop")[j % 2] for j in range(len(boxes))])
        shapes.extend(auto_shapes(frame, found))
    return shapes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shapes", type=int, default=10_000)
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--chunk-size", type=int, default=2000)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    from helpers.fake_cvat import FakeCvatServer

    from obdb.cvat.push import RunOptions, finish, plan_update
    from obdb.cvat.shapes import resolve_shapes
    from obdb.cvat import CvatCredentials, connect, get_annotations, get_task
    from obdb.cvat.writes import add_shapes

    shapes = make_shapes(args.shapes, args.frames)
    frames = [(f"frame_{i:06d}.png", 1920, 1080) for i in range(args.frames)]
    results = {}
    with FakeCvatServer(page_size=100) as fake, tempfile.TemporaryDirectory() as tmp:
        session = connect(CvatCredentials.from_env(fake.env))
        batched_id = fake.add_task("batched", ["weed", "crop"], frames)
        single_id = fake.add_task("per shape", ["weed", "crop"], frames)
        # per-shape arm gets its labels' review attributes up front (not timed), so both push the same JSON
        from obdb.cvat.review import review_attribute_specs
        from obdb.cvat.writes import add_label_attributes

        for label in fake.tasks[single_id].labels:
            add_label_attributes(session, label["id"], review_attribute_specs())

        start_requests, start = len(fake.requests), time.perf_counter()
        task = get_task(session, batched_id)
        plan = plan_update(task, get_annotations(session, batched_id), shapes)
        finish(session, plan, RunOptions(out_dir=Path(tmp), chunk_size=args.chunk_size, progress=False))
        results["batched"] = {"seconds": time.perf_counter() - start, "requests": len(fake.requests) - start_requests,
                              "shapes_stored": len(fake.annotations(batched_id)["shapes"])}

        resolved, _ = resolve_shapes(shapes, get_task(session, single_id).label_specs)
        start_requests, start = len(fake.requests), time.perf_counter()
        add_shapes(session, single_id, resolved, chunk_size=1)
        results["per_shape"] = {"seconds": time.perf_counter() - start,
                                "requests": len(fake.requests) - start_requests,
                                "shapes_stored": len(fake.annotations(single_id)["shapes"])}
        session.close()

    b, s = results["batched"], results["per_shape"]
    results["ratio"] = {"requests": s["requests"] / b["requests"], "seconds": s["seconds"] / b["seconds"]}
    results["setup"] = {"shapes": args.shapes, "frames": args.frames, "chunk_size": args.chunk_size,
                        "python": platform.python_version(), "machine": platform.machine()}
    print(f"{args.shapes} shapes on {args.frames} frames, fake CVAT on 127.0.0.1")
    print(f"{'arm':<10} {'requests':>9} {'seconds':>9} {'stored':>8}")
    for name in ("batched", "per_shape"):
        r = results[name]
        print(f"{name:<10} {r['requests']:>9} {r['seconds']:>9.2f} {r['shapes_stored']:>8}")
    print(f"per shape / batched: {results['ratio']['requests']:.0f}x the requests, "
          f"{results['ratio']['seconds']:.1f}x the wall time")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0 if b["shapes_stored"] == s["shapes_stored"] == args.shapes else 1


if __name__ == "__main__":
    sys.exit(main())
