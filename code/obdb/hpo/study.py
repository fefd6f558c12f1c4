"""One Optuna study per variant: warm-started, resumable, bounded in total trials.

``hpo`` only wraps training: the objective is a callable that trains with given hyperparameters
and extra trainer hooks, and returns the best validation metric. Pruning is a trainer hook that
reports each epoch's metric to the trial.
"""
from __future__ import annotations

import contextlib
import logging
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import optuna
from optuna.trial import TrialState

from ..errors import UserError
from ..settings.schema import HyperParams, ParamRange
from ..training import Hook, Trainer, TrainingDiverged
from .coordination import study_lock
from .optuna_private import fail_trial
from .space import suggest
from .storage import is_shared, storage_errors
from .warmstart import WarmStart, enqueue
from .workers import run_shared

log = logging.getLogger(__name__)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)

#: ``objective(params, trial_number, hooks) -> best validation score`` (trains one trial)
Objective = Callable[[HyperParams, int, Sequence[Hook]], float]


class PruneHook(Hook):
    """Reports the epoch's score to the trial and stops the trial when the pruner says so.

    A pruned trial is marked in three places: the Optuna state PRUNED (the dashboard shows it),
    the user attribute ``pruned_at_epoch``, and the scalar ``trial/pruned_at_epoch`` in the trial's
    TensorBoard run (through ``trainer.summary``). The last epoch is never pruned: stopping then
    saves nothing and would turn a finished result into a pruned one.
    """

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def after_epoch(self, trainer: Trainer) -> None:
        if trainer.result is None:
            raise RuntimeError("PruneHook needs an EvalHook before it (no EpochResult this epoch)")
        score = trainer.result.score
        epoch = trainer.state.epoch
        self.trial.report(score, epoch)
        self.trial.set_user_attr("epochs_run", epoch)
        if epoch < trainer.max_epochs and self.trial.should_prune():
            self.trial.set_user_attr("pruned_at_epoch", epoch)
            trainer.summary["trial/pruned_at_epoch"] = float(epoch)
            raise optuna.TrialPruned(f"pruned after epoch {epoch} with score {score:.4f}")


@dataclass
class SearchResult:
    params: HyperParams
    value: float
    trial_number: int
    n_complete: int
    n_pruned: int
    n_failed: int
    study_name: str

    def to_json(self) -> dict[str, Any]:
        return {"params": self.params.model_dump(), "best_value": self.value, "trial_number": self.trial_number,
                "study_name": self.study_name, "trials": {"complete": self.n_complete, "pruned": self.n_pruned,
                                                          "failed": self.n_failed}}


class StudyFailed(UserError, RuntimeError):
    """No trial of a study completed (every one diverged, failed or was pruned)."""


def study_name(experiment: str, variant: str) -> str:
    return f"{experiment}-{variant}"


def finished_count(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=FINISHED))


def recover_stale_trials(study: optuna.Study) -> int:
    """Fail trials left RUNNING by a killed runner and queue their parameters again, so a rerun
    redoes the interrupted trial instead of losing it. Only safe for single-runner storages."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        fail_trial(study, trial)
        study.enqueue_trial(dict(trial.params), user_attrs={"retry_of": trial.number}, skip_if_exists=False)
        log.warning("trial %d was left running by an interrupted run: marked failed and queued again", trial.number)
    return len(stale)


def run_search(objective: Objective, *, name: str, storage: optuna.storages.BaseStorage | str,
               sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner,
               space: Mapping[str, ParamRange], log_scale: list[str], base: HyperParams,
               warm_start: Sequence[HyperParams | WarmStart] = (), max_trials: int, timeout: float | None = None,
               poll_interval: float | None = None, recover_stale: bool = True, metric: str = "map",
               shared: bool | None = None) -> SearchResult:
    """Run (or continue) the study until it has ``max_trials`` finished trials in total.

    ``warm_start`` points are queued as the first trials of a new study only; continuing a study
    (a rerun with a higher ``max_trials``) runs just the missing trials.

    ``shared`` (default: any storage but a SQLite file) coordinates with other workers on the same
    study through the database: see :mod:`obdb.hpo.workers`."""
    shared = is_shared(storage) if shared is None else shared
    with storage_errors(storage):
        return _run_search(objective, name=name, storage=storage, sampler=sampler, pruner=pruner, space=space,
                           log_scale=log_scale, base=base, warm_start=warm_start, max_trials=max_trials,
                           timeout=timeout, poll_interval=poll_interval, recover_stale=recover_stale, metric=metric,
                           shared=shared)


def _run_search(objective: Objective, *, name: str, storage: optuna.storages.BaseStorage | str,
                sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner,
                space: Mapping[str, ParamRange], log_scale: list[str], base: HyperParams,
                warm_start: Sequence[HyperParams | WarmStart], max_trials: int, timeout: float | None,
                poll_interval: float | None, recover_stale: bool, metric: str, shared: bool) -> SearchResult:
    with (study_lock(storage, name) if shared else contextlib.nullcontext()):
        study = optuna.create_study(study_name=name, storage=storage, sampler=sampler, pruner=pruner,
                                    direction="maximize", load_if_exists=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([f"val_{metric}"])
        if recover_stale and not shared:
            recover_stale_trials(study)
        resumed = bool(study.trials)
        if not resumed:
            enqueue(study, warm_start, space)
    remaining = max_trials - finished_count(study)
    if resumed and not shared:
        # a new process seeds its sampler from settings.seed again, and would propose the points of
        # the first run once more (trial 0's parameters after a kill): draw fresh random numbers
        # instead; the sampler sees the finished trials through the storage
        sampler.reseed_rng()

    def optuna_objective(trial: optuna.Trial) -> float:
        params = suggest(trial, space, log_scale, base)
        trial.set_user_attr("params_full", params.model_dump())
        try:
            return objective(params, trial.number, [PruneHook(trial)])
        except TrainingDiverged as err:
            reason = " ".join(str(err).split())[:300]
            trial.set_user_attr("fail_reason", reason)  # kept for the "no trial completed" message
            log.warning("%s: this trial counts as failed and the search goes on", reason)
            return float("nan")  # Optuna records a failed trial, without the traceback a raise would print

    if shared and remaining > 0:
        sampler.reseed_rng()  # workers with the same settings.seed must not propose the same points
        log.info("study %s: %d finished trial(s) of %d; this worker takes trials while slots are left", name,
                 max_trials - remaining, max_trials)
        run_shared(study, optuna_objective, max_trials=max_trials, timeout=timeout, catch=(TrainingDiverged,),
                   poll_interval=poll_interval)
    elif remaining > 0:
        log.info("study %s: %d finished trial(s), running %d more", name, max_trials - remaining, remaining)
        callbacks = [optuna.study.MaxTrialsCallback(max_trials, states=FINISHED)]
        study.optimize(optuna_objective, n_trials=remaining, timeout=timeout, callbacks=callbacks,
                       catch=(TrainingDiverged,), gc_after_trial=True)
    else:
        log.info("study %s already has %d finished trial(s): nothing to search", name, max_trials - remaining)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not complete:
        failed = study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
        pruned = study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))
        reason = next((str(t.user_attrs["fail_reason"]) for t in reversed(failed)
                       if t.user_attrs.get("fail_reason")), "")
        reason = " ".join(reason.split())[:200]
        raise StudyFailed(f"study {name}: no trial completed ({len(failed)} failed, {len(pruned)} pruned"
                          + (f"; last failure: {reason}" if reason else "") + "); every trial diverged or failed: "
                          "narrow hpo_parameters (e.g. a lower lr upper bound) and rerun")
    best = study.best_trial
    full = best.user_attrs.get("params_full") or {**base.model_dump(), **best.params}
    return SearchResult(params=HyperParams.model_validate(full), value=float(best.value), trial_number=best.number,
                        n_complete=len(complete),
                        n_pruned=len(study.get_trials(deepcopy=False, states=(TrialState.PRUNED,))),
                        n_failed=len(study.get_trials(deepcopy=False, states=(TrialState.FAIL,))), study_name=name)
