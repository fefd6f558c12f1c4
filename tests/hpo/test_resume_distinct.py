"""A search killed again and again never repeats a finished point (issue 20.5).

Each run is a forked process through the real study code (``run_search`` on a SQLite file, the
runner's TPE sampler with the same ``settings.seed`` every time) whose objective kills its own
process (SIGKILL) in the middle of a trial, as an OOM killer or ``docker kill`` would. Before
the fix every rerun's sampler started from the same seed and proposed trial 0's point again.
"""
from __future__ import annotations

import multiprocessing
import os
import signal
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from obdb.hpo import build_pruner, build_sampler, open_storage, run_search
from obdb.settings import HyperParams, ParamRange

SPACE = {"lr": ParamRange(low=0.001, high=0.1), "momentum": ParamRange(low=0.8, high=0.99)}
MAX_TRIALS = 8


def _search(db: str, kill_at_call: int | None) -> None:
    calls = 0

    def objective(params: HyperParams, number: int, hooks: Any) -> float:
        nonlocal calls
        calls += 1
        if kill_at_call is not None and calls == kill_at_call:
            os.kill(os.getpid(), signal.SIGKILL)  # mid-trial: the trial stays RUNNING in the study
        return params.lr * params.momentum

    run_search(objective, name="resume", storage=open_storage(f"sqlite:///{db}"),
               sampler=build_sampler("tpe", n_startup_trials=3, seed=0),
               pruner=build_pruner("none", warmup_epochs=1, max_epochs=1), space=SPACE, log_scale=["lr"],
               base=HyperParams(), max_trials=MAX_TRIALS)


def test_a_search_killed_five_times_never_repeats_a_finished_point(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    db = str(tmp_path / "optuna.db")
    kills = [2, 1, 2, 1, 2]  # the process dies in its n-th trial
    for kill_at in [*kills, None]:
        process = context.Process(target=_search, args=(db, kill_at))
        process.start()
        process.join(120)
        assert process.exitcode == (0 if kill_at is None else -signal.SIGKILL), process.exitcode

    study = optuna.load_study(study_name="resume", storage=f"sqlite:///{db}")
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert len(complete) == MAX_TRIALS and len(failed) == len(kills)
    points = [tuple(sorted(t.params.items())) for t in complete]
    assert len(set(points)) == len(points), points  # no finished point twice
    # each killed trial was run again with its own parameters (an unfinished point is redone, not lost)
    for trial in failed:
        assert any(t.params == trial.params for t in complete)
