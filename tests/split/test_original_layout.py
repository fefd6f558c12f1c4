"""Issue 14: splits of the original system's own layout (gt_train_/gt_val_ tasks of one video,
session/camera/video folders, sequence-numbered frames, a video id reused in another session),
from local files and from MongoDB. ``group`` and ``tsne`` keep every recording on one side; with
a grouping forced wrong the leakage check finds the planted neighbours and ``--fail-on-leak``
fails."""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from helpers.original_export import write_original_export
from helpers.original_layout import (S1, S2, Layout, build_original_layout, neighbours_across,
                                     sides_per_recording)
from obdb.cli.main import main
from obdb.mongo.snapshot import import_snapshot, snapshot_files
from obdb.prepare import load_annotations
from obdb.settings import parse_settings
from obdb.sources.grouping import assign_groups, frame_group, strip_split_prefix
from obdb.split import split_for_run
from obdb.split.leakage import neighbour_pairs, sequence_key
from obdb.split.report import summary_lines
from obdb.split.service import SplitLeakError

FAST = {"features": "pixels", "clusters": 2, "thumbnails": False, "pca_dims": 8, "perplexity": 5.0}
#: The original system's grouping, by task: splits every video into its train and val task.
BY_TASK = r"(gt_(?:train|val)_.*)"


@pytest.fixture(scope="module")
def layout(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    return build_original_layout(tmp_path_factory.mktemp("original"))


def raw_settings(layout: Layout, out: Path, data: dict[str, Any] | None = None, **split: Any) -> dict[str, Any]:
    return {"experiment": "original", "variants": ["resnet18"],
            "resnet18": {"run_hpo": 0, "optimal_hpo_settings": {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4,
                                                                "step_size": 3, "gamma": 0.5}},
            "save_dir": str(out / "train"), "dataset_dir": str(layout.root),
            "default_class_map": ["Background", "weed", "maize"],
            "data": {"images_dir": str(layout.images_dir), "annotations": [str(layout.annotations_dir)],
                     **(data or {})},
            "split": {"method": "group", "val_fraction": 0.25, "tsne": FAST, **split}}


def check_no_leak(layout: Layout, outcome: Any) -> None:
    sides = sides_per_recording(layout, outcome.manifest.assignment)
    assert len(sides) == 8 and all(len(s) == 1 for s in sides.values()), sides
    assert {side for s in sides.values() for side in s} == {"train", "val"}
    assert neighbours_across(layout, outcome.manifest.assignment) == 0
    assert outcome.leak_count == 0 and outcome.leak_message() is None
    assert outcome.leaks["neighbours"]["pairs"] == 0 and outcome.leaks["groups"]["ok"]


def check_groups(records: list[Any]) -> None:
    group = {(r.task, r.image_id.rsplit("/", 1)[1]): r.group for r in records}
    by_task: dict[str, set[str]] = {}
    for (task, _), g in group.items():
        by_task.setdefault(task, set()).add(g)
    assert all(len(g) == 1 for g in by_task.values())
    one = lambda task: next(iter(by_task[task]))  # noqa: E731
    # train and val task of one video: one group
    assert one(f"gt_train_{S1}_3R_GH060070") == one(f"gt_val_{S1}_3R_GH060070")
    # the video id reused in another session: another group
    assert one(f"gt_train_{S1}_3R_GH070066") != one(f"gt_train_{S2}_2R_GH070066")
    # a task holding another video's frames joins that video's group
    assert one(f"gt_train_{S1}_1L_GH020073") == one(f"gt_val_{S1}_1L_GH010073")
    assert len({r.group for r in records}) == 7


@pytest.mark.parametrize("method", ["group", "tsne"])
def test_local_original_layout_splits_by_recording(layout: Layout, tmp_path: Path, method: str) -> None:
    settings = parse_settings(raw_settings(layout, tmp_path, method=method))
    annotations = load_annotations(settings, progress=False)
    assert len(annotations.records) == 8 * 10 + 1 and not annotations.skipped
    check_groups(annotations.records)
    outcome = split_for_run(annotations.records, settings, save_dir=tmp_path, progress=False, report=True)
    check_no_leak(layout, outcome)
    report = outcome.report
    assert report is not None and report["leakage"]["neighbours"]["pairs"] == 0
    assert report["grouping"]["groups"] == 7 and report["grouping"]["merged_groups"] == 7
    text = "\n".join(summary_lines(report))
    assert "grouping: 7 group(s)" in text and "e.g." in text and "neighbouring frames across sides: 0 pair(s)" in text


@pytest.mark.parametrize("method", ["group", "tsne"])
def test_mongo_original_layout_splits_by_recording(layout: Layout, tmp_path: Path, mongo_db, mongo_settings,
                                                   method: str) -> None:
    export = write_original_export(layout.xml_files(), tmp_path / "export")  # as mongoexport writes it
    import_snapshot(mongo_db, snapshot_files([export]), progress=False)  # what `obdb db import` does
    raw = raw_settings(layout, tmp_path, {"source": "mongo", "mongo": mongo_settings(mongo_db.name)}, method=method)
    del raw["data"]["annotations"]
    raw["annotations_list"] = layout.tasks
    settings = parse_settings(raw)
    annotations = load_annotations(settings, progress=False)
    assert len(annotations.records) == 81
    check_groups(annotations.records)
    check_no_leak(layout, split_for_run(annotations.records, settings, save_dir=tmp_path, progress=False))


def test_wrong_grouping_is_caught_by_the_neighbour_check(layout: Layout, tmp_path: Path) -> None:
    for method in ("group", "random", "tsne"):
        settings = parse_settings(raw_settings(layout, tmp_path / method, {"group_regex": BY_TASK}, method=method,
                                               seed=3, val_fraction=0.3))
        annotations = load_annotations(settings, progress=False)
        assert len({r.group for r in annotations.records}) == 16  # one per task, as the original did
        outcome = split_for_run(annotations.records, settings, save_dir=tmp_path / method, progress=False,
                                report=True)
        planted = neighbours_across(layout, outcome.manifest.assignment)
        assert planted > 0, method
        assert outcome.leaks["neighbours"]["pairs"] == planted
        assert outcome.report["leakage"]["neighbours"]["pairs"] == planted
        assert outcome.report["leakage"]["ok"] is False and outcome.leak_count >= planted
        assert f"neighbouring frames across sides: {planted} pair(s)" in "\n".join(summary_lines(outcome.report))
        assert "LEAKS" in (outcome.leak_message() or "")
        with pytest.raises(SplitLeakError, match="LEAKS"):
            split_for_run(annotations.records, settings, save_dir=tmp_path / method, progress=False,
                          fail_on_leak=True)


def test_split_command_fail_on_leak(layout: Layout, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(raw_settings(layout, tmp_path, {"group_regex": BY_TASK}, seed=3, val_fraction=0.3)))
    assert main(["split", "-f", str(path), "--progress", "false"]) == 0
    out = capsys.readouterr()
    pairs = int(re.search(r"neighbouring frames across sides: (\d+) pair", out.out).group(1))
    assert pairs > 0 and "LEAKS" in caplog.text
    assert main(["split", "-f", str(path), "--progress", "false", "--fail-on-leak"]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and f"{pairs} neighbouring frame pair(s)" in err
    assert main(["split", "-f", str(path), "--progress", "false", "split.fail_on_leak=true"]) == 2
    capsys.readouterr()
    assert main(["split", "-f", str(path), "--progress", "false", "split.fail_on_leak=true",
                 "--no-fail-on-leak"]) == 0
    # the default grouping of the same data: no leak, --fail-on-leak passes
    path.write_text(json.dumps(raw_settings(layout, tmp_path, seed=3, val_fraction=0.3)))
    assert main(["split", "-f", str(path), "--progress", "false", "--fail-on-leak"]) == 0
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.delenv("NO_COLOR", raising=False)
    path.write_text(json.dumps(raw_settings(layout, tmp_path, {"group_regex": BY_TASK}, seed=3, val_fraction=0.3)))
    caplog.clear()
    assert main(["split", "-f", str(path), "--progress", "false"]) == 0
    red = [m for m in caplog.messages if m.startswith("\033[1;31msplit ")]  # the leak warning is red
    assert len(red) == 1 and f"{pairs} neighbouring frame pair(s)" in red[0]


# --------------------------------------------------------------------------- units

def test_strip_split_prefix() -> None:
    assert strip_split_prefix("gt_train_FieldData_2020_3R_GH060070") == "FieldData_2020_3R_GH060070"
    assert strip_split_prefix("gt_val_FieldData_2020 3R GH060070") == "FieldData_2020_3R_GH060070"
    for task in ("train_vid1", "val_vid1", "test_vid1", "vid1_train", "Validation-vid1", "gt_vid1"):
        assert strip_split_prefix(task) == "vid1", task
    assert strip_split_prefix("trainer_video") == "trainer_video"  # a word, not a split prefix
    assert strip_split_prefix("gt_train_") == "gt_train_"  # nothing left: keep the name


def test_group_regex_matches_file_name_then_path_then_task() -> None:
    name = "fielddata/s1/20200508/3R/GH060070/GH060070frame0029.png"
    assert frame_group(name, "gt_val_x", re.compile(r"^(GH\d+)")) == "GH060070"  # file name
    assert frame_group(name, "gt_val_x", re.compile(r"^fielddata/(s\d)/")) == "s1"  # relative path
    assert frame_group(name, "gt_val_x", re.compile(r"^gt_(\w+)_x")) == "val"  # task
    assert frame_group(name, "gt_val_x", re.compile(r"nomatch")) == "x"  # default: task without prefix


def test_assign_groups_joins_folder_and_task() -> None:
    from obdb.records import ImageRecord

    def rec(task: str, name: str) -> ImageRecord:
        return ImageRecord(f"{task}/{name}", Path("/x") / name, 8, 8, [], [], task=task)

    records = [rec("gt_train_A", "a/f1.png"), rec("gt_val_A", "a/f2.png"), rec("gt_train_B", "b/f1.png"),
               rec("gt_train_B", "a/f3.png"), rec("gt_train_C", "c/f1.png"), rec("gt_train_D", "d1.png")]
    grouping = assign_groups(records)
    groups = [r.group for r in records]
    assert groups[0] == groups[1] == groups[2] == groups[3] == "A+1"  # B holds a frame of A's folder
    assert groups[4] == "C" and groups[5] == "D" and grouping.groups == 3 and grouping.merged == 1
    assert grouping.examples[0]["tasks"] == ["gt_train_A", "gt_train_B", "gt_val_A"]
    assert grouping.examples[0]["folders"] == ["a", "b"]
    assert assign_groups(records, r"(f\d)").by_regex == {"file name": 5}  # d1.png: no match, folder+task
    assert [r.group for r in records] == ["f1", "f2", "f1", "f3", "f1", "D"]


def test_neighbour_pairs() -> None:
    names = ["v/img_0001.png", "v/img_0002.png", "v/img_0003.png", "w/img_0002.png", "v/img_0003.jpg",
             "v/x.png", "v/img_0020.png"]
    sides = ["train", "val", "val", "train", "train", "val", "train"]
    pairs = neighbour_pairs(names, sides, max_gap=10)
    # img_0003.jpg is img_0003.png's twin (gap 0) and img_0002's neighbour; other folder, no number,
    # or 17 frames apart: not neighbours
    assert {(p.a, p.b, p.gap) for p in pairs} == {(0, 1, 1), (1, 4, 1), (2, 4, 0)}
    assert {(p.a, p.b, p.gap) for p in neighbour_pairs(names, sides, max_gap=20)} - {(p.a, p.b, p.gap) for p in pairs} \
        == {(2, 6, 17)}
    assert sequence_key("a\\b\\GH01frame0029.PNG") == (("a/b", "gh01frame"), 29)
