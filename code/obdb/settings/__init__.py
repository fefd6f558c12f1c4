"""Settings: one JSON file per run, validated before anything is written."""
from .loader import SettingsError, apply_overrides, load_settings, parse_settings, select_task_list
from .schema import HYPERPARAMETERS, HyperParams, ParamRange, Settings, VariantSettings

__all__ = ["SettingsError", "apply_overrides", "load_settings", "parse_settings", "select_task_list",
           "HYPERPARAMETERS", "HyperParams", "ParamRange", "Settings", "VariantSettings"]
