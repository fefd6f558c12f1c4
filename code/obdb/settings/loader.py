"""Read a settings file, apply command-line overrides, validate, and explain every problem.

All problems are reported together in one :class:`SettingsError` whose lines each start with the
file and the key path the user wrote (``resnet18.run_hpo``, not our internal field name), so a
broken file is fixed in one edit rather than one error per run.
"""
from __future__ import annotations

from obdb.errors import UserError
import difflib
import json
import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

from pydantic import ValidationError

from .legacy import IGNORED_KEYS, METRIC_KEYS, class_map_for_task_list, normalise
from .schema import Settings

#: Top-level keys of the original files a top-level typo may have meant.
_LEGACY_TOP = {"sherpa_parameters", "hpo_parameters", "hpo_timeout", "full_hd", "excluded_frames", *IGNORED_KEYS,
               *METRIC_KEYS}

log = logging.getLogger(__name__)


class SettingsError(UserError, ValueError):
    """Invalid settings. ``str()`` is the full message meant for the user."""


#: settings files are a few levels deep; anything deeper is a mistake or an attack on the parser
MAX_DEPTH = 32


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``object_pairs_hook``: a key given twice in one object is an error (plain ``json`` keeps the
    last silently, so one of two edits would be ignored without a word)."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key)
        result[key] = value
    return result


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion (so any depth is measured safely)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        if isinstance(node, (dict, list)):
            deepest = max(deepest, level)
            children = node.values() if isinstance(node, dict) else node
            stack.extend((child, level + 1) for child in children)
    return deepest


def parse_json(text: str, source: str) -> Any:
    """Strict JSON for settings: duplicate keys and absurd nesting are :class:`SettingsError`s
    naming ``source`` (the file, or the override), never a silent "last wins" or a traceback."""
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates)
    except _DuplicateKey as err:
        raise SettingsError(f"{source}: key {err.key!r} is given twice in one object; keep one") from err
    except RecursionError as err:
        raise SettingsError(f"{source}: JSON nested too deeply (settings are at most {MAX_DEPTH} levels)") from err
    if _depth(value) > MAX_DEPTH:
        raise SettingsError(f"{source}: JSON nested too deeply (settings are at most {MAX_DEPTH} levels)")
    return value


def _parse_value(text: str, item: str = "") -> Any:
    try:
        return parse_json(text, f"override {item!r}" if item else "override")
    except json.JSONDecodeError:
        return text


def apply_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``key.path=value`` strings; the value is JSON when it parses, else a string."""
    result = json.loads(json.dumps(raw))
    for item in overrides:
        if "=" not in item:
            hint = ""
            if item.strip().lower() in ("true", "false", "yes", "no", "on", "off", "0", "1"):
                # "--check False": the original scripts read this as true; here it is refused
                hint = " (an on/off flag such as --check takes no value: leave the flag out to turn it off)"
            raise SettingsError(f"override {item!r}: expected key.path=value{hint}")
        path, _, text = item.partition("=")
        keys = [k for k in path.strip().split(".")]
        if not all(keys):
            raise SettingsError(f"override {item!r}: empty key in {path!r}")
        node = result
        for depth, key in enumerate(keys[:-1]):
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise SettingsError(f"override {item!r}: {'.'.join(keys[:depth + 1])} is not an object")
            node = child
        node[keys[-1]] = _parse_value(text, item)
    return result


def _user_path(loc: Sequence[Any], raw: dict[str, Any]) -> str:
    """Turn pydantic's location into the key path as written in the user's file."""
    parts = list(loc)
    if parts and parts[0] == "variant_settings" and "variant_settings" not in raw:
        parts = parts[1:]
    if parts and parts[0] == "hpo_parameters" and "sherpa_parameters" in raw:
        parts[0] = "sherpa_parameters"
    if parts and parts[0] == "hpo_parameters" and len(parts) > 2:
        parts = parts[:2]  # the user wrote [low, high], not {low, high}
    text = ""
    for part in parts:
        if isinstance(part, int):
            text += f"[{part}]"
        elif part in ("function-after[_check()]",) or str(part).startswith("function-"):
            continue
        else:
            text += ("." if text else "") + str(part)
    return text or "(top level)"


def _model_of(annotation: Any) -> Any:
    """The pydantic model or ``dict[str, model]`` inside an annotation (``Optional``, ``Annotated``)."""
    from typing import get_args, get_origin

    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if get_origin(annotation) is dict:
        return annotation
    for arg in get_args(annotation):
        found = _model_of(arg)
        if found is not None:
            return found
    return None


def known_keys(loc: Sequence[Any]) -> list[str]:
    """The keys allowed next to the last part of ``loc`` (a pydantic location in Settings)."""
    from typing import get_args, get_origin

    node: Any = Settings
    for part in list(loc)[:-1]:
        if get_origin(node) is dict:
            node = _model_of(get_args(node)[1])
        elif node is not None and hasattr(node, "model_fields") and part in node.model_fields:
            node = _model_of(node.model_fields[part].annotation)
        else:
            return []
        if node is None:
            return []
    if node is None or not hasattr(node, "model_fields"):
        return []
    keys = list(node.model_fields)
    return keys + sorted(_LEGACY_TOP) if len(loc) == 1 else keys


def did_you_mean(loc: Sequence[Any]) -> str:
    """`` (did you mean 'x'?)`` for an unknown key at any depth, else ``""``."""
    hint = difflib.get_close_matches(str(loc[-1]), known_keys(loc), n=1, cutoff=0.6)
    return f" (did you mean {hint[0]!r}?)" if hint else ""


def _describe(error: dict[str, Any], raw: dict[str, Any]) -> str:
    loc = error.get("loc", ())
    path = _user_path(loc, raw)
    if error["type"] == "extra_forbidden":
        return f"{path}: unknown key{did_you_mean(loc)}"
    message = error["msg"].removeprefix("Value error, ")
    if not loc and error["type"] == "value_error":
        if "sherpa_parameters" in raw:
            message = message.replace("hpo_parameters.", "sherpa_parameters.")
        return message  # cross-field checks name their keys themselves
    if error["type"] == "missing":
        return f"{path}: required key is missing"
    shown = error.get("input")
    if error["type"] not in ("value_error", "assertion_error") and not isinstance(shown, (dict, list)):
        return f"{path}: {message} (got {json.dumps(shown, default=str)})"
    return f"{path}: {message}"


def parse_settings(raw: Any, *, source: str = "settings") -> Settings:
    """Validate an already-parsed JSON object (used by tests and by :func:`load_settings`)."""
    if not isinstance(raw, dict):
        raise SettingsError(f"{source}: the top level must be a JSON object")
    data, warnings, problems, placeholders = normalise(raw)
    lines = set(problems)  # legacy values and schema problems: all of them in one message
    settings = None
    try:
        settings = Settings.model_validate(data)
    except ValidationError as err:
        lines.update(_describe(e, raw) for e in err.errors())
    if lines or settings is None:
        ordered = sorted(lines)
        raise SettingsError(f"{source}: {len(ordered)} problem(s)\n" + "\n".join(f"  {line}" for line in ordered))
    settings.mark_placeholder_params(placeholders)
    for warning in warnings:
        log.warning("%s: %s", source, warning)
    if settings.experiment is None and source.endswith(".json"):
        settings = settings.model_copy(update={"experiment": Path(source).stem})
    return settings


def load_settings(path: str | Path, overrides: Iterable[str] = (), *, task_list: str | None = None) -> Settings:
    """Load, override and validate a settings file. ``task_list`` picks a task list by key name."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise SettingsError(f"{path}: settings file not found") from err
    except (OSError, UnicodeDecodeError) as err:
        raise SettingsError(f"{path}: cannot read settings file ({err})") from err
    try:
        raw = parse_json(text, str(path))
    except json.JSONDecodeError as err:
        raise SettingsError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err
    if isinstance(raw, dict):
        raw = apply_overrides(raw, overrides)
    settings = parse_settings(raw, source=str(path))
    if task_list:
        try:
            settings = select_task_list(settings, task_list)
        except SettingsError as err:
            raise SettingsError(f"{path}: {err}") from err
    return settings


def select_task_list(settings: Settings, name: str) -> Settings:
    """Use another task list of the file (e.g. ``annotations_list_4k``) as ``annotations_list``."""
    if name == "annotations_list":
        return settings
    if name not in settings.task_lists:
        known = ", ".join(["annotations_list", *settings.task_lists]) or "annotations_list"
        raise SettingsError(f"task list {name!r} is not in the settings file; known: {known}")
    if not settings.task_lists[name]:
        # an empty annotations_list means "every task"; an empty list chosen by name is a mistake
        raise SettingsError(f"task list {name!r} is empty: name its tasks in the settings file, or leave "
                            f"--tasks out to use annotations_list")
    update: dict[str, Any] = {"annotations_list": list(settings.task_lists[name])}
    class_map = class_map_for_task_list(name, settings.class_maps)
    if class_map is not None:  # first_year_tasks -> first_year_class_map
        log.info("task list %s: using its class map %s instead of default_class_map", name, class_map)
        update["default_class_map"] = list(settings.class_maps[class_map])
    return settings.model_copy(update=update)
