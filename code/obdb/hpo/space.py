"""The search space: ``{name: [low, high]}`` from the settings turned into Optuna suggestions."""
from __future__ import annotations

from typing import Any, Mapping

import optuna

from ..settings.schema import INTEGER_PARAMETERS, HyperParams, ParamRange


def is_log(name: str, rng: ParamRange, log_scale: list[str]) -> bool:
    return rng.log if rng.log is not None else name in log_scale


def is_integer(name: str, rng: ParamRange) -> bool:
    if rng.integer is not None:
        return rng.integer
    return name in INTEGER_PARAMETERS


def suggest(trial: optuna.Trial, space: Mapping[str, ParamRange], log_scale: list[str],
            base: HyperParams) -> HyperParams:
    """Sample every dimension of ``space``; parameters not searched keep ``base``'s value."""
    values: dict[str, Any] = base.model_dump()
    for name, rng in space.items():
        if is_integer(name, rng):
            values[name] = trial.suggest_int(name, int(rng.low), int(rng.high), log=is_log(name, rng, log_scale))
        else:
            values[name] = trial.suggest_float(name, rng.low, rng.high, log=is_log(name, rng, log_scale))
    return HyperParams.model_validate(values)


def n_startup_trials(setting: int | str, space_size: int, max_trials: int) -> int:
    """Random trials before TPE takes over. ``"infer"`` (the original's default): twice the number
    of searched dimensions, but never more than half of the trial budget."""
    if setting == "infer":
        return max(1, min(2 * max(space_size, 1), max_trials // 2))
    return int(setting)


def enqueue_values(params: HyperParams, space: Mapping[str, ParamRange]) -> dict[str, Any]:
    """The searched part of a fixed parameter set, in the types the distributions expect."""
    dumped = params.model_dump()
    return {name: dumped[name] for name in space if dumped[name] is not None}
