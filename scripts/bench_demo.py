#!/usr/bin/env python3
"""Wall time and validation mAP of the whole demo run, fine-tuned from ImageNet vs from random init.

Each mode runs the demo's own command, ``code/torch_model_runner.py -f settings/demo.json
model.pretrained=<mode>`` (search + final training of both variants), one after the other into
fresh output folders, and the table gives each variant's val mAP from ``summary.json`` and the
time ratio of the two modes.

    .venv/bin/python scripts/bench_demo.py                         # both modes, demo defaults
    .venv/bin/python scripts/bench_demo.py --modes imagenet --standin max_num_trials=2

``imagenet`` uses torchvision's real ImageNet files where they are cached or downloadable (the
demo's lookup). A machine without internet has neither; there ``--standin`` times the same code
path with **stand-in** files: the right torchvision file names and tensor shapes, random weights
whose BatchNorm statistics are measured on the demo tiles (so the frozen BatchNorm of fine-tuning
normalises as it would with real weights). The compute per step, and so the time per epoch, is
the real path's; the mAP is not ImageNet's and the table says so. Early stopping and pruning
depend on the mAP, so the number of epochs can differ from a run on real weights.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))
SETTINGS = ROOT / "settings" / "demo.json"


def calibrated_standin(backbone: str, tiles: list[Path], out_dir: Path, size: int = 320) -> Path:
    """A random-init torchvision ``backbone`` classifier saved under torchvision's ImageNet file name,
    with every BatchNorm's running mean/var measured on ``tiles`` (ImageNet-normalised, as the
    detector's transform feeds them)."""
    import numpy as np
    import torch
    import torchvision
    from PIL import Image

    from obdb.models import hub

    torch.manual_seed(0)
    model = torchvision.models.get_model(backbone)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.reset_running_stats()
            module.momentum = None  # cumulative average over all calibration batches
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    model.train()
    with torch.no_grad():
        for start in range(0, len(tiles), 8):
            batch = [np.asarray(Image.open(p).convert("RGB").resize((size, size)), np.float32) / 255.0
                     for p in tiles[start:start + 8]]
            x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2)
            model((x - mean) / std)
    target = out_dir / hub.weights_file(backbone, hub.IMAGENET).file_name
    torch.save(model.state_dict(), target)
    return target


def run_mode(mode: str, overrides: list[str], work: Path, env: dict[str, str]) -> dict[str, Any]:
    out = work / f"demo-{mode}"
    cmd = [sys.executable, str(ROOT / "code" / "torch_model_runner.py"), "-f", str(SETTINGS),
           f"model.pretrained={mode}", f"save_dir={out}", f"writer_dir={out / 'runs'}", *overrides]
    print(f"[{mode}] {' '.join(cmd)}", flush=True)
    start = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, check=False, stderr=subprocess.PIPE, text=True)
    seconds = time.monotonic() - start
    sys.stderr.write(proc.stderr)
    error = next((line for line in proc.stderr.splitlines() if line.startswith("error: ")), None)
    if proc.returncode != 0:
        print(f"[{mode}] the runner exited {proc.returncode} after {seconds:.0f} s: {error}", flush=True)
    variants: dict[str, Any] = {}
    for folder in sorted(p for p in out.iterdir() if (p / "metrics.json").is_file()):
        metrics = json.loads((folder / "metrics.json").read_text())
        minutes = (datetime.fromisoformat(metrics["finished"]) - datetime.fromisoformat(metrics["started"]))
        variants[folder.name] = {"map": metrics["val"].get("map"), "map50": metrics["val"].get("map50"),
                                 "epochs": metrics["epochs_run"], "final_min": round(minutes.total_seconds() / 60, 1)}
    return {"mode": mode, "seconds": round(seconds, 1), "exit": proc.returncode, "error": error,
            "load_after": os.getloadavg()[0], "variants": variants}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modes", default="imagenet,none", help="comma-separated model.pretrained values")
    parser.add_argument("--standin", action="store_true",
                        help="without real ImageNet files, time the imagenet path with stand-in files (see above)")
    parser.add_argument("--keep", type=Path, default=None, help="write outputs here instead of a temp folder")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    parser.add_argument("overrides", nargs="*", help="settings overrides for both modes, e.g. max_num_trials=2")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]

    from obdb.demo import demo_pretrained, fetch_demo

    fetch_demo(ROOT / "data" / "demo", progress=False)
    env = dict(os.environ)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="obdb-bench-demo-") as tmp:
        work = args.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        standin = False
        # the demo's own check: "none" (after one line on stderr saying why) when the files cannot be had
        if "imagenet" in modes and demo_pretrained(SETTINGS, args.overrides) == "none":
            if not args.standin:
                print("pass --standin to time the imagenet path with stand-in files", file=sys.stderr)
                return 2
            weights = work / "standin-weights"
            weights.mkdir(exist_ok=True)
            tiles = sorted((ROOT / "data" / "demo" / "images").glob("*.png"))
            for backbone in ("resnet18", "mobilenet_v3_large"):
                print(f"stand-in: {calibrated_standin(backbone, tiles, weights)}", flush=True)
            env["OBDB_WEIGHTS_DIR"] = str(weights)
            standin = True
        for mode in modes:
            result = run_mode(mode, args.overrides, work, env)
            result["standin_weights"] = standin and mode == "imagenet"
            results.append(result)

    import torch

    print(f"\nmachine: {os.cpu_count()} CPUs, torch {torch.__version__} threads {torch.get_num_threads()}, "
          f"cuda {torch.cuda.is_available()}, {platform.processor() or platform.machine()}")
    print("| mode | whole run | variant | final training | val mAP | val mAP50 | epochs |")
    print("|---|---|---|---|---|---|---|")
    for r in results:
        label = r["mode"] + (" (stand-in weights: mAP not ImageNet's)" if r["standin_weights"] else "")
        for name, v in r["variants"].items():
            print(f"| {label} | {r['seconds'] / 60:.1f} min | {name} | {v['final_min']} min | {v['map']} "
                  f"| {v['map50']} | {v['epochs']} |")
        if r["exit"]:
            print(f"| {label} | {r['seconds'] / 60:.1f} min | (exit {r['exit']}) | {r['error']} | | | |")
    if len(results) == 2:
        print(f"time ratio {results[0]['mode']}/{results[1]['mode']} = "
              f"{results[0]['seconds'] / results[1]['seconds']:.2f}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
