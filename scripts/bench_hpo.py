#!/usr/bin/env python3
"""Search efficiency: compute the original search needed vs obdb's defaults, in one run.

    nice -n 10 .venv/bin/python scripts/bench_hpo.py [--trials 8] [--epochs 4] [--size 128]
        [--arms A,B,C[,D]] [--metric map50] [--start-epochs 30 | --start-model FILE]
        [--json PATH] [--out DIR] [--loader-only]

Every arm runs the real ``obdb.pipeline.search`` (TPE, same ``settings.seed`` hence the same
sampler seed and the same per-trial model seeds, same trial budget) on the demo data
(``settings/demo.json``, fetched into ``data/demo`` if missing) for one variant:

* **A**: the original behaviour: ``hpo.pruner: none`` (every trial runs all ``search_epochs``),
  ``train.cache_images: false`` (images decoded from their files every epoch), and no warm start
  (the original search ignored ``optimal_hpo_settings``);
* **B**: obdb's defaults: the variant's ``optimal_hpo_settings`` from ``settings/demo.json`` (as
  committed, not tuned for this bench) enqueued as the first trial, median pruning, and the shared
  image cache (built inside the arm, so its cost is in B's time);
* **C**: B without the warm start: what pruning and the cache do alone;
* **D** (optional): B plus the cheap-fidelity option (``hpo.low_fidelity_epochs: 1``).

Trials start from a shared **start model** (see :func:`train_start_model`): users search from
pretrained weights, and from random init a few epochs rank trials by noise. ``--start-epochs 0``
gives the random-init search of the first version of this bench.

The target is 98% of the best validation ``--metric`` arm A ever reached (any trial, any epoch).
For each arm the script reports the training epochs and the wall time until an epoch first reached
it (epochs are summed over trials in trial order; a trial that diverged counts the epoch it failed
in; with cheap fidelity, an epoch on a fraction of the images counts as that fraction), the totals,
and the best value. Epochs are the primary measure of compute: wall times move with whatever else
runs on the machine.

To finish on a small CPU the detector is made lighter in every arm: ``--roi-samples`` RoI-head
samples per training image (torchvision: 512) and ``--proposals`` RPN proposals kept per image.
On a GPU use e.g. ``--device cuda --size 512 --roi-samples 512 --proposals 1000 --trials 20
--epochs 5 --workers 4``. ``--loader-only`` instead measures the data pipeline alone, in seconds:
training items per second without the cache (decode + the model's resize) and from the cache.
Exit status is 0 whatever the result: this is a measurement, not a test.
"""
from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))

import optuna  # noqa: E402
import torch  # noqa: E402

from obdb import pipeline  # noqa: E402
from obdb.settings.loader import parse_settings  # noqa: E402
from obdb.settings.schema import HyperParams  # noqa: E402
from obdb.training import config as training_config  # noqa: E402
from obdb.training import fit as fit_module  # noqa: E402

WITHIN = 0.98
ARMS: dict[str, dict[str, Any]] = {
    "A": {"hpo.pruner": "none", "train.cache_images": False},
    "B": {},
    "C": {},
    "D": {"hpo.low_fidelity_epochs": 1},
    "start": {},  # the shared start model's training (not an arm)
}
#: Arms whose study starts with the variant's ``optimal_hpo_settings`` (obdb's default warm start).
#: The original search ignored them, so A does not get them; C measures pruning and cache alone.
WARM_ARMS = {"B", "D"}
DESCRIPTION = {"A": "no pruning, no cache, no warm start (original)",
               "B": "obdb defaults (warm start, median pruning, image cache)",
               "C": "defaults without the warm start (pruning and cache alone)",
               "D": "defaults + low fidelity in epoch 1"}
#: Parameters of the shared start model (``--start-epochs``): a plain constant-lr run.
START_PARAMS = {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4, "step_size": 1000, "gamma": 0.5}


def lighter_detectors(roi_samples: int, proposals: int) -> None:
    """Every detector fit() builds gets a smaller RoI sample and fewer proposals (all arms)."""
    build = fit_module.build_detector

    def build_light(*args: Any, **kwargs: Any) -> Any:
        model, spec = build(*args, **kwargs)
        if hasattr(model, "roi_heads"):
            model.roi_heads.fg_bg_sampler.batch_size_per_image = roi_samples
            model.rpn._pre_nms_top_n = {"training": 2 * proposals, "testing": proposals}  # noqa: SLF001
            model.rpn._post_nms_top_n = {"training": proposals, "testing": proposals}  # noqa: SLF001
        return model, spec

    fit_module.build_detector = build_light


def arm_settings(args: argparse.Namespace, arm: str, out: Path) -> Any:
    raw = json.loads((ROOT / "settings" / "demo.json").read_text())
    raw["variants"] = [args.variant]
    block = {"run_hpo": 1, "use_settings_file": 0}
    if arm in WARM_ARMS:  # the settings file's optimal_hpo_settings, as committed, are tried first
        block["optimal_hpo_settings"] = raw[args.variant]["optimal_hpo_settings"]
    if args.start_model is not None:
        block["pretrained_model_path"] = str(args.start_model)
    raw[args.variant] = block
    raw["experiment"] = f"bench-{arm}"
    raw["dataset_dir"] = str(args.data)
    raw["data"] = {**raw["data"], "annotations": [str(args.data / "annotations")],
                   "images_dir": str(args.data / "images")}
    changes = {"save_dir": str(out / arm), "writer_dir": str(out / arm / "runs"), "max_num_trials": args.trials,
               "search_epochs": args.epochs, "num_initial_data_points": "infer", "seed": args.seed,
               "model.min_size": args.size, "model.max_size": args.size, "train.workers": args.workers,
               "train.batch_size": args.batch_size, "train.device": args.device,
               "hpo.low_fidelity_fraction": args.fidelity_fraction, "hpo_parameters.lr": list(args.lr_range),
               "hpo.metric": args.metric,
               **ARMS[arm]}
    for key, value in changes.items():
        *parents, last = key.split(".")
        block = raw
        for parent in parents:
            block = block.setdefault(parent, {})
        block[last] = value
    (out / f"settings-{arm}.json").write_text(json.dumps(raw, indent=2))  # what the arm ran with
    return parse_settings(raw, source=f"bench arm {arm}")


def _scalars(run_dir: Path, tag: str) -> list[Any]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    if not run_dir.is_dir():
        return []
    events = EventAccumulator(str(run_dir))
    events.Reload()
    return events.Scalars(tag) if tag in events.Tags()["scalars"] else []


def scalar_times(run_dir: Path, tag: str = "val/map") -> dict[int, float]:
    """Wall-clock time of each epoch's validation result, from the trial's TensorBoard run."""
    return {e.step: e.wall_time for e in _scalars(run_dir, tag)}


def scalar_values(run_dir: Path, tag: str) -> dict[int, float]:
    return {e.step: e.value for e in _scalars(run_dir, tag)}


def loader_throughput(args: argparse.Namespace, out: Path, rounds: int = 3) -> dict[str, float]:
    """Training items per second out of the data pipeline alone (augmentation on), without the
    cache (decode the file, the model resizes later: that resize is timed too, as the model's
    transform would run it) and from the image cache (already at the network's size)."""
    from torchvision.models.detection.transform import GeneralizedRCNNTransform

    from obdb.dataset import DetectionDataset

    settings = arm_settings(args, "B", out)
    paths = pipeline.run_paths(settings)
    prepared = pipeline.prepare_data(settings, paths, progress=False)
    data = fit_module.FitData(prepared.train, prepared.val, prepared.class_map, cache_images=True,
                              cache_dir=training_config.image_cache_dir(settings), progress=False)
    built = time.perf_counter()
    data.use_size(args.size, args.size)
    cached = data.train_set
    build_seconds = time.perf_counter() - built
    uncached = DetectionDataset(prepared.train, prepared.class_map, train=True)
    resize = GeneralizedRCNNTransform(args.size, args.size, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    rates: dict[str, list[float]] = {"uncached": [], "cached": []}
    for _ in range(rounds):
        for name, dataset in (("uncached", uncached), ("cached", cached)):
            torch.manual_seed(0)
            start = time.perf_counter()
            for index in range(len(dataset)):
                image, target = dataset[index]
                resize([image], [target])  # a no-op resize for the cached images (scale 1.0)
            rates[name].append(len(dataset) / (time.perf_counter() - start))
    best = {name: max(values) for name, values in rates.items()}
    return {"uncached_items_per_s": best["uncached"], "cached_items_per_s": best["cached"],
            "ratio": best["cached"] / best["uncached"], "cache_build_s": build_seconds, "images": len(cached)}


def prepare_arm(args: argparse.Namespace, arm: str, out: Path) -> tuple[Any, Any, Any, Any, Any]:
    """Settings, run paths, prepared data (split, lint), fit config and datasets of one arm, as the
    runner builds them before a search."""
    settings = arm_settings(args, arm, out)
    paths = pipeline.run_paths(settings)
    prepared = pipeline.prepare_data(settings, paths, progress=False)
    spec = training_config.model_spec(settings, args.variant, prepared.class_map.num_classes)
    config = training_config.fit_config(settings, args.variant, spec, progress=False)
    data = training_config.fit_data(settings, prepared.train, prepared.val, prepared.class_map, progress=False)
    return settings, paths, prepared, config, data


def train_start_model(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Train the shared start model once (reused from ``out`` when it is there) and point every arm at it.

    Users search from pretrained weights; random-init curves after a few epochs rank trials by
    noise (the first version of this bench showed that). ImageNet weights cannot be downloaded
    here, so the stand-in is a model trained on the same training split for ``--start-epochs`` epochs
    at :data:`START_PARAMS` (validation only watched, never used to pick the model), loaded by every
    trial of every arm through ``pretrained_model_path``, as a user's earlier model would be. Its
    cost is the same for every arm and is not counted in any."""
    path = out / f"start-model-{args.variant}-{args.size}px-{args.start_epochs}ep-seed{args.seed}.pt"
    info_path = path.with_suffix(".json")
    if path.exists() and info_path.exists():
        print(f"start model: reusing {path}", flush=True)
        args.start_model = path
        return json.loads(info_path.read_text())
    args.start_model = None
    _, paths, prepared, config, data = prepare_arm(args, "start", out)  # "start" keeps the image cache on
    print(f"start model: {args.start_epochs} epochs at {START_PARAMS} ...", flush=True)
    started = time.time()
    model, state, _ = fit_module.fit(data, config, HyperParams(**START_PARAMS), max_epochs=args.start_epochs,
                                     name="start model", log_dir=paths.save_dir / "runs")
    partial = path.with_suffix(".part")
    torch.save(model.state_dict(), partial)
    partial.replace(path)
    curve = scalar_values(paths.save_dir / "runs", f"val/{args.metric}")
    info = {"epochs": args.start_epochs, "params": START_PARAMS, "seconds": time.time() - started,
            "final": curve.get(args.start_epochs), "best": state.best_score, "best_epoch": state.best_epoch,
            "train_images": len(prepared.train), "val_images": len(prepared.val), "path": str(path)}
    info_path.write_text(json.dumps(info, indent=2))
    args.start_model = path
    return info


def run_arm(args: argparse.Namespace, arm: str, out: Path) -> dict[str, Any]:
    started = time.time()
    settings, paths, prepared, config, data = prepare_arm(args, arm, out)
    print(f"arm {arm}: {DESCRIPTION[arm]} ...", flush=True)
    try:
        pipeline.search(settings, args.variant, data, config, paths)
    except RuntimeError as err:  # every trial failed or was pruned: still a measurement
        print(f"arm {arm}: {err}", flush=True)
    finished = time.time()
    study = optuna.load_study(study_name=pipeline.study_name(paths.experiment, args.variant),
                              storage=pipeline.storage_url(settings.hpo.storage, paths.save_dir))
    fraction = settings.hpo.low_fidelity_fraction
    cheap = settings.hpo.low_fidelity_epochs
    trials, curve = [], []
    for trial in sorted(study.trials, key=lambda t: t.number):
        times = scalar_times(paths.tensorboard_dir(args.variant, f"trial-{trial.number:03d}"), f"val/{args.metric}")
        values = dict(sorted(trial.intermediate_values.items()))
        points = [{"trial": trial.number, "epoch": epoch, "value": value, "time": times.get(epoch),
                   "cost": fraction if epoch <= cheap else 1.0} for epoch, value in values.items()]
        if trial.state == optuna.trial.TrialState.FAIL:  # the epoch it diverged in was trained too
            points.append({"trial": trial.number, "epoch": len(values) + 1, "value": None, "time": None,
                           "cost": fraction if len(values) < cheap else 1.0})
        curve.extend(points)
        trials.append({"number": trial.number, "state": trial.state.name, "epochs": len(values),
                       "compute": sum(p["cost"] for p in points), "best": max(values.values()) if values else None,
                       "params": trial.params,
                       "seconds": (trial.datetime_complete - trial.datetime_start).total_seconds()
                       if trial.datetime_complete and trial.datetime_start else None})
    return {"arm": arm, "description": DESCRIPTION[arm], "started": started, "seconds": finished - started,
            "trials": trials, "curve": curve,
            "best": max((t["best"] for t in trials if t["best"] is not None), default=float("nan")),
            "compute": sum(t["compute"] for t in trials),
            "states": {s: sum(t["state"] == s for t in trials) for s in ("COMPLETE", "PRUNED", "FAIL")}}


def time_to_target(result: dict[str, Any], target: float) -> tuple[float | None, float | None]:
    """Compute (epochs) and seconds until an epoch first reached ``target``."""
    spent = 0.0
    for point in result["curve"]:
        spent += point["cost"]
        if point["value"] is not None and point["value"] >= target:
            seconds = point["time"] - result["started"] if point["time"] is not None else None
            return spent, seconds
    return None, None


def summarize(rows: list[dict[str, Any]]) -> float:
    """Target, compute to target and ratios to arm A for every arm so far; returns the target."""
    target = WITHIN * rows[0]["best"]
    ref = rows[0]
    for row in rows:
        row["epochs_to_target"], row["seconds_to_target"] = time_to_target(row, target)
        row["ratio_epochs_to_target"] = (row["epochs_to_target"] / ref["epochs_to_target"]
                                         if row["epochs_to_target"] is not None and ref["epochs_to_target"] else None)
        row["ratio_seconds_to_target"] = (row["seconds_to_target"] / ref["seconds_to_target"] if
                                          row["seconds_to_target"] is not None and ref["seconds_to_target"] else None)
        row["ratio_epochs_total"] = row["compute"] / ref["compute"]
        row["ratio_seconds_total"] = row["seconds"] / ref["seconds"]
        row["meets_target"] = (row["ratio_epochs_to_target"] is not None and row["ratio_epochs_to_target"] <= 1 / 3
                               and row["best"] >= ref["best"])
    return target


def report(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    ref = rows[0]
    target = WITHIN * ref["best"]
    print(f"\n{args.variant} on {args.data.name}: {args.trials} trials x {args.epochs} search epochs, "
          f"{args.size} px, batch {args.batch_size}, seed {args.seed}; "
          f"metric val/{args.metric}; target = {WITHIN:.0%} of A's best = {target:.4f}; "
          f"trials start from {args.start_model or 'random init'}\n")
    print("| arm | epochs to target | time to target | epochs (total) | time (total) | best mAP | "
          "complete / pruned / failed |")
    print("|---|---:|---:|---:|---:|---:|---|")
    for row in rows:
        s = row["states"]
        print(f"| {row['arm']}: {row['description']} | {fmt(row['epochs_to_target'], '.1f')} | "
              f"{fmt(row['seconds_to_target'], '.0f', ' s')} | {row['compute']:.1f} | {row['seconds']:.0f} s | "
              f"{row['best']:.4f} | {s['COMPLETE']} / {s['PRUNED']} / {s['FAIL']} |")
    for row in rows[1:]:
        print(f"\n{row['arm']}/A: epochs to target {fmt(row['ratio_epochs_to_target'], '.3f')}, time to target "
              f"{fmt(row['ratio_seconds_to_target'], '.3f')}, total epochs {row['ratio_epochs_total']:.3f}, total time "
              f"{row['ratio_seconds_total']:.3f}; best mAP {row['best']:.4f} vs {ref['best']:.4f} "
              f"(target: <= 1/3 of A's epochs to target, best >= A's): {'PASS' if row['meets_target'] else 'FAIL'}")
    gaps = twin_spread(rows)
    if gaps:
        verdict = "below" if max(gaps) < 1 - WITHIN else "NOT below"
        print(f"\nidentical trials in two arms: best values differ by a median {statistics.median(gaps):.1%} "
              f"(max {max(gaps):.1%}, {len(gaps)} pairs); the {1 - WITHIN:.0%} window is {verdict} that noise")
    for row in rows:
        print(f"\narm {row['arm']} trials:")
        for t in row["trials"]:
            print(f"  #{t['number']} {t['state']:<8} epochs {t['epochs']} best {fmt(t['best'], '.4f')} "
                  f"{fmt(t['seconds'], '.0f', ' s')} lr {t['params'].get('lr', math.nan):.4g}")


def twin_spread(rows: list[dict[str, Any]]) -> list[float]:
    """How far apart identical trials land: for every trial of another arm with exactly the
    parameters of one of A's trials (same sampler draws; same model seed only where the trial number
    matches too), ``|best - A's best| / A's best``. When these exceed the 2% window, which arm reaches
    the target first is decided by training noise, not by the search."""
    ref = {json.dumps(t["params"], sort_keys=True): t for t in rows[0]["trials"] if t["best"] is not None}
    gaps = []
    for row in rows[1:]:
        for trial in row["trials"]:
            twin = ref.get(json.dumps(trial["params"], sort_keys=True))
            if twin is not None and trial["best"] is not None and trial["state"] == "COMPLETE" and twin["best"]:
                gaps.append(abs(trial["best"] - twin["best"]) / twin["best"])
    return gaps


def fmt(value: float | None, spec: str, unit: str = "") -> str:
    return "not reached" if value is None else format(value, spec) + unit


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=ROOT / "data" / "demo")
    parser.add_argument("--variant", default="resnet18")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=4, help="search_epochs")
    parser.add_argument("--size", type=int, default=128, help="model.min_size = max_size")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--lr-range", type=float, nargs=2, default=(0.001, 0.015), metavar=("LOW", "HIGH"),
                        help="search range of lr (random-init detectors diverge above ~0.02 here)")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--roi-samples", type=int, default=128)
    parser.add_argument("--proposals", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--arms", default="A,B,C", help="comma-separated, from A, B, C, D")
    parser.add_argument("--metric", default="map50", choices=("map", "map50", "map75"),
                        help="hpo.metric of every arm (and of the target)")
    parser.add_argument("--start-epochs", type=int, default=30,
                        help="train a shared start model for this many epochs first (0: every trial from random init)")
    parser.add_argument("--start-model", type=Path, default=None,
                        help="use this model file as every trial's start instead of training one")
    parser.add_argument("--fidelity-fraction", type=float, default=0.5, help="arm D: share of images in epoch 1")
    parser.add_argument("--out", type=Path, default=None, help="work folder (default: a temporary one)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--loader-only", action="store_true",
                        help="only measure items/s of the data pipeline with and without the image cache")
    args = parser.parse_args()
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if arms[0] != "A" or any(a not in DESCRIPTION for a in arms):
        parser.error("--arms must start with A (the reference) and name only A, B, C, D")
    args.data = args.data.resolve()
    if not (args.data / "annotations").is_dir():
        from obdb.demo import fetch_demo

        fetch_demo(args.data, progress=False)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    lighter_detectors(args.roi_samples, args.proposals)
    out = args.out or Path(tempfile.mkdtemp(prefix="obdb-bench-hpo-"))
    out.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()[0]
    when = datetime.datetime.now(datetime.timezone.utc)
    if args.loader_only:
        rates = loader_throughput(args, out)
        print(f"data pipeline, {rates['images']} training images at {args.size} px (best of 3 passes): "
              f"uncached {rates['uncached_items_per_s']:.0f} items/s, cached {rates['cached_items_per_s']:.0f} "
              f"items/s, ratio {rates['ratio']:.2f}; cache built in {rates['cache_build_s']:.1f} s")
        return 0
    start: dict[str, Any] | None = None
    if args.start_model is None and args.start_epochs > 0:
        start = train_start_model(args, out)
        print(f"start model: {start['epochs']} epochs in {start['seconds']:.0f} s, val {args.metric} "
              f"{start['final']} at the last epoch", flush=True)
    rows: list[dict[str, Any]] = []
    for arm in arms:
        rows.append(run_arm(args, arm, out))
        target = summarize(rows)
        print(f"arm {arm} done in {rows[-1]['seconds']:.0f} s: {rows[-1]['compute']:.1f} epochs, "
              f"best mAP {rows[-1]['best']:.4f}", flush=True)
        if args.json:  # after every arm, so a long run that is stopped keeps what it measured
            args.json.write_text(json.dumps({
                "date": when.isoformat(timespec="seconds"), "args": {k: str(v) for k, v in vars(args).items()},
                "target": target, "start_model": start, "load_before": load_before, "load_after": os.getloadavg()[0],
                "machine": {"python": platform.python_version(), "torch": torch.__version__,
                            "cpus": os.cpu_count(), "threads": torch.get_num_threads()},
                "arms": rows}, indent=2, default=str))
    report(args, rows)
    if args.json:
        print(f"\nresults: {args.json}")
    print(f"work folder: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
