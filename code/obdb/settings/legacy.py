"""Map the original system's settings files onto :class:`~obdb.settings.schema.Settings`.

Users come with two generations of files (``sherpa_parameters`` and the newer ``hpo_parameters``
one with many extra keys). They must load unchanged, but typos must still fail, so every key
lands in exactly one of: a field of ours, a legacy key with a meaning (mapped here), a legacy key
without one (ignored with a single warning), or an error.
"""
from __future__ import annotations

from obdb.errors import UserError
import logging
from typing import Any

from .schema import Settings, VariantSettings

log = logging.getLogger(__name__)

#: Keys the original code read or ignored that mean nothing to obdb.
IGNORED_KEYS = {
    "full_hd": "4K→full-HD cropping is a source option, not a training setting",
    "fake_dataset_len": "the data set length is whatever the sources return",
    "start_on_checkpoint": "runs always resume from their last checkpoint",
}
VARIANT_BLOCK_KEYS = set(VariantSettings.model_fields)


class LegacyError(UserError, ValueError):
    """A malformed value in a legacy key; ``path`` names the key."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


def _is_task_list_key(key: str) -> bool:
    return key.startswith("annotations_list_") or key.endswith("_tasks")


def _is_class_map_key(key: str) -> bool:
    return key.endswith("_class_map") and key != "default_class_map"


def _is_metric_range_key(key: str) -> bool:
    return key.endswith("_range") or key.endswith("_ranges")


def class_map_names(value: Any, path: str = "default_class_map") -> list[str]:
    """The original wrote class maps as a list, ``{name: index}`` or ``{index: name}``."""
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    if isinstance(value, dict) and value:
        items = list(value.items())
        if all(isinstance(v, int) and not isinstance(v, bool) for _, v in items):
            pairs = sorted(((v, k) for k, v in items))
        elif all(isinstance(v, str) and str(k).lstrip("-").isdigit() for k, v in items):
            pairs = sorted(((int(k), v) for k, v in items))
        else:
            raise LegacyError(path, "expected a list of names, {name: index} or {index: name}")
        indices = [i for i, _ in pairs]
        if len(set(indices)) != len(indices):
            raise LegacyError(path, f"two classes share an index: {dict(value)}")
        return [name for _, name in pairs]
    raise LegacyError(path, "expected a non-empty list of names, {name: index} or {index: name}")


def _param_range(key: str, name: str, value: Any) -> Any:
    """``[low, high]`` → ParamRange dict; both ints mean an integer dimension."""
    if isinstance(value, list):
        if len(value) != 2 or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise LegacyError(f"{key}.{name}", f"expected [low, high] numbers, got {value!r}")
        low, high = value
        return {"low": float(low), "high": float(high),
                "integer": isinstance(low, int) and isinstance(high, int)}
    return value


def normalise(raw: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Return a dict shaped like :class:`Settings` plus the warnings to print once."""
    data: dict[str, Any] = {}
    mapped: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    variants = raw.get("variants")
    variant_names = set(variants) if isinstance(variants, list) and all(isinstance(v, str) for v in variants) else set()
    blocks: dict[str, Any] = dict(raw.get("variant_settings") or {}) if isinstance(raw.get("variant_settings"), dict) else {}
    own_fields = set(Settings.model_fields)

    if "sherpa_parameters" in raw and "hpo_parameters" in raw:
        raise LegacyError("sherpa_parameters", "give either sherpa_parameters or hpo_parameters, not both")

    for key, value in raw.items():
        if key == "sherpa_parameters" or key == "hpo_parameters":
            if not isinstance(value, dict):
                raise LegacyError(key, "expected an object {name: [low, high]}")
            data["hpo_parameters"] = {n: _param_range(key, n, v) for n, v in value.items()}
        elif key == "default_class_map":
            data[key] = class_map_names(value, key)
        elif key == "variant_settings":
            continue
        elif key in variant_names or (isinstance(value, dict) and value and key not in own_fields
                                      and set(value) <= VARIANT_BLOCK_KEYS):
            blocks[key] = value
        elif key in own_fields:
            data[key] = value
        elif key == "hpo_timeout":
            if value not in (None, 0):
                mapped.setdefault("hpo", {})["timeout"] = value
        elif key == "excluded_frames":
            if isinstance(value, list) and all(isinstance(v, str) for v in value):
                mapped.setdefault("data", {})["excluded_frames"] = value
            else:
                warnings.append("excluded_frames: not a list of file names; ignored")
        elif _is_task_list_key(key):
            if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
                raise LegacyError(key, "a task list must be a list of task names")
            data.setdefault("task_lists", {})[key] = value
        elif _is_class_map_key(key):
            data.setdefault("class_maps", {})[key] = class_map_names(value, key)
        elif key in IGNORED_KEYS:
            warnings.append(f"{key}: ignored ({IGNORED_KEYS[key]})")
        elif _is_metric_range_key(key):
            warnings.append(f"{key}: ignored (metric ranges are not used by obdb)")
        else:
            data[key] = value  # unknown: let validation name it as an extra key

    # Legacy keys fill our blocks; an explicit value in the block itself wins.
    for section, values in mapped.items():
        explicit = data.get(section, {})
        if isinstance(explicit, dict):
            data[section] = {**values, **explicit}
    if blocks:
        data["variant_settings"] = blocks
    return data, warnings
