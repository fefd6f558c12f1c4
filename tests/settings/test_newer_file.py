"""Issue 14: the original system's newer settings file loads unchanged (metric keys and their
``_small``/``_large`` forms, all-false ``optimal_hpo_settings``, per-task-list class maps,
``full_hd``), and every problem of a file is named at once with a "did you mean" at any depth."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from obdb.settings import SettingsError, load_settings, parse_settings

DATA = Path(__file__).resolve().parents[1] / "data" / "settings"
NEWER = DATA / "legacy_newer.json"


def raw() -> dict[str, Any]:
    return json.loads(NEWER.read_text())


def problems_of(data: dict[str, Any], overrides: list[str] | None = None, tmp_path: Path | None = None) -> str:
    with pytest.raises(SettingsError) as info:
        if overrides is not None and tmp_path is not None:
            path = tmp_path / "s.json"
            path.write_text(json.dumps(data))
            load_settings(path, overrides)
        else:
            parse_settings(data, source="bad.json")
    return str(info.value)


def test_newer_file_loads_unchanged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING")
    settings = load_settings(NEWER)
    assert settings.variants == ["resnet18", "resnet34", "resnet50"] and settings.data.full_hd is True
    warned = caplog.text
    for key in ("confidence_threshold_save_img", "metrics_confidence_range_small", "metrics_iou_range_small",
                "metrics_confidence_range", "metrics_iou_range"):
        assert warned.count(f"{key}: ignored") == 1, key  # known legacy keys, warned once each
    # all-false optimal_hpo_settings: no fixed parameters, with a warning (not an error)
    for name in ("resnet34", "resnet50", "retina_net"):
        assert settings.variant(name).optimal_hpo_settings is None and settings.has_placeholder_params(name)
        assert f"{name}.optimal_hpo_settings: every value is false" in warned
    assert not settings.has_placeholder_params("resnet18")
    # class maps no task list pairs with: a warning each
    assert "auto_annotation_class_map: no task list uses it" in warned
    assert "wasp_seg_class_map: no task list uses it" in warned
    assert "first_year_class_map: no task list" not in warned


@pytest.mark.parametrize("key", ["metrics_iou_range_large", "metrics_confidence_range_medium",
                                 "confidence_threshold_save_img_small"])
def test_size_forms_of_known_metric_keys_are_known(key: str, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING")
    parse_settings({**raw(), key: [0.1, 0.9] if "range" in key else 0.4}, source="s.json")
    assert f"{key}: ignored" in caplog.text


def test_malformed_metric_value_and_unknown_metric_key_fail() -> None:
    message = problems_of({**raw(), "metrics_iou_range_small": "wide", "metrics_iou_rang_small": [0.1, 0.2]})
    assert "metrics_iou_range_small: expected a number in [0, 1] or [low, high]" in message
    assert "metrics_iou_rang_small: unknown key" in message


def test_placeholder_parameters_fail_only_where_a_run_needs_them(tmp_path: Path) -> None:
    from obdb.pipeline import RunError, check_run

    settings = parse_settings({**raw(), "save_dir": str(tmp_path)}, source="s.json")
    check_run(settings, ["resnet18", "resnet34"])  # resnet34 searches: no fixed parameters needed
    with pytest.raises(RunError, match=r"resnet50.run_hpo is 0 but its optimal_hpo_settings are all false"):
        check_run(settings, ["resnet50"])
    # a search saved parameters earlier and the block says to use them (use_settings_file: 0): runs
    data = raw()
    data["resnet50"]["use_settings_file"] = 0
    saved = tmp_path / "resnet50" / "best_params.json"
    saved.parent.mkdir(parents=True)
    saved.write_text(json.dumps({"params": {"lr": 0.01}}))
    check_run(parse_settings({**data, "save_dir": str(tmp_path)}, source="s.json"), ["resnet50"])


def test_partly_false_parameters_are_an_error() -> None:
    data = raw()
    data["resnet34"]["optimal_hpo_settings"]["lr"] = 0.001
    assert "resnet34.optimal_hpo_settings.momentum: Input should be a valid number" in problems_of(data)


def test_task_list_picks_its_class_map() -> None:
    first = load_settings(NEWER, task_list="first_year_tasks")
    assert first.default_class_map == ["Background", "weed", "maize", "sugar_beet"]
    assert first.annotations_list == raw()["first_year_tasks"]
    four_k = load_settings(NEWER, task_list="annotations_list_4k")  # no 4k_class_map: the default one
    assert four_k.default_class_map == ["Background", "weed", "maize"]
    data = {**raw(), "4k_class_map": ["Background", "weed"]}
    path = NEWER.parent / "_tmp_newer_4k.json"
    try:
        path.write_text(json.dumps(data))
        assert load_settings(path, task_list="annotations_list_4k").default_class_map == ["Background", "weed"]
    finally:
        path.unlink()


def test_typo_in_a_variant_block_is_named_with_a_suggestion() -> None:
    data = raw()
    data["resnet34"]["run_hop"] = 1
    message = problems_of(data)
    assert "resnet34.run_hop: unknown key (did you mean 'run_hpo'?)" in message
    # a block of a variant that is not in `variants`, with a typo: still a variant block
    data = raw()
    data["resnet101"] = {"run_hpo": 0, "use_setings_file": 1}
    message = problems_of(data)
    assert "resnet101.use_setings_file: unknown key (did you mean 'use_settings_file'?)" in message
    assert "resnet101: unknown key" not in message


def test_every_problem_is_listed_at_once_legacy_values_included() -> None:
    data = raw()
    data["resnet34"]["run_hop"] = 1
    data["default_class_map"] = 7
    data["full_hd"] = 2
    data["hpo_parameters"]["lr"] = [1, 2, 3]
    data["hpo_parameters"]["gamma"] = "x"
    data["max_train_epochs"] = 0
    data["excluded_frames"] = "frame.png"
    message = problems_of(data)
    assert "7 problem(s)" in message, message
    for part in ("resnet34.run_hop", "default_class_map: expected", "full_hd: expected 0 or 1",
                 "hpo_parameters.lr: expected [low, high]", "hpo_parameters.gamma: expected [low, high]",
                 "max_train_epochs:", "excluded_frames: expected a list"):
        assert part in message, part


@pytest.mark.parametrize("override,expected", [
    ("train.batchsize=8", "train.batchsize: unknown key (did you mean 'batch_size'?)"),
    ("hpo.metrc=map", "hpo.metrc: unknown key (did you mean 'metric'?)"),
    ("split.tsne.perplexty=5", "split.tsne.perplexty: unknown key (did you mean 'perplexity'?)"),
    ("resnet18.optimal_hpo_settings.momentun=0.5",
     "resnet18.optimal_hpo_settings.momentun: unknown key (did you mean 'momentum'?)"),
    ("sherpa_parameter={}", "sherpa_parameter: unknown key (did you mean 'sherpa_parameters'?)"),
])
def test_did_you_mean_at_every_depth(tmp_path: Path, override: str, expected: str) -> None:
    assert expected in problems_of(raw(), [override], tmp_path)
