"""The evaluation report folder (files exist and parse, tables sort, figures open) and the
test_model.py flags that shape it."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers.tiny_data import make_tiny_dataset
from obdb.evaluation import coco_evaluation, match_records
from obdb.evaluation.report import ReportOptions, pick_cases, write_report
from obdb.records import ClassMap, ImageRecord

CLASSES = ClassMap(("red", "blue"))


def _records(tmp_path: Path, n: int = 6) -> list[ImageRecord]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        path = tmp_path / f"im{i}.png"
        Image.fromarray(np.full((80, 120, 3), 40 * i % 255, dtype=np.uint8)).save(path)
        records.append(ImageRecord(f"task/im{i}", path, 120, 80, [[10, 10, 40, 40], [60, 20, 100, 60]],
                                   ["red", "blue"]))
    return records


def _predictions(records: list[ImageRecord]) -> list[dict]:
    """Image i gets i false positives; image 0 is perfect, image 5 also misses its blue box."""
    predictions = []
    for i, record in enumerate(records):
        boxes = record.boxes.tolist() + [[5 + 3 * k, 60, 15 + 3 * k, 75] for k in range(i)]
        labels = [1, 2] + [1] * i
        scores = [0.9, 0.8] + [0.7] * i
        if i == 5:
            boxes, labels, scores = boxes[:1] + boxes[2:], labels[:1] + labels[2:], scores[:1] + scores[2:]
        predictions.append({"boxes": np.array(boxes, np.float32), "scores": np.array(scores, np.float32),
                            "labels": np.array(labels, np.int64)})
    return predictions


def _write(tmp_path: Path, options: ReportOptions) -> tuple[dict[str, Path], list[ImageRecord]]:
    records = _records(tmp_path)
    predictions = _predictions(records)
    metrics, curves = coco_evaluation(records, predictions, CLASSES)
    result = {"model": "m.pt", "variant": "resnet18", "data": {"settings_split": "val"},
              "num_images": len(records), "evaluated": "now", "metrics": metrics}
    matching = match_records(records, predictions, CLASSES, iou_threshold=options.iou_threshold,
                             score_threshold=options.score_threshold)
    return write_report(tmp_path / "out", result, records, matching, curves, options), records


def test_report_files_exist_and_parse(tmp_path: Path) -> None:
    files, records = _write(tmp_path, ReportOptions(num_disp=4))
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["metrics.json", "per_box.csv", "per_image.csv", "pr_curves.png", "confusion_matrix.png",
         "mosaic_pass.png", "mosaic_fail.png", "report.md"])
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("map", "map50", "map75", "map_small", "map_medium", "map_large", "per_class", "per_class_ap50"):
        assert key in metrics["metrics"], key
    assert metrics["matching"]["tp"] == 11 and metrics["matching"]["fp"] == 15 and metrics["matching"]["fn"] == 1
    assert metrics["confusion_matrix"]["labels"] == ["red", "blue", "background"]
    assert metrics["options"]["num_disp"] == 4 and metrics["files"]["mosaic_fail"] == "mosaic_fail.png"

    with open(out / "per_image.csv", newline="") as handle:
        images = list(csv.DictReader(handle))
    assert len(images) == 6
    by_fp = sorted(images, key=lambda r: -int(r["fp"]))  # "most false positives first" is one sort
    assert [r["image_id"] for r in by_fp[:2]] == ["task/im5", "task/im4"]
    assert by_fp[-1]["image_id"] == "task/im0" and by_fp[-1]["f1"] == "1.0"
    with open(out / "per_box.csv", newline="") as handle:
        boxes = list(csv.DictReader(handle))
    assert len(boxes) == 11 + 15 + 1
    fn = [b for b in boxes if b["kind"] == "FN"]
    assert [(b["image_id"], b["label"], b["gt_index"], b["score"]) for b in fn] == [("task/im5", "blue", "1", "")]
    assert all(float(b["iou"]) == 1.0 for b in boxes if b["kind"] == "TP")

    for name in ("pr_curves.png", "confusion_matrix.png", "mosaic_pass.png", "mosaic_fail.png"):
        with Image.open(out / name) as image:
            assert image.format == "PNG" and 200 <= image.width <= 4000 and 200 <= image.height <= 4000, name
    with Image.open(out / "mosaic_fail.png") as image:
        assert image.width > 2 * 320  # four tiles in a 2×2 grid
    report = (out / "report.md").read_text()
    assert "| mAP@[.5:.95] |" in report and "| red |" in report and "| blue |" in report
    for name in ("pr_curves.png", "confusion_matrix.png", "mosaic_pass.png", "mosaic_fail.png"):
        assert f"]({name})" in report  # embedded by relative path
    assert not list(out.glob(".*.tmp"))


def test_report_options(tmp_path: Path) -> None:
    _write(tmp_path, ReportOptions(show_case="fail", plots=True, num_disp=2))
    assert not (tmp_path / "out" / "mosaic_pass.png").exists() and (tmp_path / "out" / "mosaic_fail.png").exists()
    _write(tmp_path / "b", ReportOptions(plots=False))
    assert not list((tmp_path / "b" / "out").glob("*.png"))
    assert (tmp_path / "b" / "out" / "report.md").exists()
    with pytest.raises(ValueError, match="show_case"):
        ReportOptions(show_case="all")
    with pytest.raises(ValueError, match="score_threshold"):
        ReportOptions(score_threshold=1.5)


def test_pick_cases() -> None:
    rows = [{"image_id": "a", "f1": 1.0, "errors": 0, "tp": 0}, {"image_id": "b", "f1": 1.0, "errors": 0, "tp": 3},
            {"image_id": "c", "f1": 0.5, "errors": 4, "tp": 2}, {"image_id": "d", "f1": 0.2, "errors": 4, "tp": 1}]
    assert [r["image_id"] for r in pick_cases(rows, "pass", 3)] == ["b", "a", "c"]
    assert [r["image_id"] for r in pick_cases(rows, "fail", 10)] == ["d", "c"]  # only images with errors


# --------------------------------------------------------------------- test_model.py end to end

@pytest.fixture(scope="module")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """An untrained (random-init) resnet18 Faster R-CNN saved as a model file, and tiny data."""
    import torch

    from obdb.models import ModelSpec, build_detector, save_model

    root = tmp_path_factory.mktemp("report_cli")
    data = make_tiny_dataset(root / "data", videos=2, frames=2)
    torch.manual_seed(0)
    model, spec = build_detector(ModelSpec(backbone="resnet18", num_classes=3, min_size=96, max_size=96))
    model.roi_heads.score_thresh = 0.0  # an untrained model scores low; keep its boxes for the tables
    path = root / "model" / "model.pt"
    save_model(path, model, spec, CLASSES, extra={"variant": "resnet18"})
    return path, data


def test_test_model_writes_the_report(saved_model: tuple[Path, Path], tmp_path: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    from obdb.cli.test_model import main

    model, data = saved_model
    common = ["-m", str(model), "--annotations", str(data / "annotations"), "--images", str(data / "images"),
              "--device", "cpu", "--progress", "false"]
    out = tmp_path / "report"
    assert main([*common, "--out", str(out), "--show-case", "fail", "--num-disp", "3", "--iou", "0.3",
                 "--score-threshold", "0"]) == 0
    assert "report:" in capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_images"] == 4
    assert metrics["options"] == {"show_case": "fail", "num_disp": 3, "iou_threshold": 0.3, "score_threshold": 0.0,
                                  "plots": True}
    assert (out / "mosaic_fail.png").exists() and not (out / "mosaic_pass.png").exists()
    legacy = json.loads((model.parent / "eval" / "files_metrics.json").read_text())  # -o default kept
    assert legacy["metrics"] == metrics["metrics"]

    # defaults: the report goes next to the model; --no-plots writes tables only
    assert main([*common, "--no-plots"]) == 0
    default_out = model.parent / "eval" / "files"
    assert (default_out / "per_box.csv").exists() and not list(default_out.glob("*.png"))
    assert json.loads((default_out / "metrics.json").read_text())["options"]["score_threshold"] == 0.5


@pytest.mark.parametrize("flags", [["--show-case", "all"], ["--iou", "0"], ["--score-threshold", "2"],
                                   ["--num-disp", "-1"], ["--plots", "maybe"]])
def test_test_model_refuses_bad_flags(flags: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from obdb.cli.test_model import main

    with pytest.raises(SystemExit) as exit_info:
        main(["-m", str(tmp_path / "m.pt"), *flags])
    assert exit_info.value.code == 2
    assert flags[0] in capsys.readouterr().err


def test_long_captions_are_shortened_in_the_middle_and_keep_the_file_name() -> None:
    from obdb.evaluation.plots import fit_line

    measure = len  # one unit per character
    name = "gt_val_FieldData_20200508122912_3R_GH060070/fielddata/x/20200508/3R/GH060070/GH060070frame0029.png"
    short = fit_line(name, 40, measure)
    assert len(short) <= 40 and "…" in short
    assert short.endswith("frame0029.png") and short.startswith("gt_")
    assert fit_line("TP=1 | FP=0", 40, measure) == "TP=1 | FP=0"
