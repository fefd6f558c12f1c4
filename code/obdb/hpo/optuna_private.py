"""The only module that touches Optuna's private API (underscore names), so an Optuna upgrade
that moves them breaks in one place. Each use is here because no public call does the job."""
from __future__ import annotations

from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState


def storage_of(study: optuna.Study) -> Any:
    """The study's storage object (its engine carries the database locks of
    :mod:`obdb.hpo.coordination`); Optuna offers no public accessor."""
    return study._storage  # noqa: SLF001


def fail_trial(study: optuna.Study, trial: FrozenTrial) -> None:
    """Mark a RUNNING trial failed without telling a result: a killed runner's trial, found by
    the next runner of a SQLite study (``study.tell`` needs the ``Trial`` of the process that
    asked for it)."""
    study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)  # noqa: SLF001
