"""Label review: planted label errors rank at the top of ``rank_problems``; folds keep groups
together; ``obdb review`` end to end on the tiny data set (2 folds × 1 epoch)."""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
from PIL import Image

from obdb.evaluation import box_iou
from obdb.records import ClassMap, ImageRecord
from obdb.review import Problem, ReviewThresholds, rank_problems
from obdb.review.folds import group_folds
from obdb.review.report import write_review

CLASSES = ClassMap(("red", "blue"))


# ------------------------------------------------------------------ synthetic truth and labels

def _truth(n_images: int = 10, seed: int = 0) -> list[ImageRecord]:
    """Objects on a 4×4 grid of 60 px cells (no two overlap), 2 to 5 per 240 px image."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n_images):
        cells = rng.choice(16, size=int(rng.integers(2, 6)), replace=False)
        boxes, labels = [], []
        for cell in cells:
            r, c = divmod(int(cell), 4)
            w, h = rng.integers(24, 36, size=2)
            x, y = c * 60 + rng.integers(8, 60 - w - 8 + 1), r * 60 + rng.integers(8, 60 - h - 8 + 1)
            boxes.append([x, y, x + w, y + h])
            labels.append(str(rng.choice(CLASSES.names)))
        records.append(ImageRecord(f"video{i // 3}/frame{i}", Path(f"/nonexistent/{i}.png"), 240, 240,
                                   np.array(boxes, np.float32), labels, group=f"video{i // 3}"))
    return records


def _plant(truth: list[ImageRecord]) -> tuple[list[ImageRecord], list[tuple[str, str, Any]]]:
    """Copy the truth into labels with planted errors; returns the labels and what was planted:
    ``(image_id, kind, detail)`` with detail the true box (missing), the ground-truth index
    (mislocated, wrong_class) or the planted box (spurious)."""
    labels = [ImageRecord(r.image_id, r.path, r.width, r.height, r.boxes.copy(), list(r.labels), group=r.group)
              for r in truth]
    planted: list[tuple[str, str, Any]] = []
    for i in (1, 4):  # a labeller forgot a box
        record = labels[i]
        planted.append((record.image_id, "missing", record.boxes[0].tolist()))
        record.boxes, record.labels = record.boxes[1:], record.labels[1:]
    for i in (2, 5):  # a box dragged sideways by 45 % of its width: IoU (1 - 0.45) / (1 + 0.45) = 0.379
        record = labels[i]
        w = record.boxes[0, 2] - record.boxes[0, 0]
        record.boxes[0, [0, 2]] += 0.45 * w
        planted.append((record.image_id, "mislocated", 0))
    for i in (3, 6):  # the wrong class picked
        record = labels[i]
        record.labels[0] = "blue" if record.labels[0] == "red" else "red"
        planted.append((record.image_id, "wrong_class", 0))
    record = labels[7]  # a box on nothing, in a grid cell without an object
    taken = {(int(b[1] // 60), int(b[0] // 60)) for b in record.boxes}
    r, c = next((r, c) for r in range(4) for c in range(4) if (r, c) not in taken)
    spurious = [c * 60 + 12.0, r * 60 + 12.0, c * 60 + 44.0, r * 60 + 40.0]
    record.boxes = np.vstack([record.boxes, [spurious]]).astype(np.float32)
    record.labels.append("red")
    planted.append((record.image_id, "spurious", spurious))
    return labels, planted


def _model(truth: list[ImageRecord], *, noisy: bool, seed: int = 1) -> list[dict[str, np.ndarray]]:
    """Predictions of the true boxes. ``noisy``: every edge off by up to 3 % of the box size (IoU
    above 0.8) and one box per image by up to 12 %, scores 0.6-0.99, plus low-score clutter
    (background boxes and other-class duplicates at 0.05-0.4) that a review must not mistake
    for label errors."""
    rng = np.random.default_rng(seed)
    predictions = []
    for record in truth:
        boxes = record.boxes.astype(np.float64).copy()
        labels = [CLASSES.index(label) for label in record.labels]
        scores = np.full(len(boxes), 0.95)
        if noisy:
            size = np.repeat(boxes[:, 2:] - boxes[:, :2], 2, axis=0).reshape(-1, 4)
            boxes += rng.uniform(-0.03, 0.03, boxes.shape) * size
            boxes[-1] += rng.uniform(-0.12, 0.12, 4) * size[-1]  # one loose box per image: a mild disagreement
            scores = rng.uniform(0.6, 0.99, len(boxes))
            clutter = [[rng.uniform(0, 200), rng.uniform(0, 200)] for _ in range(2)]
            extra = [[x, y, x + 25, y + 25] for x, y in clutter] + boxes[:1].tolist()
            boxes = np.vstack([boxes, extra])
            labels += [1, 2, 3 - labels[0]]
            scores = np.concatenate([scores, rng.uniform(0.05, 0.4, 3)])
        predictions.append({"boxes": boxes.astype(np.float32), "scores": scores.astype(np.float32),
                            "labels": np.array(labels, np.int64)})
    return predictions


def _is_planted(problem: Problem, planted: tuple[str, str, Any]) -> bool:
    image_id, kind, detail = planted
    if problem.image_id != image_id or problem.kind != kind:
        return False
    if kind in ("missing", "spurious"):
        return box_iou(np.array([problem.box]), np.array([detail]))[0, 0] > 0.8
    return problem.gt_index == detail


@pytest.mark.parametrize("noisy", [False, True], ids=["perfect-model", "noisy-model"])
def test_planted_problems_rank_at_the_top(noisy: bool) -> None:
    truth = _truth()
    labels, planted = _plant(truth)
    problems = rank_problems(labels, _model(truth, noisy=noisy), CLASSES)
    top = problems[:len(planted)]
    for plant in planted:
        assert sum(_is_planted(p, plant) for p in top) == 1, (plant, top)
    if not noisy:  # a perfect model disagrees with the labels exactly where they were spoiled
        assert len(problems) == len(planted)
    else:  # the loose boxes are suspected too, but less than anything planted
        assert len(problems) > len(planted)
        assert all(p.score < min(t.score for t in top) for p in problems[len(planted):])
    scores = [p.score for p in problems]
    assert scores == sorted(scores, reverse=True) and all(0.0 <= s <= 1.0 for s in scores)

    by_kind = {p.kind: p for p in top}
    shifted = by_kind["mislocated"]
    assert shifted.label == shifted.predicted_label
    assert shifted.iou == pytest.approx(0.55 / 1.45, abs=0.08 if noisy else 1e-3)
    truth_box = next(r for r in truth if r.image_id == shifted.image_id).boxes[0]
    assert box_iou(np.array([shifted.predicted_box]), truth_box[None])[0, 0] > 0.8
    relabelled = by_kind["wrong_class"]
    true_label = next(r for r in truth if r.image_id == relabelled.image_id).labels[0]
    assert relabelled.predicted_label == true_label and relabelled.label != true_label
    assert relabelled.shape_label == true_label
    missing = by_kind["missing"]
    assert missing.label is None and missing.gt_index is None and missing.predicted_label in CLASSES.names
    spurious = by_kind["spurious"]
    assert spurious.label == "red" and spurious.predicted_label is None and spurious.predicted_box is None
    if not noisy:
        assert relabelled.score == pytest.approx(0.95) and shifted.score == pytest.approx(0.95 * (1 - shifted.iou))


def test_one_problem_per_object() -> None:
    """Two confident boxes (two classes) on one unlabelled object are one ``missing``; a low-score
    box on a labelled object only weakens the suspicion that it is spurious; a class the model
    never gets right gives no evidence (score 0, left out)."""
    labels = [ImageRecord("a", Path("/x.png"), 100, 100, [[60, 60, 90, 90]], ["red"]),
              ImageRecord("b", Path("/y.png"), 100, 100, [[10, 10, 40, 40], [60, 60, 90, 90]], ["blue", "blue"])]
    predictions = [{"boxes": np.array([[10, 10, 40, 40], [11, 10, 41, 40], [60, 60, 90, 90]], np.float32),
                    "scores": np.array([0.9, 0.8, 0.95], np.float32), "labels": np.array([1, 2, 1])},
                   {"boxes": np.array([[10, 10, 40, 40], [61, 60, 90, 90]], np.float32),
                    "scores": np.array([0.9, 0.1], np.float32), "labels": np.array([2, 2])}]
    problems = rank_problems(labels, predictions, CLASSES)
    # red: 1 TP and 1 FP among confident boxes, so precision 0.5; blue: recall 0.5, a 0.1 box on b's 2nd
    assert [(p.image_id, p.kind, p.pred_index, p.gt_index, p.score) for p in problems] == [
        ("a", "missing", 0, None, pytest.approx(0.45)), ("b", "spurious", None, 1, pytest.approx(0.5 * 0.9))]
    assert problems[0].predicted_label == "red" and problems[1].label == "blue"
    # only a red box on empty ground: red precision and blue recall are 0
    never_right = [{"boxes": np.array([[45, 45, 55, 55]], np.float32), "scores": np.array([0.9], np.float32),
                    "labels": np.array([1])}]
    assert rank_problems(labels[1:], never_right, CLASSES) == []
    with pytest.raises(ValueError, match="1 records"):
        rank_problems(labels[:1], [], CLASSES)
    with pytest.raises(ValueError, match="overlap"):
        ReviewThresholds(overlap=0.8, good_iou=0.75)


def test_group_folds_keep_groups_together() -> None:
    records = _truth(12)
    folds = group_folds(records, 2, seed=0)
    assert set(folds) == {r.image_id for r in records} and set(folds.values()) == {0, 1}
    for record in records:
        assert len({folds[r.image_id] for r in records if r.group == record.group}) == 1
    assert group_folds(records, 2, seed=0) == folds  # deterministic
    with pytest.raises(ValueError, match="at least 2 folds"):
        group_folds(records, 1, seed=0)


def test_review_files(tmp_path: Path) -> None:
    truth = _truth(8)
    for i, record in enumerate(truth):
        record.path = tmp_path / f"{i}.png"
        Image.fromarray(np.full((240, 240, 3), 120, np.uint8)).save(record.path)
    labels, planted = _plant(truth)
    problems = rank_problems(labels, _model(truth, noisy=False), CLASSES)
    files = write_review(tmp_path / "review", problems, labels, info={"variant": "resnet18"}, top=3)
    data = json.loads(files["json"].read_text())
    assert data["format"] == "obdb-review" and data["num_problems"] == len(planted) == len(data["problems"])
    assert data["counts"] == {"missing": 2, "spurious": 1, "mislocated": 2, "wrong_class": 2}
    first = data["problems"][0]
    assert first["rank"] == 1 and set(first) >= {"image_id", "image_path", "task", "frame", "width", "height",
                                                 "kind", "score", "box", "label", "predicted_label", "shape_label"}
    assert len(first["box"]) == 4 and Path(first["image_path"]).exists()
    with open(files["csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["kind"] for r in rows] == [p["kind"] for p in data["problems"]]
    assert float(rows[0]["score"]) >= float(rows[-1]["score"])
    with Image.open(files["mosaic"]) as image:
        assert image.format == "PNG" and image.width >= 2 * 256 and image.height >= 256


# ------------------------------------------------------------------ obdb review end to end

@pytest.mark.slow
def test_obdb_review_end_to_end(settings_file: Callable[..., Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    from obdb.cli.main import main
    from obdb.split import SplitManifest

    # the run's own k-fold split (t-SNE on pixel features) provides the folds
    path = settings_file(split={"method": "tsne", "tsne": {"features": "pixels", "clusters": 2, "folds": 2}},
                         train={"batch_size": 6, "workers": 0, "device": "cpu", "warmup_iters": 1})
    out = tmp_path / "review"
    argv = ["review", "-f", str(path), "--epochs", "1", "--out", str(out), "--top", "5", "--min-score", "0.05",
            "--progress", "false"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "12 images in 2 folds" in printed

    manifest = SplitManifest.load(next((tmp_path / "train" / "splits").glob("*.json")))
    predicted: dict[str, int] = {}
    for fold in (0, 1):
        data = json.loads((out / "folds" / f"fold{fold}" / "predictions.json").read_text())
        assert data["fold"] == fold
        for image_id, prediction in data["predictions"].items():
            predicted[image_id] = fold
            assert len(prediction["boxes"]) == len(prediction["scores"]) == len(prediction["labels"])
    assert predicted == manifest.folds  # every image predicted once, by the model that did not train on it
    review = json.loads((out / "review.json").read_text())
    assert review["num_images"] == 12 and review["folds"]["count"] == 2
    assert "split manifest" in review["folds"]["source"]
    assert 0.0 <= review["out_of_fold_metrics"]["map"] <= 1.0
    assert (out / "review.csv").exists() and (out / "review_mosaic.png").exists()
    assert all(p["fold"] in (0, 1) for p in review["problems"])

    # the same command again: both folds are done, nothing is trained
    before = [(out / "folds" / f"fold{k}" / "predictions.json").stat().st_mtime_ns for k in (0, 1)]
    assert main([*argv, "--log-level", "INFO"]) == 0
    after = [(out / "folds" / f"fold{k}" / "predictions.json").stat().st_mtime_ns for k in (0, 1)]
    assert before == after
    assert json.loads((out / "review.json").read_text())["problems"] == review["problems"]


def test_obdb_review_refuses_bad_input(settings_file: Callable[..., Path], tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from obdb.cli.main import main

    path = settings_file()
    assert main(["review", "-f", str(path), "--folds", "9", "--out", str(tmp_path / "r"), "--progress", "false"]) == 2
    assert "needs at least 9 groups, found 4" in capsys.readouterr().err
    assert not (tmp_path / "r" / "review.json").exists()
    with pytest.raises(SystemExit):
        main(["review", "-f", str(path), "--folds", "0"])
    for key in ("CVAT_URL", "CVAT_USERNAME", "CVAT_PASSWORD", "CVAT_ACCESS_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    assert main(["review", "-f", str(path), "--push-cvat", "true", "--out", str(tmp_path / "r")]) == 2
    assert "--push-cvat: no CVAT server given" in capsys.readouterr().err
    assert not (tmp_path / "r" / "folds").exists()  # refused before any training
    assert main(["review", "-f", str(tmp_path / "missing.json")]) == 2
