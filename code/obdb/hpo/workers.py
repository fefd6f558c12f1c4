"""The search loop for a study that several workers share (PostgreSQL/MySQL storage), built on
Optuna's own parts.

* **Exact budget**: ``study.optimize`` runs the trials, with Optuna's ``MaxTrialsCallback``
  counting finished *and running* trials, so a worker stops once the study's trials fill
  ``max_num_trials``. The count and the next ``ask()`` must not interleave with another
  worker's (two workers finishing at once would both see a free slot), so :class:`SlotGate`
  holds the study's database lock from the count (in the callback) until the next trial is
  RUNNING (the first line of the objective). The budget therefore holds exactly.
* **Heartbeat and retry**: the storage has Optuna's heartbeat (``heartbeat_interval``,
  ``grace_period``) and ``RetryHeartbeatStaleTrialCallback`` (see
  :func:`obdb.hpo.storage.open_storage`): ``optimize`` beats for the running trial, and a trial
  whose worker was killed is failed once its heartbeat is stale and queued again with its
  parameters.
* **No lost retry**: a worker that finds no free slot while trials of other workers still run
  waits (failing stale trials as it polls) until the study is complete, so a killed worker's
  trial is retried by a survivor instead of being lost.
"""
from __future__ import annotations

import logging
import time
import warnings
from typing import Callable

import optuna
from optuna.trial import TrialState

from .coordination import study_lock, worker_id
from .optuna_private import storage_of

log = logging.getLogger(__name__)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
COUNTED = (*FINISHED, TrialState.RUNNING)  # what fills the budget


def fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def counts(study: optuna.Study) -> tuple[int, int]:
    trials = study.get_trials(deepcopy=False, states=COUNTED)
    finished = sum(t.state in FINISHED for t in trials)
    return finished, len(trials) - finished


class SlotGate:
    """A trial slot is taken (``ask``) only under the study lock, right after a count that found
    the budget not full. :meth:`open` takes the lock before ``optimize``; the callback takes it
    again after each trial and lets ``MaxTrialsCallback`` stop the study when the budget is full;
    :meth:`started` (first line of the objective) releases it once the new trial is RUNNING."""

    def __init__(self, study: optuna.Study, max_trials: int, lock_timeout: float) -> None:
        self.lock = study_lock(storage_of(study), study.study_name, timeout=lock_timeout)
        self.max_trials = max_trials
        self.limit = optuna.study.MaxTrialsCallback(max_trials, states=COUNTED)

    def full(self, study: optuna.Study) -> bool:
        return sum(counts(study)) >= self.max_trials

    def open(self, study: optuna.Study) -> tuple[bool, int, int]:
        """Lock, fail stale trials, count; keep the lock only when a slot is free."""
        self.lock.acquire()
        fail_stale(study)
        finished, running = counts(study)
        if finished + running >= self.max_trials:
            self.lock.release()
            return False, finished, running
        return True, finished, running

    def __call__(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        self.lock.acquire()
        self.limit(study, trial)  # study.stop() once finished + running trials fill the budget
        if self.full(study):
            self.lock.release()  # no next ask() follows

    def started(self) -> None:
        self.lock.release()

    def close(self) -> None:
        self.lock.release()  # no-op unless optimize ended between the callback and the next trial


def run_shared(study: optuna.Study, func: Callable[[optuna.Trial], float], *, max_trials: int,
               timeout: float | None = None, catch: tuple[type[Exception], ...] = (),
               poll_interval: float | None = None, lock_timeout: float = 600.0) -> int:
    """Run trials of ``study`` until it has ``max_trials`` finished ones; returns how many this
    worker ran. Stops starting trials after ``timeout`` seconds."""
    interval = getattr(storage_of(study), "get_heartbeat_interval", lambda: None)() or 5
    poll = poll_interval if poll_interval is not None else min(2.0, max(0.2, interval / 2))
    start = time.monotonic()
    gate = SlotGate(study, max_trials, lock_timeout)
    me = worker_id()
    ran = 0
    current: list[int] = []

    def objective(trial: optuna.Trial) -> float:
        nonlocal ran
        gate.started()
        ran += 1
        current[:] = [trial.number]
        trial.set_user_attr("worker", me)
        frozen = next((t for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                       if t.number == trial.number), None)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry_of = (optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
                        if frozen is not None else None)
        log.info("study %s: worker %s runs trial %d%s", study.study_name, me, trial.number,
                 f" (retry of trial {retry_of})" if retry_of is not None else "")
        return func(trial)

    waiting_logged = False
    while True:
        left = None if timeout is None else timeout - (time.monotonic() - start)
        if left is not None and left <= 0:
            log.info("study %s: hpo.timeout of %.0f s reached; worker %s stops starting trials", study.study_name,
                     timeout, me)
            break
        free, finished, running = gate.open(study)
        if not free:
            if finished >= max_trials:
                break
            if not waiting_logged:
                log.info("study %s: %d finished, %d running on other workers; worker %s waits for them "
                         "(a killed worker's trial is retried after the grace period)", study.study_name,
                         finished, running, me)
                waiting_logged = True
            time.sleep(poll)
            continue
        waiting_logged = False
        try:
            study.optimize(objective, timeout=left, callbacks=[gate], catch=catch, gc_after_trial=True)
        except (ValueError, AssertionError):
            # optimize could not record a trial that a peer had already failed as stale (this worker
            # missed its heartbeats, e.g. a suspended machine): its retry runs it again
            if not _failed_by_peer(study, current):
                raise
            log.warning("trial %d had already been failed as stale (missed heartbeats); its retry will run it "
                        "again", current[0])
        finally:
            gate.close()
    return ran


def _failed_by_peer(study: optuna.Study, current: list[int]) -> bool:
    if not current:
        return False
    trial = next((t for t in study.get_trials(deepcopy=False) if t.number == current[0]), None)
    return trial is not None and trial.state == TrialState.FAIL
