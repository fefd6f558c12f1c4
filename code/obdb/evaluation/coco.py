"""COCO box metrics (pycocotools) from records and predictions, as plain JSON-able numbers.

Pure functions: no torch, no files. The ground truth is built from the same
:class:`~obdb.records.ImageRecord` objects training uses, so nothing has to be exported to a COCO
JSON first and the category ids are exactly ``ClassMap.index`` (the model's label space).

Headline numbers are read straight from ``COCOeval.eval`` rather than through
``COCOeval.summarize()``: ``summarize`` prints, and it hard-codes ``maxDets=100`` for AP, which
silently yields -1 for every AP once ``maxDets`` is changed.
"""
from __future__ import annotations

import contextlib
import io
from typing import Any, Mapping, Sequence

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from obdb.records import ClassMap, ImageRecord

SIZE_BUCKETS = ("small", "medium", "large")  # COCO area ranges: < 32², 32²–96², > 96² pixels
HEADLINE_KEYS = ("map", "map50", "map75", "map_small", "map_medium", "map_large", "mar_100")


def _as_numpy(value: Any, dtype: type, width: int | None = None) -> np.ndarray:
    """Accept numpy arrays, lists or (CPU/GPU) tensors without importing torch here."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=dtype)
    return array.reshape(-1, width) if width else array.reshape(-1)


def _xywh(boxes: np.ndarray) -> np.ndarray:
    out = boxes.astype(np.float64).copy()
    out[:, 2:] -= out[:, :2]
    return out


def build_coco_gt(records: Sequence[ImageRecord], class_map: ClassMap) -> dict[str, Any]:
    """A COCO ground-truth dict. Image ``i`` of ``records`` gets id ``i + 1`` and annotation ids
    start at 1: COCOeval marks "unmatched" with id 0, so a 0 id would never count as a match.
    Images without boxes are listed, so false positives on negatives are penalised."""
    images, annotations = [], []
    for i, record in enumerate(records):
        images.append({"id": i + 1, "file_name": str(record.path), "width": int(record.width),
                       "height": int(record.height)})
        for box, label in zip(_xywh(record.boxes), record.labels):
            x, y, w, h = (float(v) for v in box)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": class_map.index(label), "bbox": [x, y, w, h],
                                "area": w * h, "iscrowd": 0})
    categories = [{"id": class_map.index(name), "name": name} for name in class_map.names]
    return {"images": images, "annotations": annotations, "categories": categories}


def build_coco_dt(predictions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """COCO detection annotations; prediction ``i`` belongs to image id ``i + 1``."""
    detections: list[dict[str, Any]] = []
    for i, pred in enumerate(predictions):
        boxes = _as_numpy(pred["boxes"], np.float64, 4)
        scores = _as_numpy(pred["scores"], np.float64)
        labels = _as_numpy(pred["labels"], np.int64)
        if not len(boxes) == len(scores) == len(labels):
            raise ValueError(f"prediction {i}: {len(boxes)} boxes, {len(scores)} scores, "
                             f"{len(labels)} labels")
        for box, score, label in zip(_xywh(boxes), scores, labels):
            x, y, w, h = (float(v) for v in box)
            detections.append({"id": len(detections) + 1, "image_id": i + 1,
                               "category_id": int(label), "bbox": [x, y, w, h], "area": w * h,
                               "score": float(score), "iscrowd": 0})
    return detections


def _coco_from(dataset: dict[str, Any]) -> COCO:
    """Build a COCO index from a dict in memory (``loadRes`` would deep-copy the ground truth
    and crashes on an empty detection list)."""
    coco = COCO()
    coco.dataset = dataset
    coco.createIndex()
    return coco


def _mean_valid(values: np.ndarray) -> float | None:
    """Mean over entries COCO did not mark undefined (-1); None when all are undefined."""
    valid = values[values > -1]
    return float(valid.mean()) if valid.size else None


def _area_counts(records: Sequence[ImageRecord]) -> dict[str, int]:
    counts = dict.fromkeys(SIZE_BUCKETS, 0)
    for record in records:
        wh = record.boxes[:, 2:] - record.boxes[:, :2]
        area = wh[:, 0].astype(np.float64) * wh[:, 1]
        counts["small"] += int((area < 32**2).sum())
        counts["medium"] += int(((area >= 32**2) & (area <= 96**2)).sum())
        counts["large"] += int((area > 96**2).sum())
    return counts


def coco_metrics(
    records: Sequence[ImageRecord],
    predictions: Sequence[Mapping[str, Any]],
    class_map: ClassMap,
    *,
    max_dets: int = 100,
) -> dict[str, Any]:
    """COCO bbox metrics (see :func:`coco_evaluation`, which also returns the PR curves)."""
    return coco_evaluation(records, predictions, class_map, max_dets=max_dets)[0]


def coco_evaluation(
    records: Sequence[ImageRecord],
    predictions: Sequence[Mapping[str, Any]],
    class_map: ClassMap,
    *,
    max_dets: int = 100,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """COCO bbox metrics of ``predictions`` (one dict per record, same order) against ``records``.

    Each prediction holds ``boxes`` (N×4 xyxy pixels), ``scores`` (N) and ``labels`` (N, model
    indices = ``class_map.index``; other labels, e.g. background, are simply not evaluated).

    Returns plain floats / ints / None:

    * ``map`` (AP@[.5:.95]), ``map50``, ``map75``, ``map_small``, ``map_medium``, ``map_large``,
      ``mar_100`` (AR with ``max_dets`` detections). COCO's "undefined" (-1) becomes **0.0**
      here, so an objective never sees None: with no ground truth at all everything is 0.0, and
      a size bucket without ground truth reads 0.0 too — ``num_gt_by_size`` tells the two apart.
    * ``per_class`` / ``per_class_ap50``: ``{name: AP}``, **None** for a class without ground
      truth: its AP is undefined, not zero. Note that, as in COCO, detections of such a class
      are then not penalised anywhere (COCOeval skips classes without ground truth).
    * ``num_images``, ``num_gt_boxes``, ``num_predictions``, ``num_gt_by_size``, ``max_dets``.

    ``max_dets`` caps detections per image *and class* (COCO uses ``maxDets=[1, 10, max_dets]``;
    the headline numbers use the last). The COCO default of 100 undercounts recall on aerial
    images with hundreds of objects, so raise it there; ``mar_100`` keeps its name but then means
    AR@``max_dets``. Headline AP is the mean over classes with ground truth, as in COCO.

    With no predictions at all, every defined value is 0.0 without running COCOeval.

    The second value holds the precision-recall curves (see :func:`pr_curves`); they are empty
    when COCOeval did not run.
    """
    if len(predictions) != len(records):
        raise ValueError(f"{len(predictions)} predictions for {len(records)} records; "
                         "there must be exactly one prediction dict per record, in order")
    if max_dets < 10:
        raise ValueError(f"max_dets must be >= 10 (COCO evaluates maxDets=[1, 10, max_dets]), got {max_dets}")

    gt_dict = build_coco_gt(records, class_map)
    detections = build_coco_dt(predictions)
    num_gt = len(gt_dict["annotations"])
    gt_classes = {ann["category_id"] for ann in gt_dict["annotations"]}
    result: dict[str, Any] = {key: 0.0 for key in HEADLINE_KEYS}
    result["per_class"] = {n: (0.0 if class_map.index(n) in gt_classes else None) for n in class_map.names}
    result["per_class_ap50"] = dict(result["per_class"])
    result.update(num_images=len(records), num_gt_boxes=num_gt, num_predictions=len(detections),
                  num_gt_by_size=_area_counts(records), max_dets=int(max_dets))
    curves: dict[str, Any] = {"recall": [], "per_class": {}}
    if not detections or not num_gt or not records:
        return result, curves

    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress unconditionally
        coco_gt = _coco_from(gt_dict)
        coco_dt = _coco_from({"images": gt_dict["images"], "categories": gt_dict["categories"],
                              "annotations": detections})
        evaluator = COCOeval(coco_gt, coco_dt, iouType="bbox")
        evaluator.params.maxDets = [1, 10, int(max_dets)]
        evaluator.evaluate()
        evaluator.accumulate()

    params = evaluator.params
    precision = evaluator.eval["precision"]  # [T iou, R recall, K class, A area, M maxDets]
    recall = evaluator.eval["recall"]  # [T, K, A, M]
    area_index = {label: i for i, label in enumerate(params.areaRngLbl)}
    t50 = int(np.argmin(np.abs(params.iouThrs - 0.5)))
    t75 = int(np.argmin(np.abs(params.iouThrs - 0.75)))
    all_area, last = area_index["all"], len(params.maxDets) - 1

    def headline(values: np.ndarray) -> float:
        mean = _mean_valid(values)
        return 0.0 if mean is None else mean

    result["map"] = headline(precision[:, :, :, all_area, last])
    result["map50"] = headline(precision[t50, :, :, all_area, last])
    result["map75"] = headline(precision[t75, :, :, all_area, last])
    for bucket in SIZE_BUCKETS:
        result[f"map_{bucket}"] = headline(precision[:, :, :, area_index[bucket], last])
    result["mar_100"] = headline(recall[:, :, all_area, last])

    for k, category_id in enumerate(params.catIds):
        name = class_map.name(int(category_id))
        result["per_class"][name] = _mean_valid(precision[:, :, k, all_area, last])
        result["per_class_ap50"][name] = _mean_valid(precision[t50, :, k, all_area, last])
    return result, pr_curves(evaluator, class_map)


def pr_curves(evaluator: COCOeval, class_map: ClassMap) -> dict[str, Any]:
    """Interpolated precision at COCO's 101 recall points, per class with ground truth:
    ``{"recall": [...], "per_class": {name: {"iou50": [...], "iou50_95": [...]}}}``.

    ``iou50`` is the curve at IoU 0.5 (its mean is AP50); ``iou50_95`` averages the curves of the
    ten IoU thresholds (its mean is AP). Points COCO marks undefined (-1: recall never reached)
    count as precision 0 there, which is what AP does too."""
    params = evaluator.params
    precision = evaluator.eval["precision"]
    all_area = list(params.areaRngLbl).index("all")
    t50 = int(np.argmin(np.abs(params.iouThrs - 0.5)))
    curves: dict[str, Any] = {"recall": [round(float(r), 4) for r in params.recThrs], "per_class": {}}
    for k, category_id in enumerate(params.catIds):
        curve = precision[:, :, k, all_area, -1]
        if not (curve > -1).any():
            continue  # no ground truth of this class
        curve = np.where(curve > -1, curve, 0.0)
        curves["per_class"][class_map.name(int(category_id))] = {
            "iou50": [round(float(v), 6) for v in curve[t50]],
            "iou50_95": [round(float(v), 6) for v in curve.mean(axis=0)]}
    return curves
