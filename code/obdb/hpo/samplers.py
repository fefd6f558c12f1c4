"""Samplers. TPE with ``constant_liar`` so that several workers sharing a study do not all try
the same point while the others' trials are still running."""
from __future__ import annotations

import optuna


def build_sampler(name: str, *, n_startup_trials: int, seed: int | None) -> optuna.samplers.BaseSampler:
    if name == "tpe":
        return optuna.samplers.TPESampler(n_startup_trials=n_startup_trials, seed=seed, multivariate=True,
                                          constant_liar=True)
    if name == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    raise ValueError(f"unknown sampler {name!r}")
