"""Pruners on the per-epoch validation metric (one Optuna step per epoch, starting at 1).

Defaults are chosen for searches of 2-5 epochs per trial (``search_epochs``):

* ``median`` (default): after ``startup_trials`` (2) completed trials, a trial whose best score so
  far is below the median of the completed trials at the same epoch stops. ``warmup_epochs`` (1)
  means a trial is judged from the end of its first epoch on: with 2-5 epochs there is no room
  for a longer warm-up, and most of the saving comes from stopping hopeless trials early.
* ``hyperband``: successive halving from ``warmup_epochs`` (at least 1) to ``search_epochs``
  epochs keeping the best third at each rung; with ``search_epochs`` ≤ 3 it is a single
  successive-halving bracket. More aggressive than the median rule, so better for larger budgets.
* ``none``: every trial runs all ``search_epochs`` (the original system's behaviour).

:class:`~obdb.hpo.study.PruneHook` never prunes at a trial's last epoch: that would save nothing
and turn a finished result into a pruned one.
"""
from __future__ import annotations

import optuna


def build_pruner(name: str, *, warmup_epochs: int, max_epochs: int,
                 startup_trials: int = 2) -> optuna.pruners.BasePruner:
    if name == "median":
        # Two completed trials give a median worth comparing against; before that, nothing is pruned.
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs)
    if name == "hyperband":
        top = max(1, max_epochs)
        return optuna.pruners.HyperbandPruner(min_resource=min(top, max(1, warmup_epochs)), max_resource=top,
                                              reduction_factor=3)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise ValueError(f"unknown pruner {name!r}")
