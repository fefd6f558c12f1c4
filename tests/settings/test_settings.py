"""Settings: the original files load unchanged; every malformed file fails with a message that
names the key, exit code 2, and nothing written."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from obdb.settings import SettingsError, apply_overrides, load_settings, parse_settings

DATA = Path(__file__).resolve().parents[1] / "data" / "settings"
ROOT = Path(__file__).resolve().parents[2]


def test_original_sherpa_file_loads_unchanged() -> None:
    settings = load_settings(DATA / "legacy_sherpa.json")
    assert settings.variants == ["resnet18", "resnet50", "resnet18_weeds_pretrained"]
    assert settings.variant("resnet18").run_hpo is True
    assert settings.variant("resnet50").run_hpo is False
    assert settings.variant("resnet50").optimal_hpo_settings.lr == pytest.approx(0.0002)
    assert settings.variant("resnet18_weeds_pretrained").pretrained_model_path == "/train/resnet18_weeds.pth"
    # a top-level block named like a variant is a variant block even when not in `variants`
    assert "retina_net" in settings.variant_settings
    assert settings.num_initial_data_points == "infer"
    step = settings.hpo_parameters["step_size"]
    assert step.integer is True and (step.low, step.high) == (1, 5)
    assert settings.hpo_parameters["lr"].integer is False
    # {name: index} class map with Background at 0
    assert settings.default_class_map == ["Background", "weed", "maize"]
    assert settings.experiment == "legacy_sherpa"


def test_newer_hpo_file_loads_and_maps_legacy_keys(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING")
    settings = load_settings(DATA / "legacy_hpo.json")
    assert settings.hpo.timeout == 86400
    assert settings.data.excluded_frames == ["fielddata/a/20200508/3R/GH060070/GH060070frame0029.png"]
    assert set(settings.task_lists) == {"annotations_list_full_hd", "annotations_list_4k", "first_year_tasks"}
    assert settings.class_maps["auto_annotation_class_map"] == ["Background", "weed"]
    assert "gt_train_FieldData_20200508122912 3R GH060071" in settings.annotations_list  # spaces survive
    warned = caplog.text
    for key in ("fake_dataset_len", "start_on_checkpoint", "precision_range"):
        assert f"{key}: ignored" in warned
    assert warned.count("fake_dataset_len: ignored") == 1
    assert settings.data.full_hd is True and "full_hd" not in warned  # issue 14: full_hd has its meaning again


def test_task_list_is_chosen_by_key() -> None:
    settings = load_settings(DATA / "legacy_hpo.json", task_list="annotations_list_4k")
    assert settings.annotations_list == ["gt_train_FieldData_20210601080000_2R_GH020002"]
    with pytest.raises(SettingsError, match="task list 'nope' is not in the settings file"):
        load_settings(DATA / "legacy_hpo.json", task_list="nope")


def test_overrides_apply_by_key_path() -> None:
    settings = load_settings(DATA / "legacy_sherpa.json",
                             ["train.batch_size=2", "resnet18.run_hpo=0", "hpo.storage=postgresql://u@h/db",
                              "max_num_trials=7"])
    assert settings.train.batch_size == 2
    assert settings.variant("resnet18").run_hpo is False
    assert settings.hpo.storage == "postgresql://u@h/db"
    assert settings.max_num_trials == 7
    with pytest.raises(SettingsError, match="expected key.path=value"):
        apply_overrides({}, ["train.batch_size"])
    with pytest.raises(SettingsError, match="max_num_trials is not an object"):
        apply_overrides({"max_num_trials": 3}, ["max_num_trials.x=1"])


def test_override_of_wrong_type_names_the_key() -> None:
    with pytest.raises(SettingsError, match=r"train\.batch_size: Input should be a valid integer"):
        load_settings(DATA / "legacy_sherpa.json", ['train.batch_size="four"'])


def base() -> dict[str, Any]:
    return json.loads((DATA / "legacy_sherpa.json").read_text())


def edit(**changes: Any) -> dict[str, Any]:
    raw = base()
    for key, value in changes.items():
        node = raw
        parts = key.split("__")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        if value is DELETE:
            del node[parts[-1]]
        else:
            node[parts[-1]] = value
    return raw


DELETE = object()

MALFORMED = [
    ("unknown top-level key", edit(max_train_epoch=5),
     "max_train_epoch: unknown key (did you mean 'max_train_epochs'?)"),
    ("unknown nested key", edit(train__batchsize=2), "train.batchsize: unknown key"),
    ("wrong type int", edit(max_train_epochs="200"), "max_train_epochs: Input should be a valid integer"),
    ("negative epochs", edit(search_epochs=-1), "search_epochs: Input should be greater than or equal to 1"),
    ("zero trials", edit(max_num_trials=0), "max_num_trials: Input should be greater than or equal to 1"),
    ("empty variants", edit(variants=[]), "variants: List should have at least 1 item"),
    ("duplicate variants", edit(variants=["resnet18", "resnet18"]), "variants lists a name twice"),
    ("range low > high", edit(sherpa_parameters__lr=[1e-3, 5e-6]),
     "sherpa_parameters.lr: low (0.001) is greater than high"),
    ("range of three", edit(sherpa_parameters__gamma=[0.1, 0.2, 0.3]),
     "sherpa_parameters.gamma: expected [low, high] numbers"),
    ("unknown hyperparameter", edit(sherpa_parameters__learning_rate=[0.1, 0.2]),
     "sherpa_parameters.learning_rate: unknown hyperparameter"),
    ("log range from zero", edit(sherpa_parameters__lr=[0, 0.1]),
     "sherpa_parameters.lr: log-scale range needs low > 0"),
    ("run_hpo not a flag", edit(resnet18__run_hpo=2), "resnet18.run_hpo: expected true/false or 0/1, got 2"),
    ("run_hpo string", edit(resnet18__run_hpo="yes"), "resnet18.run_hpo: expected true/false or 0/1"),
    ("typo in variant block", edit(resnet18__run_hpoo=1), "resnet18.run_hpoo: unknown key"),
    ("typo in optimal settings", edit(resnet18__optimal_hpo_settings__learning_rate=0.1),
     "resnet18.optimal_hpo_settings.learning_rate: unknown key"),
    ("negative lr", edit(resnet50__optimal_hpo_settings__lr=-0.1),
     "resnet50.optimal_hpo_settings.lr: Input should be greater than 0"),
    ("momentum of one", edit(resnet50__optimal_hpo_settings__momentum=1.0),
     "resnet50.optimal_hpo_settings.momentum: Input should be less than 1"),
    ("num_initial_data_points word", edit(num_initial_data_points="auto"), "num_initial_data_points"),
    ("min_size above max_size", edit(model={"min_size": 800, "max_size": 400}),
     "max_size (400) is smaller than min_size (800)"),
    ("bad device", edit(train={"device": "gpu"}), "train.device: String should match pattern"),
    ("bad split method", edit(split={"method": "every10th"}),
     "split.method: Input should be 'group', 'random', 'file' or 'tsne'"),
    ("file split without file", edit(split={"method": "file"}), "method 'file' needs split.file"),
    ("bad group regex", edit(data={"group_regex": "(unclosed"}), "group_regex is not a valid regular expression"),
    ("val fraction of one", edit(split={"val_fraction": 1.0}), "split.val_fraction: Input should be less than 1"),
    ("bad class map", edit(default_class_map=[1, 2]), "default_class_map: expected a non-empty list"),
    ("class map shared index", edit(default_class_map={"Background": 0, "weed": 1, "maize": 1}),
     "two classes share an index"),
    ("annotations_list not a list", edit(annotations_list="gt_train_x"),
     "annotations_list: Input should be a valid list"),
    ("task list of numbers", edit(annotations_list_4k=[1, 2]),
     "annotations_list_4k: a task list must be a list of task names"),
    ("both parameter keys", edit(hpo_parameters={"lr": [0.1, 0.2]}), "give either sherpa_parameters or hpo_parameters"),
    ("bad pruner", edit(hpo={"pruner": "asha"}), "hpo.pruner: Input should be 'median', 'hyperband' or 'none'"),
    ("range outside valid values", edit(sherpa_parameters__momentum=[0.1, 1.5]),
     "sherpa_parameters.momentum: 1.5 is not a valid momentum (Input should be less than 1)"),
    ("top level list", [1, 2], "the top level must be a JSON object"),
]


@pytest.mark.parametrize("raw,expected", [pytest.param(r, e, id=i) for i, r, e in MALFORMED])
def test_malformed_settings_name_the_problem(raw: Any, expected: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings(raw, source="bad.json")
    message = str(info.value)
    assert message.startswith("bad.json: ")
    assert expected in message, message


def test_all_problems_are_reported_together() -> None:
    with pytest.raises(SettingsError) as info:
        parse_settings(edit(max_train_epochs=0, train={"batch_size": 0}, foo=1), source="bad.json")
    message = str(info.value)
    assert "3 problem(s)" in message
    for key in ("max_train_epochs", "train.batch_size", "foo"):
        assert key in message


def test_invalid_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('{\n  "variants": ["resnet18"],\n  "max_train_epochs": 10,,\n}\n')
    with pytest.raises(SettingsError, match=r"broken.json: invalid JSON at line 3, column 26"):
        load_settings(path)


def test_missing_file() -> None:
    with pytest.raises(SettingsError, match="settings file not found"):
        load_settings("does/not/exist.json")


@pytest.mark.parametrize("case", ["unknown_key", "bad_json", "bad_override"])
def test_cli_exits_2_and_writes_nothing(tmp_path: Path, case: str) -> None:
    raw = edit(save_dir=str(tmp_path / "out"), writer_dir=str(tmp_path / "out" / "runs"))
    extra: list[str] = []
    if case == "unknown_key":
        raw["max_plateau"] = 3
    path = tmp_path / "settings.json"
    path.write_text("{ nope" if case == "bad_json" else json.dumps(raw))
    if case == "bad_override":
        extra = ["train.batch_size=-3"]
    result = subprocess.run([sys.executable, str(ROOT / "code" / "torch_model_runner.py"), "-f", str(path), *extra],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("error: "), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_bool_flag_false_means_false(tmp_path: Path) -> None:
    from obdb.cli.runner import build_parser

    args = build_parser().parse_args(["-f", "x.json", "--progress", "False"])
    assert args.progress is False
    args = build_parser().parse_args(["-f", "x.json", "--progress", "1"])
    assert args.progress is True
    result = subprocess.run([sys.executable, str(ROOT / "code" / "torch_model_runner.py"), "-f", "x.json",
                             "--progress", "maybe"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "expected a boolean" in result.stderr


def test_max_detections_below_coco_s_ten_is_a_settings_error(tmp_path) -> None:
    import json

    import pytest

    from obdb.settings import load_settings
    from obdb.settings.loader import SettingsError

    path = tmp_path / "s.json"
    path.write_text(json.dumps({"variants": ["resnet18"], "train": {"max_detections": 7}}))
    with pytest.raises(SettingsError, match="max_detections"):
        load_settings(path)
