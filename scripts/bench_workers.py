#!/usr/bin/env python3
"""Completed trials per minute with 1 vs 2 worker processes on one PostgreSQL study.

Each worker is a separate process running obdb's shared-study search loop (``run_search`` with a
PostgreSQL storage: trial slots under the study lock, heartbeats) on a cheap objective that
sleeps ``--sleep`` seconds per trial, so the numbers measure the coordination overhead and the
parallel speed-up, not training. Both arms get the same trial budget; every study has a unique
name and is deleted afterwards.

    .venv/bin/python scripts/bench_workers.py                       # 12 trials, 1 s each, 1 vs 2 workers
    .venv/bin/python scripts/bench_workers.py --trials 20 --json /tmp/bench_workers.json

Throughput is counted over the search itself: from the first trial's start to the last trial's
end as recorded in the study (process start-up excluded); the wall time with start-up is shown too.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "code"))
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"


def worker(args: argparse.Namespace) -> int:
    import logging

    import optuna

    from obdb.hpo import build_pruner, build_sampler, open_storage, run_search
    from obdb.settings.schema import HyperParams, ParamRange

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logging.basicConfig(level=logging.WARNING)
    space = {"lr": ParamRange(low=1e-4, high=1e-1), "momentum": ParamRange(low=0.5, high=0.95, log=False)}

    def objective(params: HyperParams, number: int, hooks: object) -> float:
        time.sleep(args.sleep)
        return 1.0 / (1.0 + abs(params.lr - 0.01))

    run_search(objective, name=args.study, storage=open_storage(args.url), sampler=build_sampler(
        "tpe", n_startup_trials=4, seed=None), pruner=build_pruner("none", warmup_epochs=0, max_epochs=1),
        space=space, log_scale=["lr"], base=HyperParams(), max_trials=args.trials)
    return 0


def run_arm(args: argparse.Namespace, workers: int) -> dict[str, float]:
    import optuna
    from optuna.trial import TrialState

    study = f"bench-workers-{uuid.uuid4().hex[:8]}-{workers}w"
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "--study", study, "--url", args.url,
               "--trials", str(args.trials), "--sleep", str(args.sleep)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    started = time.monotonic()
    processes = [subprocess.Popen(command, env={**env, "OBDB_WORKER_ID": f"bench-{i}"}) for i in range(workers)]
    try:
        codes = [p.wait(timeout=args.trials * args.sleep * 3 + 120) for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    wall = time.monotonic() - started
    try:
        trials = optuna.load_study(study_name=study, storage=args.url).get_trials(deepcopy=False)
        complete = [t for t in trials if t.state == TrialState.COMPLETE]
        span = (max(t.datetime_complete for t in complete) - min(t.datetime_start for t in complete)).total_seconds()
        by_worker = {}
        for t in complete:
            by_worker[t.user_attrs.get("worker", "?")] = by_worker.get(t.user_attrs.get("worker", "?"), 0) + 1
    finally:
        optuna.delete_study(study_name=study, storage=args.url)
    if any(codes) or len(complete) != args.trials or len(trials) != args.trials:
        raise SystemExit(f"{workers} worker(s): exit codes {codes}, {len(complete)} complete of {len(trials)} trials")
    return {"workers": workers, "complete": len(complete), "span_s": span, "wall_s": wall,
            "trials_per_min": len(complete) / span * 60, "trials_per_min_wall": len(complete) / wall * 60,
            "per_worker": by_worker}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("OBDB_BENCH_STORAGE", DEFAULT_URL), help="PostgreSQL URL")
    parser.add_argument("--trials", type=int, default=12, help="trial budget of each arm")
    parser.add_argument("--sleep", type=float, default=1.0, help="seconds per trial")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--study", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)

    load_before = os.getloadavg()[0]
    arms = [run_arm(args, 1), run_arm(args, 2)]
    ratio = arms[1]["trials_per_min"] / arms[0]["trials_per_min"]
    ratio_wall = arms[1]["trials_per_min_wall"] / arms[0]["trials_per_min_wall"]
    print(f"{args.trials} trials of {args.sleep:g} s each on {args.url.split('@')[-1]}")
    print("| workers | trials/min (search) | search span s | wall s (with start-up) | trials per worker |")
    print("|--------:|--------------------:|--------------:|-----------------------:|-------------------|")
    for arm in arms:
        print(f"| {arm['workers']} | {arm['trials_per_min']:.1f} | {arm['span_s']:.1f} | {arm['wall_s']:.1f} | "
              f"{', '.join(f'{k}: {v}' for k, v in sorted(arm['per_worker'].items()))} |")
    print(f"ratio 2 workers / 1 worker: {ratio:.2f} (search span), {ratio_wall:.2f} (wall with start-up)")
    result = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "trials": args.trials, "sleep_s": args.sleep,
              "arms": arms, "ratio": ratio, "ratio_wall": ratio_wall, "load_before": load_before,
              "load_after": os.getloadavg()[0], "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
              "python": platform.python_version()}
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
