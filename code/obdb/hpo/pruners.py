"""Pruners on the per-epoch validation metric (one Optuna step per epoch, starting at 1)."""
from __future__ import annotations

import optuna


def build_pruner(name: str, *, warmup_epochs: int, max_epochs: int) -> optuna.pruners.BasePruner:
    if name == "median":
        # Two finished trials give a median worth comparing against; before that, nothing is pruned.
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=warmup_epochs)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=max(1, warmup_epochs), max_resource=max(1, max_epochs),
                                              reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}")
