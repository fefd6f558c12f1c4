"""Box matching (TP/FP/FN, IoUs, confusion matrix) against hand-computed values, and the COCO
metrics against numbers worked out by hand and against a plain pycocotools run."""
from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from obdb.evaluation import box_iou, coco_evaluation, coco_metrics, match_records
from obdb.records import ClassMap, ImageRecord

CLASSES = ClassMap(("car", "person"))
CAR, PERSON = 1, 2


def _record(image_id: str, boxes: list[list[float]], labels: list[str], size: int = 400) -> ImageRecord:
    return ImageRecord(image_id, Path(f"/nonexistent/{image_id}.png"), size, size,
                       np.array(boxes, dtype=np.float32).reshape(-1, 4), labels)


def _pred(boxes: list[list[float]], scores: list[float], labels: list[int]) -> dict:
    return {"boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4),
            "scores": np.array(scores, dtype=np.float32), "labels": np.array(labels, dtype=np.int64)}


def test_box_iou_by_hand() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 5], [5, 5, 15, 15], [20, 20, 30, 30], [0, 0, 10, 10]])
    expected = np.array([[0.5, 25 / 175, 0.0, 1.0]] * 2)
    assert box_iou(a, b) == pytest.approx(expected)
    assert box_iou(a, np.zeros((0, 4))).shape == (2, 0)


@pytest.fixture()
def case() -> tuple[list[ImageRecord], list[dict]]:
    """Image A: two cars and a person. p0 (0.9) overlaps car g0 with IoU 0.5; p1 (0.8) is exactly
    car g1; p2 (0.7) overlaps g0 with IoU 90/110 but comes after p0 (a duplicate); p3 (0.6) is a car
    on the person box (wrong class); p4 (0.3) is below the 0.5 score threshold. Image B has no
    ground truth and one person prediction; image C one person nobody found."""
    records = [_record("A", [[0, 0, 10, 10], [20, 0, 30, 10], [0, 20, 10, 30]], ["car", "car", "person"]),
               _record("B", [], []),
               _record("C", [[0, 0, 20, 20]], ["person"])]
    predictions = [_pred([[0, 0, 10, 5], [20, 0, 30, 10], [1, 0, 11, 10], [0, 20, 10, 30], [50, 50, 60, 60]],
                         [0.9, 0.8, 0.7, 0.6, 0.3], [CAR, CAR, CAR, CAR, PERSON]),
                   _pred([[0, 0, 5, 5]], [0.95], [PERSON]),
                   _pred([], [], [])]
    return records, predictions


def test_tp_fp_fn_rows_by_hand(case: tuple[list[ImageRecord], list[dict]]) -> None:
    records, predictions = case
    result = match_records(records, predictions, CLASSES, iou_threshold=0.5, score_threshold=0.5)
    rows = [(r["image_id"], r["kind"], r["label"], r["pred_index"], r["gt_index"], r["iou"], r["other_label"])
            for r in result.boxes]
    assert rows == [
        ("A", "TP", "car", 0, 0, pytest.approx(0.5), None),        # the higher score takes g0 (COCO greedy)
        ("A", "TP", "car", 1, 1, pytest.approx(1.0), None),
        ("A", "FP", "car", 2, None, pytest.approx(90 / 110), None),  # duplicate: best same-class IoU shown
        ("A", "FP", "car", 3, None, 0.0, "person"),                  # wrong class on the person box
        ("A", "FN", "person", None, 2, 0.0, "car"),
        ("B", "FP", "person", 0, None, 0.0, None),
        ("C", "FN", "person", None, 0, 0.0, None),
    ]
    tp = next(r for r in result.boxes if r["kind"] == "TP")
    assert [tp[k] for k in ("pred_x1", "pred_y1", "pred_x2", "pred_y2")] == [0, 0, 10, 5]
    assert [tp[k] for k in ("gt_x1", "gt_y1", "gt_x2", "gt_y2")] == [0, 0, 10, 10]
    a, b, c = result.images
    assert (a["tp"], a["fp"], a["fn"], a["errors"], a["num_pred"]) == (2, 2, 1, 3, 4)
    assert a["precision"] == pytest.approx(0.5) and a["recall"] == pytest.approx(2 / 3, abs=1e-6)
    assert a["f1"] == pytest.approx(4 / 7, abs=1e-6) and a["mean_iou"] == pytest.approx(0.75)
    assert (b["fp"], b["fn"], c["fp"], c["fn"]) == (1, 0, 0, 1)
    totals = result.totals()
    assert (totals["tp"], totals["fp"], totals["fn"]) == (2, 3, 2)
    assert totals["per_class"] == {"car": {"tp": 2, "fp": 2, "fn": 0}, "person": {"tp": 0, "fp": 1, "fn": 2}}


def test_confusion_matrix_by_hand(case: tuple[list[ImageRecord], list[dict]]) -> None:
    records, predictions = case
    result = match_records(records, predictions, CLASSES, score_threshold=0.5)
    assert result.confusion_labels == ["car", "person", "background"]
    # rows: ground truth car, person, background; columns: predicted car, person, background
    assert result.confusion.tolist() == [[2, 0, 0],   # two cars found
                                         [1, 0, 1],   # person A taken for a car, person C missed
                                         [1, 1, 0]]   # duplicate car in A, person on empty B
    # the diagonal is exactly the per-class true positives
    per_class = result.totals()["per_class"]
    assert [result.confusion[i, i] for i in range(2)] == [per_class["car"]["tp"], per_class["person"]["tp"]]


def test_score_and_iou_thresholds(case: tuple[list[ImageRecord], list[dict]]) -> None:
    records, predictions = case
    everything = match_records(records, predictions, CLASSES, score_threshold=0.0)
    assert [r["pred_index"] for r in everything.boxes if r["image_id"] == "A" and r["kind"] == "FP"] == [2, 3, 4]
    strict = match_records(records, predictions, CLASSES, iou_threshold=0.6, score_threshold=0.5)
    # at IoU 0.6 p0 (IoU 0.5) no longer matches, so the duplicate p2 (IoU 0.82) takes g0
    matched = {r["pred_index"]: r["gt_index"] for r in strict.boxes if r["image_id"] == "A" and r["kind"] == "TP"}
    assert matched == {1: 1, 2: 0}
    with pytest.raises(ValueError, match="3 records"):
        match_records(records, predictions[:2], CLASSES)
    with pytest.raises(ValueError, match="iou_threshold"):
        match_records(records, predictions, CLASSES, iou_threshold=0.0)


def test_background_and_unknown_prediction_labels_are_ignored() -> None:
    records = [_record("A", [[0, 0, 10, 10]], ["car"])]
    result = match_records(records, [_pred([[0, 0, 10, 10]] * 3, [0.9, 0.9, 0.9], [0, 7, CAR])], CLASSES)
    assert [(r["kind"], r["pred_index"]) for r in result.boxes] == [("TP", 2)]


# ------------------------------------------------------------ COCO metrics, worked out by hand

def _hand_case() -> tuple[list[ImageRecord], list[dict]]:
    """Three large (100×100) cars on two images; four detections:
    image 1: d1 0.9 exact on car a (IoU 1), d2 0.8 on nothing (a medium 50×50 box);
    image 2: d3 0.7 on car c with IoU 0.82 (a 100×82 box, medium area 8200), d4 0.6 exact on c.
    Car b (image 1) is never found."""
    records = [_record("img1", [[0, 0, 100, 100], [200, 200, 300, 300]], ["car", "car"]),
               _record("img2", [[0, 0, 100, 100]], ["car"])]
    predictions = [_pred([[0, 0, 100, 100], [300, 300, 350, 350]], [0.9, 0.8], [CAR, CAR]),
                   _pred([[0, 0, 100, 82], [0, 0, 100, 100]], [0.7, 0.6], [CAR, CAR])]
    return records, predictions


# IoU thresholds 0.50 … 0.80 (7 of 10): ranks TP, FP, TP(d3), FP(d4 duplicate) → recall 1/3, 1/3,
# 2/3, 2/3 and precision 1, 1/2, 2/3, 1/2; interpolated precision is 1 for the 34 recall points
# 0.00–0.33 and 2/3 for the 33 points 0.34–0.66, 0 above: AP = (34 + 33·2/3) / 101 = 56/101.
AP_LOW = 56 / 101
# IoU 0.85, 0.90, 0.95: d3 misses, d4 matches: TP, FP, FP, TP → precision 1 up to recall 1/3,
# then max(1/3, 1/2) = 1/2 up to 2/3: AP = (34 + 33/2) / 101 = 0.5.
AP_HIGH = 50.5 / 101
# Large objects only: unmatched detections outside the large range (d2, and d3 where it misses) are
# ignored, so at every threshold the ranking is TP, TP(, FP) with recall reaching 2/3 at precision 1:
# AP = 67/101.
AP_LARGE = 67 / 101


def test_coco_metrics_equal_hand_computed_values() -> None:
    records, predictions = _hand_case()
    m, curves = coco_evaluation(records, predictions, CLASSES)
    assert m["map50"] == pytest.approx(AP_LOW)
    assert m["map75"] == pytest.approx(AP_LOW)
    assert m["map"] == pytest.approx((7 * AP_LOW + 3 * AP_HIGH) / 10)
    assert m["map_large"] == pytest.approx(AP_LARGE)
    assert m["map_medium"] == 0.0 and m["map_small"] == 0.0  # no ground truth of those sizes
    assert m["mar_100"] == pytest.approx(2 / 3)
    assert m["per_class"] == {"car": pytest.approx(m["map"]), "person": None}
    assert m["per_class_ap50"]["car"] == pytest.approx(AP_LOW)
    # the curves are the interpolated precision COCO averaged
    car = curves["per_class"]["car"]
    assert len(curves["recall"]) == 101 and set(curves["per_class"]) == {"car"}
    assert car["iou50"][:34] == [1.0] * 34 and car["iou50"][34:67] == [pytest.approx(2 / 3, abs=1e-6)] * 33
    assert car["iou50"][67:] == [0.0] * 34
    assert np.mean(car["iou50"]) == pytest.approx(AP_LOW, abs=1e-6)
    assert np.mean(car["iou50_95"]) == pytest.approx(m["map"], abs=1e-6)


def test_coco_metrics_equal_a_plain_pycocotools_run(tmp_path: Path) -> None:
    """The same case through pycocotools' own file-based path (COCO(json) + loadRes + summarize)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    records, predictions = _hand_case()
    gt = {"images": [{"id": 1, "width": 400, "height": 400}, {"id": 2, "width": 400, "height": 400}],
          "categories": [{"id": 1, "name": "car"}, {"id": 2, "name": "person"}], "annotations": []}
    for image_id, record in enumerate(records, 1):
        for x1, y1, x2, y2 in record.boxes.tolist():
            gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id, "category_id": 1,
                                      "bbox": [x1, y1, x2 - x1, y2 - y1], "area": (x2 - x1) * (y2 - y1),
                                      "iscrowd": 0})
    results = [{"image_id": image_id, "category_id": int(label), "bbox": [x1, y1, x2 - x1, y2 - y1],
                "score": float(score)}
               for image_id, p in enumerate(predictions, 1)
               for (x1, y1, x2, y2), score, label in zip(p["boxes"].tolist(), p["scores"], p["labels"])]
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(str(tmp_path / "gt.json"))
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = evaluator.stats  # AP, AP50, AP75, APs, APm, APl, AR1, AR10, AR100, ...
    ours = coco_metrics(records, predictions, CLASSES)
    assert ours["map"] == pytest.approx(stats[0])
    assert ours["map50"] == pytest.approx(stats[1])
    assert ours["map75"] == pytest.approx(stats[2])
    assert ours["map_large"] == pytest.approx(stats[5])
    assert ours["mar_100"] == pytest.approx(stats[8])
    assert stats[1] == pytest.approx(AP_LOW)  # and pycocotools agrees with the hand computation
