"""Map the original system's settings files onto :class:`~obdb.settings.schema.Settings`.

Users come with two generations of files (``sherpa_parameters`` and the newer ``hpo_parameters``
one with many extra keys). They must load unchanged, but typos must still fail, so every key
lands in exactly one of: a field of ours, a legacy key with a meaning (mapped here), a legacy key
without one (ignored with a single warning), or an error. A malformed legacy value is a problem
listed with every other problem of the file (:func:`normalise` collects them, it does not stop at
the first).

Legacy keys with a meaning: ``sherpa_parameters``/``hpo_parameters`` (search space), ``hpo_timeout``,
``excluded_frames``, ``full_hd`` (→ ``data.full_hd``: 4K frames cropped to their bottom-centre full-HD
region), task lists (``annotations_list_<name>``, ``<name>_tasks``; picked with ``--tasks``) and class
maps (``<name>_class_map``: used with the task list of the same name, see
:func:`class_map_for_task_list`). Per-variant ``optimal_hpo_settings`` whose every value is ``false``
(the original's "not found yet") means no fixed parameters.
"""
from __future__ import annotations

from obdb.errors import UserError
import logging
from typing import Any, NamedTuple

from .schema import Settings, VariantSettings

log = logging.getLogger(__name__)

#: Keys the original code read or ignored that mean nothing to obdb.
IGNORED_KEYS = {
    "fake_dataset_len": "the data set length is whatever the sources return",
    "start_on_checkpoint": "runs always resume from their last checkpoint",
}
#: Metric keys of the original evaluation (ignored: obdb's evaluation has its own options); their
#: ``_small``/``_large`` forms (the original's small/large-object variants) are known too.
METRIC_KEYS = {"metrics_confidence_range", "metrics_iou_range", "confidence_threshold_save_img",
               "confidence_threshold", "iou_threshold"}
_SIZE_SUFFIXES = ("_small", "_large", "_medium")
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


def _metric_base(key: str) -> str:
    for suffix in _SIZE_SUFFIXES:
        if key.endswith(suffix):
            return key[: -len(suffix)]
    return key


def _is_metric_key(key: str) -> bool:
    base = _metric_base(key)
    return base in METRIC_KEYS or base.endswith("_range") or base.endswith("_ranges")


def _metric_value_problem(key: str, value: Any) -> str | None:
    """A metric key's value must still look like what the original read: a number in [0, 1], or
    a [low, high] (optionally [low, high, step]) list of such numbers."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1

    if number(value):
        return None
    if isinstance(value, list) and len(value) in (2, 3) and all(number(v) for v in value[:2]) \
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        return None
    return f"expected a number in [0, 1] or [low, high], got {value!r}"


def class_map_for_task_list(task_list: str, class_maps: dict[str, Any]) -> str | None:
    """The class map key that goes with a task list key: ``<name>_tasks`` and
    ``annotations_list_<name>`` pair with ``<name>_class_map`` (``first_year_tasks`` →
    ``first_year_class_map``), when the file has it."""
    for candidate in _class_map_candidates(task_list):
        if candidate in class_maps:
            return candidate
    return None


def _class_map_candidates(task_list: str) -> list[str]:
    names = []
    if task_list.endswith("_tasks"):
        names.append(task_list[: -len("_tasks")])
    if task_list.startswith("annotations_list_"):
        names.append(task_list[len("annotations_list_"):])
    return [f"{n}_class_map" for n in names if n]


def unused_class_maps(task_lists: dict[str, Any], class_maps: dict[str, Any]) -> list[str]:
    """Class map keys no task list of the file pairs with (so nothing uses them)."""
    used = {class_map_for_task_list(t, class_maps) for t in task_lists}
    return [name for name in class_maps if name not in used]


def _all_false(value: Any) -> bool:
    return isinstance(value, dict) and bool(value) and all(v is False for v in value.values())


def _looks_like_variant_block(key: str, value: Any, own_fields: set[str]) -> bool:
    """A top-level object that is not one of our sections but holds variant keys (``run_hpo``,
    ``optimal_hpo_settings`` …): a variant block, typos inside it included, so the typo is named
    as ``resnet34.run_hop`` rather than the whole block being an unknown key."""
    if not isinstance(value, dict) or not value or key in own_fields:
        return False
    return bool(set(value) & VARIANT_BLOCK_KEYS) or set(value) <= VARIANT_BLOCK_KEYS


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
    if not isinstance(value, dict):  # our own {low, high, ...} form is checked by the schema
        raise LegacyError(f"{key}.{name}", f"expected [low, high] numbers, got {value!r}")
    return value


class Normalised(NamedTuple):
    """What :func:`normalise` makes of a raw file."""

    data: dict[str, Any]       # shaped like Settings
    warnings: list[str]        # to print once
    problems: list[str]        # malformed legacy values, ``key: message`` (the key is left out of data)
    placeholders: list[str]    # variants whose optimal_hpo_settings were all false


def normalise(raw: dict[str, Any]) -> Normalised:
    """Map a raw settings object onto our shape (see the module docstring)."""
    data: dict[str, Any] = {}
    mapped: dict[str, dict[str, Any]] = {}
    warnings: list[str] = []
    problems: list[str] = []
    variants = raw.get("variants")
    variant_names = set(variants) if isinstance(variants, list) and all(isinstance(v, str) for v in variants) else set()
    blocks: dict[str, Any] = (dict(raw.get("variant_settings") or {}) if isinstance(raw.get("variant_settings"), dict)
                              else {})
    own_fields = set(Settings.model_fields)
    ignored_metrics: list[str] = []
    placeholders: list[str] = []

    if "sherpa_parameters" in raw and "hpo_parameters" in raw:
        problems.append("sherpa_parameters: give either sherpa_parameters or hpo_parameters, not both")

    for key, value in raw.items():
        try:
            _one_key(key, value, data, mapped, blocks, warnings, problems, ignored_metrics, variant_names, own_fields)
        except LegacyError as err:
            problems.append(str(err))
    for key in ignored_metrics:
        warnings.append(f"{key}: ignored (a metric key of the original evaluation; obdb's evaluation takes "
                        "its options on its command line)")
    for name, block in blocks.items():
        if isinstance(block, dict) and _all_false(block.get("optimal_hpo_settings")):
            block = dict(block)
            block.pop("optimal_hpo_settings")
            blocks[name] = block
            placeholders.append(name)
            warnings.append(f"{name}.optimal_hpo_settings: every value is false (the original's \"not found yet\"): "
                            "no fixed parameters for this variant")
    for name in unused_class_maps(data.get("task_lists", {}), data.get("class_maps", {})):
        warnings.append(f"{name}: no task list uses it (a class map <name>_class_map goes with the task list "
                        "<name>_tasks or annotations_list_<name> picked with --tasks); ignored")

    # Legacy keys fill our blocks; an explicit value in the block itself wins.
    for section, values in mapped.items():
        explicit = data.get(section, {})
        if isinstance(explicit, dict):
            data[section] = {**values, **explicit}
    if blocks:
        data["variant_settings"] = blocks
    return Normalised(data, warnings, problems, placeholders)


def _one_key(key: str, value: Any, data: dict[str, Any], mapped: dict[str, dict[str, Any]], blocks: dict[str, Any],
             warnings: list[str], problems: list[str], ignored_metrics: list[str], variant_names: set[str],
             own_fields: set[str]) -> None:
    if key == "sherpa_parameters" or key == "hpo_parameters":
        if not isinstance(value, dict):
            raise LegacyError(key, "expected an object {name: [low, high]}")
        ranges = {}
        for name, item in value.items():
            try:  # every bad range is named, not only the first
                ranges[name] = _param_range(key, name, item)
            except LegacyError as err:
                problems.append(str(err))
        data["hpo_parameters"] = ranges
    elif key == "default_class_map":
        data[key] = class_map_names(value, key)
    elif key == "variant_settings":
        return
    elif key in variant_names or _looks_like_variant_block(key, value, own_fields):
        blocks[key] = value
    elif key in own_fields:
        data[key] = value
    elif key == "hpo_timeout":
        if value not in (None, 0):
            mapped.setdefault("hpo", {})["timeout"] = value
    elif key == "full_hd":
        if value not in (0, 1):
            raise LegacyError(key, f"expected 0 or 1 (or true/false), got {value!r}")
        mapped.setdefault("data", {})["full_hd"] = bool(value)
    elif key == "excluded_frames":
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            mapped.setdefault("data", {})["excluded_frames"] = value
        else:
            raise LegacyError(key, "expected a list of file names")
    elif _is_task_list_key(key):
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise LegacyError(key, "a task list must be a list of task names")
        data.setdefault("task_lists", {})[key] = value
    elif _is_class_map_key(key):
        data.setdefault("class_maps", {})[key] = class_map_names(value, key)
    elif key in IGNORED_KEYS:
        warnings.append(f"{key}: ignored ({IGNORED_KEYS[key]})")
    elif _is_metric_key(key):
        problem = _metric_value_problem(key, value)
        if problem:
            raise LegacyError(key, problem)
        ignored_metrics.append(key)
    else:
        data[key] = value  # unknown: let validation name it as an extra key
