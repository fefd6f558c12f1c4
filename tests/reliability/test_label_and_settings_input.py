"""Input-side errors of issue 20 (point 10): one clear line, exit 2, nothing written; and the one
label rule (``obdb.records.normalise_label``) wherever labels enter.

* settings JSON nested absurdly deep (a ``RecursionError`` before) and duplicate keys (silently
  "last wins" before) are settings errors naming the file and the key;
* a label literally named ``Background`` in the data or in the middle of a class map is refused;
* labels are NFC-normalised and invisible format characters removed, so ``red`` and
  ``red`` + U+200B are one class; control characters (a newline) are refused;
* a ``|`` or a line break in a label or image id cannot break a Markdown report's table.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from helpers.reliability import QUIET, RUNNER, changes, fingerprint, run, run_parallel
from helpers.tiny_data import make_tiny_dataset, tiny_settings
from obdb.evaluation.report import markdown as evaluation_markdown
from obdb.lint.report import to_markdown as lint_markdown
from obdb.lint.run import lint
from obdb.markdown import cell
from obdb.records import ClassMap, ImageRecord, LabelError, normalise_label
from obdb.settings import parse_settings
from obdb.settings.loader import SettingsError, load_settings
from obdb.settings.schema import LintSettings
from obdb.sources.local import load_local

FIRST_XML = "annotations/gt_train_video00.xml"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("labels") / "data", videos=2, frames=2)


def own_copy(data: Path, folder: Path, edit=None) -> Path:  # type: ignore[no-untyped-def]
    target = folder / "data"
    shutil.copytree(data, target)
    if edit is not None:
        path = target / FIRST_XML
        path.write_text(edit(path.read_text()))
    return target


def first_label_to(text: str):  # type: ignore[no-untyped-def]
    return lambda xml: re.sub(r'label="(red|blue)"', f'label="{text}"', xml, count=1)


# --------------------------------------------------------------------------- through the runner
def rows(data: Path, base: Path) -> dict[str, tuple[Path, list[str], list[str]]]:
    """name -> (row folder, runner argv, texts the one-line message must hold)."""
    out: dict[str, tuple[Path, list[str], list[str]]] = {}

    def settings_text(name: str, text: str) -> Path:
        folder = base / name
        folder.mkdir(parents=True)
        (folder / "settings.json").write_text(text)
        return folder

    good = json.dumps(tiny_settings(data, base / "unused"))
    deep = settings_text("deep_json", good[:-1] + ', "x": ' + "[" * 50_000 + "]" * 50_000 + "}")
    out["deep_json"] = (deep, [str(deep / "settings.json")], ["nested too deeply"])
    dup = settings_text("duplicate_key", good[:-1] + ', "seed": 1, "seed": 2}')
    out["duplicate_key"] = (dup, [str(dup / "settings.json")], ["key 'seed' is given twice"])

    def data_row(name: str, edit, expect: list[str], **settings_changes) -> None:  # type: ignore[no-untyped-def]
        folder = base / name
        folder.mkdir(parents=True)
        own = own_copy(data, folder, edit)
        raw = tiny_settings(own, folder, **settings_changes)
        (folder / "settings.json").write_text(json.dumps(raw))
        out[name] = (folder, [str(folder / "settings.json")], expect)

    data_row("background_label_in_data", first_label_to("Background"), ["'Background'", "data.label_map"])
    data_row("background_in_class_map", None, ["'Background' is listed at position 2"],
             default_class_map=["red", "Background", "blue"])
    data_row("newline_in_label", first_label_to("re&#10;d"), ["control character", "U+000A",
                                                               "gt_train_video00/"])
    return out


def test_input_errors_are_one_line_exit_2_and_write_nothing(data: Path, tmp_path: Path) -> None:
    table = rows(data, tmp_path)
    before = {name: fingerprint(folder) for name, (folder, _, _) in table.items()}
    jobs = [lambda argv=argv: run([*RUNNER, "-f", *argv, *QUIET]) for _, argv, _ in table.values()]
    outcomes = dict(zip(table, run_parallel(jobs)))
    for name, (folder, _argv, expect) in table.items():
        outcome = outcomes[name]
        assert outcome.code == 2, outcome.text
        assert "Traceback" not in outcome.stderr, outcome.text
        errors = [line for line in outcome.stderr.splitlines() if "error" in line.lower() or "settings" in line]
        assert errors, outcome.text
        for text in expect:
            assert text in outcome.stderr, f"{text!r} missing\n{outcome.text}"
        # nothing written but the run's own log
        assert changes(before[name], fingerprint(folder), ("train/logs/",)) == [], outcome.text


# --------------------------------------------------------------------------- the label rule
def test_normalise_label_rule() -> None:
    assert normalise_label("Tree\u200b") == "Tree"           # zero-width space (Cf): removed
    assert normalise_label("\ufeffTree\u200d ") == "Tree"    # BOM, zero-width joiner, trailing space
    assert normalise_label("Cafe\u0301") == "Caf\u00e9"      # NFC: one code point
    for bad in ("Tr\nee", "Tree\t", "a\x00b", "\x1b[31mred"):
        with pytest.raises(LabelError, match="control character"):
            normalise_label(bad, "somewhere")
    with pytest.raises(LabelError, match="empty"):
        normalise_label("\u200b")


def test_look_alike_labels_are_one_class_in_data_and_settings(data: Path, tmp_path: Path) -> None:
    own = own_copy(data, tmp_path, first_label_to("red\u200b"))
    loaded = load_local(own / "annotations", images_dir=own / "images", progress=False)
    assert sorted(set(loaded.label_names())) == ["blue", "red"]
    settings = parse_settings(tiny_settings(own, tmp_path, default_class_map=["Background", "red\u200b", "blue"]))
    assert settings.default_class_map == ["Background", "red", "blue"]
    with pytest.raises(SettingsError, match="twice"):
        parse_settings(tiny_settings(own, tmp_path, default_class_map=["red", "re\u200bd", "blue"]))


def test_label_map_can_repair_a_label_with_a_control_character(data: Path, tmp_path: Path) -> None:
    own = own_copy(data, tmp_path, first_label_to("re&#10;d"))
    with pytest.raises(LabelError, match="U\\+000A"):
        load_local(own / "annotations", images_dir=own / "images", progress=False)
    loaded = load_local(own / "annotations", images_dir=own / "images", progress=False,
                        label_map={"re\nd": "red"})
    assert sorted(set(loaded.label_names())) == ["blue", "red"]


def test_settings_json_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text('{"variants": ["resnet18"], "train": {"lr": 1, "lr": 2}}')
    with pytest.raises(SettingsError, match=re.escape(f"{path}: key 'lr' is given twice")):
        load_settings(path)
    path.write_text('{"variants": ["resnet18"], "x": ' + "[" * 40 + "]" * 40 + "}")
    with pytest.raises(SettingsError, match="nested too deeply"):
        load_settings(path)
    path.write_text('{"variants": ["resnet18"]}')
    with pytest.raises(SettingsError, match="override .* key 'a' is given twice"):
        load_settings(path, ['data.label_map={"a": "b", "a": "c"}'])


def test_background_label_is_refused_with_a_clear_error() -> None:
    with pytest.raises(LabelError, match="reserved"):
        ClassMap(("red", "Background"))


# --------------------------------------------------------------------------- Markdown reports
def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


def test_markdown_cells_cannot_break_a_table(tmp_path: Path) -> None:
    assert cell("a|b\nc\r\nd\\") == "a\\|b c d\\\\"
    label = "we|rd\nlabel"
    path = tmp_path / "x.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (9, 9, 9)).save(path)
    record = ImageRecord("task|1/x\n.png", path, 32, 32, np.array([[1, 1, 20, 20]]), [label])
    result = lint([record], ClassMap(("red",)), LintSettings(), progress=False)
    text = lint_markdown(result.report)
    for row in table_rows(text):
        assert row.endswith("|") and "\n" not in row
    assert any("we\\|rd label" in row for row in table_rows(text))

    metrics = {"map": 0.5, "per_class": {label: 0.5}, "per_class_ap50": {label: 0.7}}
    totals = {"tp": 1, "fp": 0, "fn": 0, "precision": 1.0, "recall": 1.0, "f1": 1.0, "score_threshold": 0.5,
              "iou_threshold": 0.5, "per_class": {label: {"tp": 1, "fp": 0, "fn": 0}}}
    images = [{"image_id": "task|1/x\n.png", "tp": 0, "fp": 1, "fn": 1, "f1": 0.0, "errors": 2}]
    report = evaluation_markdown({"metrics": metrics}, totals, images, {})
    widths = {len(re.findall(r"(?<!\\)\|", row)) for row in table_rows(report) if "class" in row or "we" in row}
    assert len(widths) == 1, report  # the label's row has as many cells as its header
    assert any(row.startswith("| task\\|1/x .png |") for row in table_rows(report))
