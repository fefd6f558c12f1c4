#!/usr/bin/env python3
"""Training-loop overhead: images/s of obdb's Trainer divided by a bare torchvision-style loop.

    .venv/bin/python scripts/bench_train.py [--steps 4] [--warmup 1] [--rounds 4] [--no-progress] [--json PATH]
        [--device cuda [--amp]]

Both arms train the same random-init detector from the same weights, on the same batches (same
dataset, loader, seed and global RNG state) with the same SGD settings and the same per-iteration
linear lr warm-up, and are timed over the same steps (data loading included, untimed warm-up
steps excluded). "bare" is the loop of torchvision's references/detection ``train_one_epoch``:
model(images, targets) -> sum -> zero_grad/backward/step (+ its LinearLR warm-up step). "obdb" is
:class:`obdb.training.Trainer.train` with the per-step hooks of a real final run (TensorBoard to
a temp dir, early stopping, tqdm bar); evaluation and checkpoints, once per epoch, are left out.
Arms alternate (bare/obdb, then obdb/bare, ...) and the medians are compared. Exit status is 0
whatever the ratio: this is a measurement, not a test.
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from itertools import chain, islice, repeat
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))

import torch  # noqa: E402

from obdb.dataset import DetectionDataset, make_loader  # noqa: E402
from obdb.models import ModelSpec  # noqa: E402
from obdb.models.detectors import assemble_detector  # noqa: E402
from obdb.records import ClassMap  # noqa: E402
from obdb.training import EarlyStopHook, TensorBoardHook, Trainer, build_optimizer, build_scheduler  # noqa: E402

TARGET = 0.95
ARMS = ("bare", "obdb")


class TimedBatches:
    """Yields exactly ``warmup + steps`` batches (cycling the loader's epochs) and times the last
    ``steps`` of them: loading plus whatever the consumer does with each batch."""

    def __init__(self, loader, warmup: int, steps: int, device: torch.device | None = None) -> None:
        self.loader, self.warmup, self.steps = loader, warmup, steps
        # CUDA runs asynchronously: wait for the previous step's kernels before each time stamp
        self.sync = device is not None and device.type == "cuda"
        self.step_seconds: list[float] = []  # per timed step: loading the batch + training on it

    def __len__(self) -> int:
        return self.warmup + self.steps

    @property
    def generator(self):  # Trainer(seed=...) reseeds the shuffle per epoch through this, as in fit()
        return self.loader.generator

    def __iter__(self):
        batches = islice(chain.from_iterable(repeat(self.loader)), len(self))
        stamps = []
        for i in range(len(self)):
            if i >= self.warmup:
                if self.sync:
                    torch.cuda.synchronize()
                stamps.append(time.perf_counter())
            yield next(batches)
        if self.sync:
            torch.cuda.synchronize()
        stamps.append(time.perf_counter())
        self.step_seconds = [b - a for a, b in zip(stamps, stamps[1:])]


def load_records(args: argparse.Namespace, tmp: Path):
    """(records, class_map) from the demo data, or from the tests' synthetic CVAT set."""
    from obdb.sources.local import load_local

    demo = ROOT / "data" / "demo"
    if args.data == "demo" or (args.data == "auto" and (demo / "annotations").is_dir()):
        data = load_local(demo / "annotations", images_dir=demo, progress=False)
        name = "data/demo"
    else:
        sys.path.insert(0, str(ROOT / "tests"))
        from helpers.tiny_data import make_tiny_dataset
        root = make_tiny_dataset(tmp / "synthetic", videos=8, frames=4, size=args.size)
        data = load_local(root / "annotations", images_dir=root / "images", progress=False)
        name = f"synthetic ({args.size}px)"
    return data.records, ClassMap(tuple(data.label_names())), name


def run_arm(arm: str, model, init_state, dataset, args, log_dir: Path, warmup: int, steps: int) -> dict:
    model.load_state_dict(init_state)
    model.zero_grad(set_to_none=True)
    torch.manual_seed(args.seed)  # augmentation and RPN/RoI sampling draw from the global RNG
    loader = make_loader(dataset, batch_size=args.batch_size, shuffle=True, workers=args.workers, seed=args.seed)
    device = torch.device(args.device)
    batches = TimedBatches(loader, warmup, steps, device)
    hp = SimpleNamespace(lr=args.lr, momentum=0.9, weight_decay=1e-4, step_size=3, gamma=0.1)
    if arm == "bare":
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)
        lr_warmup = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=0.001, total_iters=args.warmup_iters)
        use_amp = args.amp and device.type == "cuda"
        scaler = torch.amp.GradScaler("cuda") if use_amp else None
        model.to(device)
        model.train()
        losses = []
        for images, targets in batches:
            images = [img.to(device, non_blocking=True) for img in images]
            targets = [{k: v.to(device, non_blocking=True) for k, v in t.items()} for t in targets]
            with torch.autocast(device_type=device.type, enabled=use_amp):
                loss_dict = model(images, targets)
                loss = sum(loss_dict.values())
            optimizer.zero_grad()
            if scaler is not None:  # as the Trainer does with amp
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            lr_warmup.step()  # references/detection: per-iteration LinearLR in epoch 0
            losses.append(loss.detach())
        mean_loss = float(torch.stack(losses).mean())
    else:
        optimizer = build_optimizer(model, hp)
        hooks = [EarlyStopHook(patience=5), TensorBoardHook(log_dir)]
        trainer = Trainer(model, optimizer, build_scheduler(optimizer, hp), batches, device=device,
                          max_epochs=1, hooks=hooks, warmup_iters=args.warmup_iters, amp=args.amp, name="bench",
                          progress=args.progress, seed=args.seed)
        state = trainer.train()
        mean_loss = state.history[-1]["train/loss"]
    times = batches.step_seconds
    return {"arm": arm, "step_seconds": times, "images_per_s": len(times) * args.batch_size / sum(times),
            "mean_loss": mean_loss, "load_1min": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--backbone", default="resnet18", help="Faster R-CNN backbone (random init)")
    parser.add_argument("--size", type=int, default=256, help="model min_size = max_size")
    parser.add_argument("--batch-size", type=int, default=2, help="images per step (a real run: 4)")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--steps", type=int, default=4, help="timed steps per arm and round")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps before the timed ones")
    parser.add_argument("--prime", type=int, default=2, help="untimed steps once, before round 1")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of (bare, obdb), order alternating")
    parser.add_argument("--lr", type=float, default=0.005, help="SGD lr (momentum 0.9, weight decay 1e-4)")
    parser.add_argument("--warmup-iters", type=int, default=100, help="lr warm-up iterations (both arms)")
    parser.add_argument("--seed", type=int, default=0, help="model init, shuffle and augmentation seed")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch intra-op threads")
    parser.add_argument("--data", choices=("auto", "demo", "synthetic"), default="auto",
                        help="data/demo if present (auto), else the tests' synthetic CVAT set")
    parser.add_argument("--no-progress", dest="progress", action="store_false",
                        help="disable the Trainer's tqdm bar (a real run shows it)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N] (both arms)")
    parser.add_argument("--amp", action="store_true", help="mixed precision on CUDA (both arms, as train.amp)")
    args = parser.parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available")

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)  # Trainer.train does this on CPU; the bare arm must too
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp_name:
        tmp = Path(tmp_name)
        records, class_map, data_name = load_records(args, tmp)
        dataset = DetectionDataset(records, class_map, train=True)  # hflip + photometric, as a real run
        spec = ModelSpec(args.backbone, num_classes=class_map.num_classes, min_size=args.size, max_size=args.size)
        torch.manual_seed(args.seed)
        model = assemble_detector(spec)
        init_state = copy.deepcopy(model.state_dict())
        load_before = os.getloadavg()
        print(f"{args.backbone} Faster R-CNN {args.size}px, {data_name} ({len(records)} images), batch "
              f"{args.batch_size}, workers {args.workers}, {args.rounds} rounds x 2 arms x ({args.warmup} untimed + "
              f"{args.steps} timed) steps after {args.prime} priming steps, "
              f"{args.threads} threads, torch {torch.__version__}, load {load_before[0]:.2f}", flush=True)
        if args.prime:  # once: allocator and oneDNN caches, so round 1's first arm is not penalised
            run_arm("bare", model, init_state, dataset, args, tmp / "tb-prime", args.prime - 1, 1)
        results = []
        for r in range(args.rounds):
            order = ("bare", "obdb") if r % 2 == 0 else ("obdb", "bare")
            for arm in order:
                res = run_arm(arm, model, init_state, dataset, args, tmp / f"tb-{r}", args.warmup, args.steps)
                res["round"] = r + 1
                results.append(res)
                print(f"  round {r + 1} {arm:4s}: {res['images_per_s']:6.3f} img/s, mean loss "
                      f"{res['mean_loss']:.4f}, load {res['load_1min']:.2f}", file=sys.stderr, flush=True)
        load_after = os.getloadavg()

    # Per arm: images/s from the median step time over all rounds (robust to bursts of load from
    # other processes); cross-checks: median of per-round images/s, and the median of paired
    # per-step speed ratios (both arms train on the same batch at the same step index).
    steps = {arm: [t for r in results if r["arm"] == arm for t in r["step_seconds"]] for arm in ARMS}
    median = {arm: args.batch_size / statistics.median(steps[arm]) for arm in ARMS}
    round_median = {arm: statistics.median(r["images_per_s"] for r in results if r["arm"] == arm) for arm in ARMS}
    by_round = {(r["round"], r["arm"]): r for r in results}
    paired = [b / o for k in range(1, args.rounds + 1) for b, o in
              zip(by_round[k, "bare"]["step_seconds"], by_round[k, "obdb"]["step_seconds"])]
    ratio = median["obdb"] / median["bare"]
    loss_gap = max(abs(by_round[k, "bare"]["mean_loss"] - by_round[k, "obdb"]["mean_loss"])
                   for k in range(1, args.rounds + 1))
    print("\n| round | arm | images/s | median s/step | mean loss | load (1 min) |")
    print("|------:|-----|---------:|--------------:|----------:|-------------:|")
    for res in results:
        print(f"| {res['round']} | {res['arm']} | {res['images_per_s']:.3f} | "
              f"{statistics.median(res['step_seconds']):.3f} | {res['mean_loss']:.4f} | {res['load_1min']:.2f} |")
    for arm in ARMS:
        print(f"| median | {arm} | {median[arm]:.3f} | {args.batch_size / median[arm]:.3f} | | |")
    print(f"\ncross-checks: median per-round images/s ratio {round_median['obdb'] / round_median['bare']:.3f}, "
          f"median paired per-step ratio {statistics.median(paired):.3f}")
    print(f"largest per-round mean-loss gap between arms: {loss_gap:.2e} (~0: both arms did the same work)")
    print(f"load average (1 min): {load_before[0]:.2f} before, {load_after[0]:.2f} after ({os.cpu_count()} CPUs)")
    verdict = "PASS" if ratio >= TARGET else "BELOW TARGET"
    print(f"ratio obdb/bare = {ratio:.3f} (target >= {TARGET}) {verdict}")
    if args.json:
        payload = {"date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                   "machine": {"cpus": os.cpu_count(), "threads": args.threads, "processor": platform.processor()
                               or platform.machine(), "torch": torch.__version__, "python": platform.python_version(),
                               "load_before": load_before, "load_after": load_after},
                   "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                   "data": data_name, "rounds": results, "median_images_per_s": median, "ratio": ratio,
                   "ratio_round_median": round_median["obdb"] / round_median["bare"],
                   "ratio_paired_step_median": statistics.median(paired),
                   "target": TARGET, "pass": ratio >= TARGET, "max_loss_gap": loss_gap}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
