"""Hyperparameter search: one Optuna study per variant, wrapping :mod:`obdb.training`."""
from .pruners import build_pruner
from .samplers import build_sampler
from .space import n_startup_trials, suggest
from .storage import open_storage, redact, storage_url
from .study import PruneHook, SearchResult, run_search, study_name

__all__ = ["build_pruner", "build_sampler", "n_startup_trials", "suggest", "open_storage", "redact", "storage_url",
           "PruneHook", "SearchResult", "run_search", "study_name"]
