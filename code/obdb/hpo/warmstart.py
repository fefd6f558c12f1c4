"""Warm starts: known good points a new study tries before it samples anything.

A search of a variant rarely starts from nothing: the settings file may hold
``optimal_hpo_settings``, an earlier run may have left ``<save_dir>/<variant>/best_params.json``,
and ``hpo.warm_start_from`` may name earlier studies (in the same storage) or best-params files.
Their parameters are queued as the first trials of a *new* study, in that order and without
duplicates; a study that already has trials is continued as it is, so nothing is queued twice.
"""
from __future__ import annotations

from obdb.errors import UserError
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import optuna
from pydantic import ValidationError

from ..fileio import read_json
from ..redaction import redact
from ..settings.schema import HyperParams, ParamRange
from .space import enqueue_values, is_integer

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WarmStart:
    params: HyperParams
    source: str


class WarmStartError(UserError, ValueError):
    """A warm-start source that cannot be read (message names it)."""


def from_params_file(path: str | Path, *, required: bool = True) -> WarmStart | None:
    """The parameters of a ``best_params.json`` written by an earlier run (its ``params``)."""
    path = Path(path)
    if not path.is_file():
        if required:
            raise WarmStartError(f"hpo.warm_start_from: file not found: {path}")
        return None
    try:
        data = read_json(path)
        return WarmStart(HyperParams.model_validate(data["params"]), f"file {path}")
    except (ValueError, KeyError, TypeError, ValidationError) as err:
        raise WarmStartError(f"hpo.warm_start_from: {path} holds no valid 'params' ({err})") from err


def previous_search(path: str | Path) -> WarmStart | None:
    """The best parameters an earlier search of this variant left in ``best_params.json``, if
    there is such a file and it came from a search (not from fixed parameters)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = read_json(path)
    except ValueError:
        log.warning("%s is not valid JSON; not used as a warm start", path)
        return None
    if not isinstance(data, dict) or data.get("source") != "search":
        return None
    start = from_params_file(path)
    return WarmStart(start.params, f"earlier search ({path})") if start is not None else None


def from_study(storage: optuna.storages.BaseStorage | str, name: str, base: HyperParams) -> WarmStart:
    """The best completed trial of the study ``name`` in ``storage``."""
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        raise WarmStartError(f"hpo.warm_start_from: there is no study named {name!r} in the study storage") from None
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        raise WarmStartError(f"hpo.warm_start_from: study {name!r} has no completed trial")
    best = max(complete, key=lambda t: t.value if t.value is not None else -math.inf)
    values = best.user_attrs.get("params_full") or {**base.model_dump(), **best.params}
    return WarmStart(HyperParams.model_validate(values), f"study {name} trial {best.number}")


def resolve(entries: Sequence[str], storage: optuna.storages.BaseStorage | str, base: HyperParams) -> list[WarmStart]:
    """``hpo.warm_start_from`` entries: a path ending in ``.json`` is a best-params file, anything
    else a study name."""
    return [from_params_file(entry) if entry.endswith(".json") else from_study(storage, entry, base)  # type: ignore[misc]
            for entry in entries]


def check_entries(entries: Sequence[str], url: str) -> None:
    """Check ``hpo.warm_start_from`` before a run writes anything: files must hold valid
    parameters, and named studies must exist in the storage ``url``. A SQLite file that does not
    exist yet holds no study, and is not created just to find that out."""
    studies = [entry for entry in entries if not entry.endswith(".json")]
    for entry in entries:
        if entry.endswith(".json"):
            from_params_file(entry)
    if not studies:
        return
    if url.startswith("sqlite:"):
        db = Path(url.removeprefix("sqlite:///"))
        if not db.is_file():
            raise WarmStartError(f"hpo.warm_start_from: there is no study named {studies[0]!r}: the study "
                                 f"storage {db} does not exist yet")
    try:
        names = {s.study_name for s in optuna.get_all_study_summaries(storage=url, include_best_trial=False)}
    except Exception as err:  # a damaged or foreign database file: say which
        raise WarmStartError(f"hpo.warm_start_from: the study storage cannot be read ({type(err).__name__}: "
                             f"{redact(' '.join(str(err).split()))[:200]})") from err
    for name in studies:
        if name not in names:
            raise WarmStartError(f"hpo.warm_start_from: there is no study named {name!r} in the study storage")


def in_space(params: HyperParams, space: Mapping[str, ParamRange], source: str) -> dict[str, Any]:
    """The searched values of ``params``, each moved into the current range (an earlier study
    may have searched a wider one); integers stay integers."""
    values = enqueue_values(params, space)
    for name, rng in space.items():
        value = values[name]
        clipped = min(max(value, rng.low), rng.high)
        if is_integer(name, rng):
            clipped = int(round(clipped))
        if clipped != value:
            log.info("warm start from %s: %s = %g is outside [%g, %g]; using %g", source, name, value, rng.low,
                     rng.high, clipped)
        values[name] = clipped
    return values


def enqueue(study: optuna.Study, points: Sequence[WarmStart | HyperParams], space: Mapping[str, ParamRange]) -> int:
    """Queue the points (duplicates once) as the study's first trials; returns how many."""
    seen: list[dict[str, Any]] = []
    for point in points:
        start = point if isinstance(point, WarmStart) else WarmStart(point, "settings")
        values = in_space(start.params, space, start.source)
        if values in seen:
            continue
        seen.append(values)
        study.enqueue_trial(values, user_attrs={"warm_start": True, "warm_start_source": start.source})
        log.info("study %s: queued the parameters of %s (warm start %d)", study.study_name, start.source, len(seen))
    return len(seen)
