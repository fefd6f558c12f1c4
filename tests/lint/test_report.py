"""The report (JSON + Markdown + summary), the pipeline stage and the "nothing usable" error."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers.lint_images import record, save, texture, truncate
from obdb.lint import RULES, LintError, lint, lint_for_run
from obdb.records import AnnotationSet, ClassMap, SkippedImage
from obdb.settings import parse_settings
from obdb.settings.schema import LintSettings


def run_settings(tmp_path: Path, **lint: object):  # type: ignore[no-untyped-def]
    return parse_settings({"variants": ["resnet18"], "save_dir": str(tmp_path / "train"),
                           "dataset_dir": str(tmp_path),  # the images' root: lint drops images outside it
                           "default_class_map": ["Background", "a", "b"], "lint": lint})


@pytest.fixture()
def mixed(tmp_path: Path) -> AnnotationSet:
    """One image per kind of problem, plus a clean one and one the source skipped."""
    good = record(save(tmp_path / "good.png", texture(1)), [[5, 5, 30, 30]], ["a"])
    cut = record(truncate(save(tmp_path / "cut.jpg", texture(2), quality=90)), [[5, 5, 30, 30]], ["a"])
    boxes = record(save(tmp_path / "boxes.png", texture(3)), [[-5, 5, 30, 30], [5, 5, 30, 30], [5, 5, 30, 30.2],
                                                             [40, 40, 40, 60], [1, 1, 9, 9]],
                   ["a", "b", "b", "a", "zz"])
    return AnnotationSet([good, cut, boxes], [SkippedImage(str(tmp_path / "lost.png"), "image file not found")],
                         dropped_boxes=2)


def test_report_counts_rules_and_items(tmp_path: Path, mixed: AnnotationSet) -> None:
    settings = run_settings(tmp_path)
    result = lint_for_run(mixed, settings, save_dir=tmp_path / "train", progress=False)
    assert result is not None
    assert [r.image_id for r in result.records] == ["t/good.png", "t/boxes.png"]  # what is usable
    assert len(mixed.records) == 3  # a new list: the loaded set is not changed
    report = json.loads((tmp_path / "train" / "lint" / "report.json").read_text())
    assert report["format"] == "obdb-lint-report" and report["ok"] is False
    assert report["counts"] == {"images_in": 3, "images_kept": 2, "images_dropped": 1, "boxes_in": 7,
                                "boxes_kept": 3, "boxes_dropped": 3, "boxes_clipped": 1,
                                "boxes_in_dropped_images": 1, "source_skipped_images": 1, "source_dropped_boxes": 2,
                                "source_skipped_boxes": 0}
    assert set(report["rules"]) == set(RULES)
    found = {rule: block["issues"] for rule, block in report["rules"].items() if block["issues"]}
    assert found == {"source_skipped": 1, "truncated": 1, "box_partly_outside": 1, "degenerate_box": 1,
                     "duplicate_box": 1, "unknown_label": 1}
    assert report["severity"] == {"error": 2, "warn": 4, "info": 0}
    assert report["unknown_labels"] == {"zz": 1} and report["class_map"] == ["a", "b"]
    assert report["settings"]["duplicate_box_iou"] == 0.95
    assert report["issues"][0]["severity"] == "error"  # worst first
    paths = {(i["rule"], i["path"]) for i in report["issues"]}
    assert ("truncated", str(tmp_path / "cut.jpg")) in paths and ("source_skipped", str(tmp_path / "lost.png")) in paths
    md = (tmp_path / "train" / "lint" / "report.md").read_text()
    assert md.startswith("# Dataset lint report") and "| `truncated` | 1 | 1 | error 1 | dropped image 1 |" in md
    assert "## `duplicate_box` (1)" in md and str(tmp_path / "cut.jpg") in md and "| zz | 1 |" in md
    assert not list((tmp_path / "train" / "lint").glob(".*tmp"))  # written atomically: no temp files left
    summary = result.summary()
    assert summary[0].startswith("lint: 2 of 3 image(s) kept (1 dropped, 1 skipped while loading); 3 of 7 box(es)")
    assert any(line.startswith("  truncated: 1 (1 dropped image) e.g. cut.jpg") for line in summary)


def test_clean_data_gives_an_ok_report(tmp_path: Path) -> None:
    recs = [record(save(tmp_path / "a.png", texture(1)), [[5, 5, 30, 30]], ["a"])]
    result = lint(recs, ClassMap(("a",)), LintSettings(), progress=False)
    assert result.report["ok"] is True and result.issues == [] and result.summary()[1:] == []
    assert all(block["issues"] == 0 for block in result.report["rules"].values())


def test_nothing_usable_names_the_rules(tmp_path: Path) -> None:
    cut = record(truncate(save(tmp_path / "cut.png", texture(1))))
    small = record(save(tmp_path / "small.png", texture(2, (20, 20))))
    annotations = AnnotationSet([cut, small], [SkippedImage(str(tmp_path / "x.png"), "empty image file")])
    with pytest.raises(LintError, match=r"no usable images left .*source_skipped 1, too_small 1, truncated 1"):
        lint_for_run(annotations, run_settings(tmp_path, min_image_size=32), save_dir=tmp_path / "train",
                     progress=False)
    report = json.loads((tmp_path / "train" / "lint" / "report.json").read_text())  # written before the error
    assert report["counts"]["images_kept"] == 0


def test_nothing_loaded_says_so(tmp_path: Path) -> None:
    with pytest.raises(LintError, match="no image was loaded"):
        lint_for_run(AnnotationSet([]), run_settings(tmp_path), save_dir=tmp_path / "train", progress=False)


def test_lint_off_leaves_the_data_alone(tmp_path: Path, mixed: AnnotationSet) -> None:
    before = list(mixed.records)
    result = lint_for_run(mixed, run_settings(tmp_path, enabled=False), save_dir=tmp_path / "train", progress=False)
    assert result.records == before and result.issues == [] and result.report == {}
    assert mixed.records == before and not (tmp_path / "train" / "lint").exists()


def test_boxes_on_images_the_source_skipped_are_counted(tmp_path: Path) -> None:
    good = record(save(tmp_path / "good.png", texture(1)), [[5, 5, 30, 30]], ["a"])
    lost = [SkippedImage(str(tmp_path / "gone.png"), "image file not found", boxes=3),
            SkippedImage(str(tmp_path / "bad.png"), "not an image", boxes=2)]
    result = lint_for_run(AnnotationSet([good], lost), run_settings(tmp_path), save_dir=tmp_path / "train",
                          progress=False)
    assert result is not None and result.report["counts"]["source_skipped_boxes"] == 5
    assert "; 1 of 6 box(es) kept (0 dropped, 0 clipped, 5 on images skipped while loading)" in result.summary()[0]
    md = (tmp_path / "train" / "lint" / "report.md").read_text()
    assert "skipped 2 image(s) holding 5 box(es)" in md
