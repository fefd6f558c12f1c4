"""coco_metrics against hand-computed values, and evaluate() end to end on a tiny detector."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from obdb.evaluation import coco_metrics, evaluate, predict
from obdb.records import ClassMap, ImageRecord

CLASSES = ClassMap(("car", "person"))


def _record(i: int, boxes: list[list[float]], labels: list[str], size: int = 400) -> ImageRecord:
    return ImageRecord(f"img{i}", Path(f"/nonexistent/img{i}.png"), size, size,
                       np.array(boxes, dtype=np.float32), labels)


def _pred(boxes: list[list[float]], scores: list[float], labels: list[int]) -> dict:
    return {"boxes": np.array(boxes, dtype=np.float32).reshape(-1, 4),
            "scores": np.array(scores, dtype=np.float32), "labels": np.array(labels, dtype=np.int64)}


def _perfect(records: list[ImageRecord]) -> list[dict]:
    return [_pred(r.boxes.tolist(), [0.9] * len(r.labels), [CLASSES.index(n) for n in r.labels]) for r in records]


@pytest.fixture()
def records() -> list[ImageRecord]:
    return [
        _record(0, [[10, 10, 110, 110], [200, 200, 240, 260]], ["car", "person"]),
        _record(1, [[50, 60, 150, 200]], ["car"]),
        _record(2, [], []),  # negative image
    ]


def test_perfect_predictions(records: list[ImageRecord]) -> None:
    m = coco_metrics(records, _perfect(records), CLASSES)
    for key in ("map", "map50", "map75", "mar_100"):
        assert m[key] == pytest.approx(1.0), key
    assert m["per_class"] == {"car": pytest.approx(1.0), "person": pytest.approx(1.0)}
    assert m["num_images"] == 3 and m["num_gt_boxes"] == 3 and m["num_predictions"] == 3
    assert m["map_large"] == pytest.approx(1.0) and m["map_medium"] == pytest.approx(1.0)
    assert m["map_small"] == 0.0 and m["num_gt_by_size"] == {"small": 0, "medium": 1, "large": 2}
    json.dumps(m)  # plain JSON-able values
    assert all(isinstance(m[k], float) for k in ("map", "map50", "map75", "mar_100", "map_small"))


def test_torch_tensors_are_accepted(records: list[ImageRecord]) -> None:
    preds = [{k: torch.as_tensor(v) for k, v in p.items()} for p in _perfect(records)]
    assert coco_metrics(records, preds, CLASSES)["map"] == pytest.approx(1.0)


def test_known_iou_counts_only_at_low_thresholds() -> None:
    # GT 100×100, prediction 100×58 inside it: IoU = 0.58, strictly between the 0.55 and 0.60
    # thresholds, so it is a true positive at 0.50 and 0.55 only: 2 of 10 thresholds.
    recs = [_record(0, [[0, 0, 100, 100]], ["car"])]
    m = coco_metrics(recs, [_pred([[0, 0, 100, 58]], [0.8], [1])], CLASSES)
    assert m["map50"] == pytest.approx(1.0)
    assert m["map75"] == 0.0
    assert m["map"] == pytest.approx(0.2)
    assert m["mar_100"] == pytest.approx(0.2)
    assert m["per_class"] == {"car": pytest.approx(0.2), "person": None}


def test_two_classes_one_perfect_one_missed(records: list[ImageRecord]) -> None:
    preds = _perfect(records)
    preds[0] = _pred([[10, 10, 110, 110]], [0.9], [1])  # the person box is never predicted
    m = coco_metrics(records, preds, CLASSES)
    assert m["per_class"]["car"] == pytest.approx(1.0)
    assert m["per_class"]["person"] == 0.0
    assert m["per_class_ap50"] == {"car": pytest.approx(1.0), "person": 0.0}
    assert m["map"] == pytest.approx(0.5)  # mean over the classes with ground truth


def test_wrong_class_is_no_match(records: list[ImageRecord]) -> None:
    preds = _perfect(records)
    preds[0]["labels"] = np.array([1, 1])  # the person box predicted as car
    m = coco_metrics(records, preds, CLASSES)
    assert m["per_class"]["person"] == 0.0
    assert m["per_class"]["car"] < 1.0  # an extra car false positive


def test_class_without_ground_truth_is_none() -> None:
    recs = [_record(0, [[0, 0, 50, 50]], ["car"])]
    m = coco_metrics(recs, [_pred([[0, 0, 50, 50], [100, 100, 150, 150]], [0.9, 0.95], [1, 2])], CLASSES)
    assert m["per_class"] == {"car": pytest.approx(1.0), "person": None}
    assert m["per_class_ap50"]["person"] is None
    assert m["map"] == pytest.approx(1.0)  # COCO skips classes without ground truth


def test_high_scoring_false_positive_lowers_ap() -> None:
    # Two GT cars; detections ranked FP (0.9), TP (0.8), TP (0.7). Precision/recall after each:
    # (0, 0), (1/2, 1/2), (2/3, 1). Interpolated precision is 2/3 at every recall level → AP 2/3.
    recs = [_record(0, [[0, 0, 50, 50], [100, 0, 150, 50]], ["car", "car"])]
    boxes = [[300, 300, 350, 350], [0, 0, 50, 50], [100, 0, 150, 50]]
    high = coco_metrics(recs, [_pred(boxes, [0.9, 0.8, 0.7], [1, 1, 1])], CLASSES)
    assert high["map"] == pytest.approx(2 / 3)
    assert high["map50"] == pytest.approx(2 / 3)
    assert high["mar_100"] == pytest.approx(1.0)
    # The same false positive ranked last costs nothing: the PR curve reaches recall 1 at precision 1.
    low = coco_metrics(recs, [_pred(boxes, [0.1, 0.8, 0.7], [1, 1, 1])], CLASSES)
    assert low["map"] == pytest.approx(1.0)


def test_false_positive_on_negative_image_counts() -> None:
    recs = [_record(0, [[0, 0, 50, 50]], ["car"]), _record(1, [], [])]
    preds = [_pred([[0, 0, 50, 50]], [0.5], [1]), _pred([[0, 0, 50, 50]], [0.9], [1])]
    assert coco_metrics(recs, preds, CLASSES)["map"] == pytest.approx(0.5)


def test_no_predictions_gives_zeros(records: list[ImageRecord]) -> None:
    m = coco_metrics(records, [_pred([], [], []) for _ in records], CLASSES)
    assert m["map"] == m["map50"] == m["map75"] == m["mar_100"] == 0.0
    assert m["per_class"] == {"car": 0.0, "person": 0.0}
    assert m["num_predictions"] == 0 and m["num_gt_boxes"] == 3


def test_no_ground_truth_at_all() -> None:
    recs = [_record(0, [], [])]
    m = coco_metrics(recs, [_pred([[0, 0, 10, 10]], [0.9], [1])], CLASSES)
    assert m["map"] == 0.0 and m["mar_100"] == 0.0
    assert m["per_class"] == {"car": None, "person": None}
    assert coco_metrics([], [], CLASSES)["num_images"] == 0


def test_max_dets_is_configurable() -> None:
    # 150 small cars in one image, all predicted: with maxDets 100 recall caps at 100/150.
    boxes = [[x * 20, y * 20, x * 20 + 15, y * 20 + 15] for y in range(10) for x in range(15)]
    recs = [_record(0, boxes, ["car"] * len(boxes))]
    preds = [_pred(boxes, list(np.linspace(0.99, 0.5, len(boxes))), [1] * len(boxes))]
    default = coco_metrics(recs, preds, CLASSES)
    assert default["mar_100"] == pytest.approx(100 / 150)
    wide = coco_metrics(recs, preds, CLASSES, max_dets=300)
    assert wide["mar_100"] == pytest.approx(1.0) and wide["map"] == pytest.approx(1.0)
    assert wide["map_small"] == pytest.approx(1.0) and wide["max_dets"] == 300


def test_mismatched_lengths_raise(records: list[ImageRecord]) -> None:
    with pytest.raises(ValueError, match="3 records"):
        coco_metrics(records, _perfect(records)[:2], CLASSES)


# ---------------------------------------------------------------- evaluate() on a real model

def _tiny_model() -> torch.nn.Module:
    from torchvision.models.detection import FasterRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=4, padding=1), torch.nn.ReLU())
    backbone.out_channels = 8  # type: ignore[assignment]
    anchors = AnchorGenerator(sizes=((16, 32),), aspect_ratios=((0.5, 1.0, 2.0),))
    return FasterRCNN(backbone, num_classes=CLASSES.num_classes, rpn_anchor_generator=anchors,
                      min_size=64, max_size=64, box_score_thresh=0.0,
                      rpn_pre_nms_top_n_test=50, rpn_post_nms_top_n_test=20)


def test_evaluate_tiny_model(tmp_path: Path) -> None:
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    recs = []
    for i, (boxes, labels) in enumerate([([[5, 5, 30, 40]], ["car"]), ([[10, 20, 60, 60]], ["person"])]):
        path = tmp_path / f"im{i}.png"
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(path)
        recs.append(ImageRecord(f"im{i}", path, 64, 64, np.array(boxes, np.float32), labels))
    model = _tiny_model()
    model.train()
    m = evaluate(model, recs, CLASSES, device="cpu", batch_size=2, progress=False)
    assert model.training  # mode restored
    assert m["num_images"] == 2 and m["num_gt_boxes"] == 2
    assert m["num_predictions"] > 0  # box_score_thresh=0: the untrained model does emit boxes
    for key in ("map", "map50", "map75", "map_small", "map_medium", "map_large", "mar_100"):
        assert 0.0 <= m[key] <= 1.0 and math.isfinite(m[key]), key
    assert set(m["per_class"]) == {"car", "person"}
    json.dumps(m)

    from obdb.dataset import DetectionDataset, make_loader
    loader = make_loader(DetectionDataset(recs, CLASSES, train=False), batch_size=1, shuffle=False, workers=0)
    model.eval()
    preds = predict(model, loader, "cpu", progress=False)
    assert not model.training and len(preds) == 2
    for p in preds:
        assert p["boxes"].dtype == np.float32 and p["boxes"].shape[1] == 4
        assert p["scores"].dtype == np.float32 and p["labels"].dtype == np.int64
        assert len(p["boxes"]) == len(p["scores"]) == len(p["labels"])
    with pytest.raises(ValueError, match="unshuffled"):
        predict(model, make_loader(loader.dataset, batch_size=1, shuffle=True, workers=0), "cpu")
