"""The search loop for a study that several workers share (PostgreSQL/MySQL storage).

Optuna's ``study.optimize(n_trials=…)`` counts trials per process, and ``MaxTrialsCallback`` only
sees finished ones, so two workers with "2 trials left" run 4. Here each trial slot is taken
under the study's database lock: a worker counts finished + running trials, and only when that
is below the budget does it ``ask()`` (which turns a queued retry or a new trial into RUNNING)
before releasing the lock. The budget therefore holds exactly, whatever the number of workers.

A worker whose trial is running records a heartbeat every ``heartbeat_interval`` seconds. Every
worker, before asking and while it waits, fails trials whose heartbeat is older than the grace
period; the storage's retry callback queues each such trial again with its parameters, and the
next free worker runs it. A worker with nothing left to start waits (bounded by the stale-trial
rule and ``timeout``) until the study is complete, so a killed worker's trial is retried, not lost.
"""
from __future__ import annotations

import gc
import logging
import threading
import time
import warnings
from typing import Callable

import optuna
from optuna.trial import TrialState

from .coordination import study_lock, worker_id

log = logging.getLogger(__name__)
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)


class Heartbeat:
    """Records the trial's heartbeat now and then every ``interval`` seconds in a thread."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_id: int) -> None:
        self.storage = storage
        self.trial_id = trial_id
        self.interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> None:
        if self.interval:
            self.storage.record_heartbeat(self.trial_id)  # type: ignore[attr-defined]

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception as err:  # noqa: BLE001 - a missed beat is retried; the trial goes on
                log.warning("heartbeat of trial id %d failed: %s", self.trial_id, err)

    def __enter__(self) -> "Heartbeat":
        if self.interval:
            self._thread = threading.Thread(target=self._run, name=f"heartbeat-{self.trial_id}", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


def fail_stale(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def counts(study: optuna.Study) -> tuple[int, int]:
    trials = study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.RUNNING))
    finished = sum(t.state in FINISHED for t in trials)
    return finished, len(trials) - finished


def take_slot(study: optuna.Study, max_trials: int, lock_timeout: float) -> tuple[optuna.Trial | None, int, int]:
    """Under the study lock: fail stale trials, count, and start a trial if the budget allows."""
    with study_lock(study._storage, study.study_name, timeout=lock_timeout):  # noqa: SLF001
        fail_stale(study)
        finished, running = counts(study)
        if finished >= max_trials or finished + running >= max_trials:
            return None, finished, running
        with warnings.catch_warnings():  # "heartbeat is supposed to be used with optimize": this loop beats itself
            warnings.filterwarnings("ignore", message="Heartbeat of storage", category=UserWarning)
            trial = study.ask()
        Heartbeat(study._storage, trial._trial_id).beat()  # noqa: SLF001 - no window without a heartbeat
        return trial, finished, running + 1


def run_shared(study: optuna.Study, func: Callable[[optuna.Trial], float], *, max_trials: int,
               timeout: float | None = None, catch: tuple[type[BaseException], ...] = (),
               poll_interval: float | None = None, lock_timeout: float = 600.0) -> int:
    """Run trials of ``study`` until it has ``max_trials`` finished ones; returns how many this
    worker ran. Returns early after ``timeout`` seconds (not starting new trials)."""
    storage = study._storage  # noqa: SLF001
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)() or 5
    poll = poll_interval if poll_interval is not None else min(2.0, max(0.2, interval / 2))
    start = time.monotonic()
    ran = 0
    waiting_logged = False
    me = worker_id()
    while True:
        if timeout is not None and time.monotonic() - start > timeout:
            log.info("study %s: hpo.timeout of %.0f s reached; worker %s stops starting trials", study.study_name,
                     timeout, me)
            break
        trial, finished, running = take_slot(study, max_trials, lock_timeout)
        if trial is None:
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
        retry_of = storage.get_trial_system_attrs(trial._trial_id).get("failed_trial")  # noqa: SLF001
        log.info("study %s: worker %s runs trial %d (%d/%d finished%s)", study.study_name, me, trial.number, finished,
                 max_trials, f", retry of trial {retry_of}" if retry_of is not None else "")
        trial.set_user_attr("worker", me)
        state, value = TrialState.FAIL, None
        try:
            with Heartbeat(storage, trial._trial_id):  # noqa: SLF001
                value = func(trial)
            state = TrialState.COMPLETE
        except optuna.TrialPruned:
            state = TrialState.PRUNED
        except catch as err:
            log.warning("trial %d failed: %s", trial.number, err)
        finally:
            # also on KeyboardInterrupt and unknown errors (which then propagate): never leave it RUNNING
            try:
                frozen = study.tell(trial, value if state == TrialState.COMPLETE else None, state=state,
                                    skip_if_finished=True)
                if frozen.state != state:
                    log.warning("trial %d had already been failed as stale (missed heartbeats); its retry "
                                "will run it again", trial.number)
            except Exception as err:  # noqa: BLE001
                log.warning("could not record the result of trial %d: %s", trial.number, err)
            gc.collect()
        ran += 1
    return ran
