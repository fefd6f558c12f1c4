"""Box-level matching of predictions to ground truth: TP/FP/FN rows, per-image counts, confusion matrix.

COCO's AP answers "how good is the model overall"; these tables answer "which boxes are wrong", so
"most false positives first" is one sort of a CSV. Pure numpy (no torch, no files).

Matching is greedy per image and class, as in COCO: predictions in descending score order each
take the unmatched ground-truth box of their class with the highest IoU, if that IoU reaches the
threshold. A second, class-agnostic pass over what is left pairs a false positive with a false
negative of *another* class that it overlaps: those pairs are the wrong-class confusions of the
confusion matrix, and they keep the diagonal equal to the true positives of the first pass.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from obdb.records import ClassMap, ImageRecord

TP, FP, FN = "TP", "FP", "FN"
BACKGROUND_NAME = "background"
BOX_COLUMNS = ("image_id", "kind", "label", "score", "iou", "pred_index", "gt_index", "other_label",
               "pred_x1", "pred_y1", "pred_x2", "pred_y2", "gt_x1", "gt_y1", "gt_x2", "gt_y2")
IMAGE_COLUMNS = ("image_id", "path", "num_gt", "num_pred", "tp", "fp", "fn", "errors", "precision", "recall",
                 "f1", "mean_iou")


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of every box in ``a`` (N×4 xyxy) with every box in ``b`` (M×4) as an N×M array.
    Areas are ``w * h`` without the old "+1" pixel convention, as pycocotools computes them."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def greedy_match(ious: np.ndarray, order: np.ndarray, allowed: np.ndarray, threshold: float) -> np.ndarray:
    """For each prediction (row) visited in ``order``, the column of the unmatched ground truth
    with the highest IoU among ``allowed`` pairs, if it reaches ``threshold``; -1 otherwise."""
    n_pred, n_gt = ious.shape
    match = np.full(n_pred, -1, dtype=np.int64)
    taken = np.zeros(n_gt, dtype=bool)
    for p in order:
        candidates = np.where(allowed[p] & ~taken, ious[p], -1.0)
        if n_gt and candidates.max() >= threshold:
            g = int(np.argmax(candidates))
            match[p] = g
            taken[g] = True
    return match


def _as_numpy(value: Any, dtype: type, width: int | None = None) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    array = np.asarray(value, dtype=dtype)
    return array.reshape(-1, width) if width else array.reshape(-1)


@dataclass
class ImageMatch:
    """Matching of one image. Indices refer to the record's boxes and to the prediction's boxes
    *after* the score threshold (``kept`` maps them back to the model's output order)."""

    gt_labels: np.ndarray        # class indices (ClassMap.index) of the ground truth
    pred_labels: np.ndarray      # class indices of the kept predictions
    pred_scores: np.ndarray
    pred_boxes: np.ndarray
    kept: np.ndarray             # index into the raw prediction of every kept prediction
    ious: np.ndarray             # kept predictions × ground truth
    pred_to_gt: np.ndarray       # same-class match (ground-truth index or -1)
    gt_to_pred: np.ndarray
    confused_pred_to_gt: np.ndarray  # class-agnostic pairs among the leftovers (other class), or -1
    confused_gt_to_pred: np.ndarray

    @property
    def tp(self) -> int:
        return int((self.pred_to_gt >= 0).sum())

    @property
    def fp(self) -> int:
        return int((self.pred_to_gt < 0).sum())

    @property
    def fn(self) -> int:
        return int((self.gt_to_pred < 0).sum())


def match_image(gt_boxes: np.ndarray, gt_labels: np.ndarray, prediction: Mapping[str, Any], *, num_classes: int,
                iou_threshold: float = 0.5, score_threshold: float = 0.0) -> ImageMatch:
    """Match one image's predictions (``boxes``/``scores``/``labels``, model indices) to its ground
    truth. Predictions below ``score_threshold`` or with a label outside ``1..num_classes-1``
    (background) are left out before matching."""
    boxes = _as_numpy(prediction["boxes"], np.float64, 4)
    scores = _as_numpy(prediction["scores"], np.float64)
    labels = _as_numpy(prediction["labels"], np.int64)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(f"prediction has {len(boxes)} boxes, {len(scores)} scores, {len(labels)} labels")
    kept = np.flatnonzero((scores >= score_threshold) & (labels >= 1) & (labels < num_classes))
    boxes, scores, labels = boxes[kept], scores[kept], labels[kept]
    gt_boxes = np.asarray(gt_boxes, dtype=np.float64).reshape(-1, 4)
    gt_labels = np.asarray(gt_labels, dtype=np.int64).reshape(-1)
    ious = box_iou(boxes, gt_boxes)
    order = np.argsort(-scores, kind="stable")
    same_class = labels[:, None] == gt_labels[None, :]
    pred_to_gt = greedy_match(ious, order, same_class, iou_threshold)
    gt_to_pred = np.full(len(gt_boxes), -1, dtype=np.int64)
    gt_to_pred[pred_to_gt[pred_to_gt >= 0]] = np.flatnonzero(pred_to_gt >= 0)
    # second pass: leftover predictions against leftover ground truth of another class
    leftover = (pred_to_gt < 0)[:, None] & (gt_to_pred < 0)[None, :] & ~same_class
    confused = greedy_match(ious, order, leftover, iou_threshold)
    confused_gt = np.full(len(gt_boxes), -1, dtype=np.int64)
    confused_gt[confused[confused >= 0]] = np.flatnonzero(confused >= 0)
    return ImageMatch(gt_labels, labels, scores, boxes, kept, ious, pred_to_gt, gt_to_pred, confused, confused_gt)


@dataclass
class MatchResult:
    """Per-box rows (dicts with :data:`BOX_COLUMNS`), per-image rows (:data:`IMAGE_COLUMNS`) and
    the confusion matrix (rows: ground-truth class, then background; columns: predicted class,
    then background), with the thresholds used."""

    boxes: list[dict[str, Any]]
    images: list[dict[str, Any]]
    confusion: np.ndarray
    class_names: list[str]
    iou_threshold: float
    score_threshold: float
    matches: list[ImageMatch] = field(default_factory=list, repr=False)

    @property
    def confusion_labels(self) -> list[str]:
        return [*self.class_names, BACKGROUND_NAME]

    def totals(self) -> dict[str, Any]:
        tp = sum(r["tp"] for r in self.images)
        fp = sum(r["fp"] for r in self.images)
        fn = sum(r["fn"] for r in self.images)
        precision, recall, f1 = _prf(tp, fp, fn)
        return {"iou_threshold": self.iou_threshold, "score_threshold": self.score_threshold, "tp": tp, "fp": fp,
                "fn": fn, "precision": precision, "recall": recall, "f1": f1,
                "per_class": self.per_class_counts()}

    def per_class_counts(self) -> dict[str, dict[str, int]]:
        counts = {name: {TP: 0, FP: 0, FN: 0} for name in self.class_names}
        for row in self.boxes:
            counts[row["label"]][row["kind"]] += 1
        return {name: {k.lower(): v for k, v in c.items()} for name, c in counts.items()}


def _prf(tp: int, fp: int, fn: int) -> tuple[float, float, float]:
    """Precision, recall and F1; an image with nothing to find and nothing found scores 1.0."""
    precision = tp / (tp + fp) if tp + fp else (1.0 if not fn else 0.0)
    recall = tp / (tp + fn) if tp + fn else (1.0 if not fp else 0.0)
    f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0
    return precision, recall, f1


def _box(values: np.ndarray | None) -> list[float | None]:
    return [None] * 4 if values is None else [round(float(v), 2) for v in values]


def _best_other(ious: np.ndarray, same_class: np.ndarray) -> tuple[float, int]:
    """Highest IoU among same-class candidates (why a box missed), and its index."""
    if not ious.size or not same_class.any():
        return 0.0, -1
    masked = np.where(same_class, ious, -1.0)
    index = int(np.argmax(masked))
    return max(float(masked[index]), 0.0), index


def _image_rows(record: ImageRecord, m: ImageMatch, class_map: ClassMap) -> list[dict[str, Any]]:
    rows = []
    gt = np.asarray(record.boxes, dtype=np.float64).reshape(-1, 4)
    for p in range(len(m.pred_labels)):
        g = int(m.pred_to_gt[p])
        if g >= 0:
            iou, kind, other = float(m.ious[p, g]), TP, None
        else:
            iou, _ = _best_other(m.ious[p], m.gt_labels == m.pred_labels[p])
            kind = FP
            c = int(m.confused_pred_to_gt[p])
            other = class_map.name(int(m.gt_labels[c])) if c >= 0 else None
        rows.append({"image_id": record.image_id, "kind": kind, "label": class_map.name(int(m.pred_labels[p])),
                     "score": round(float(m.pred_scores[p]), 6), "iou": round(iou, 6), "pred_index": int(m.kept[p]),
                     "gt_index": g if g >= 0 else None, "other_label": other,
                     **dict(zip(BOX_COLUMNS[8:12], _box(m.pred_boxes[p]))),
                     **dict(zip(BOX_COLUMNS[12:16], _box(gt[g] if g >= 0 else None)))})
    for g in np.flatnonzero(m.gt_to_pred < 0):
        iou, _ = _best_other(m.ious[:, g], m.pred_labels == m.gt_labels[g])
        c = int(m.confused_gt_to_pred[g])
        rows.append({"image_id": record.image_id, "kind": FN, "label": class_map.name(int(m.gt_labels[g])),
                     "score": None, "iou": round(iou, 6), "pred_index": None, "gt_index": int(g),
                     "other_label": class_map.name(int(m.pred_labels[c])) if c >= 0 else None,
                     **dict(zip(BOX_COLUMNS[8:12], _box(None))), **dict(zip(BOX_COLUMNS[12:16], _box(gt[g])))})
    return rows


def match_records(records: Sequence[ImageRecord], predictions: Sequence[Mapping[str, Any]], class_map: ClassMap, *,
                  iou_threshold: float = 0.5, score_threshold: float = 0.0) -> MatchResult:
    """Match every record's ground truth (labels must be in ``class_map``) with its prediction
    (one dict per record, in order; labels are model indices).

    Box rows: a TP row per matched pair (``iou`` with its match), an FP row per unmatched
    prediction and an FN row per unmatched ground-truth box; for FP/FN ``iou`` is the best IoU
    with a same-class box on the other side (0.4 means "found, but badly placed"), and
    ``other_label`` names the class of the box it overlaps enough in the class-agnostic pass
    (a wrong-class detection)."""
    if len(predictions) != len(records):
        raise ValueError(f"{len(predictions)} predictions for {len(records)} records; "
                         "there must be exactly one prediction dict per record, in order")
    if not 0.0 < iou_threshold <= 1.0:
        raise ValueError(f"iou_threshold must be in (0, 1], got {iou_threshold}")
    n = len(class_map.names)
    confusion = np.zeros((n + 1, n + 1), dtype=np.int64)  # index i = class index i+1; n = background
    boxes: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    matches: list[ImageMatch] = []
    for record, prediction in zip(records, predictions):
        gt_labels = np.asarray([class_map.index(label) for label in record.labels], dtype=np.int64)
        m = match_image(record.boxes, gt_labels, prediction, num_classes=class_map.num_classes,
                        iou_threshold=iou_threshold, score_threshold=score_threshold)
        matches.append(m)
        for p, g in enumerate(m.pred_to_gt):
            if g >= 0:
                confusion[m.gt_labels[g] - 1, m.pred_labels[p] - 1] += 1
            elif m.confused_pred_to_gt[p] >= 0:
                confusion[m.gt_labels[m.confused_pred_to_gt[p]] - 1, m.pred_labels[p] - 1] += 1
            else:
                confusion[n, m.pred_labels[p] - 1] += 1
        for g in np.flatnonzero((m.gt_to_pred < 0) & (m.confused_gt_to_pred < 0)):
            confusion[m.gt_labels[g] - 1, n] += 1
        boxes.extend(_image_rows(record, m, class_map))
        precision, recall, f1 = _prf(m.tp, m.fp, m.fn)
        tp_ious = [m.ious[p, g] for p, g in enumerate(m.pred_to_gt) if g >= 0]
        images.append({"image_id": record.image_id, "path": str(record.path), "num_gt": len(gt_labels),
                       "num_pred": len(m.pred_labels), "tp": m.tp, "fp": m.fp, "fn": m.fn, "errors": m.fp + m.fn,
                       "precision": round(precision, 6), "recall": round(recall, 6), "f1": round(f1, 6),
                       "mean_iou": round(float(np.mean(tp_ious)), 6) if tp_ious else None})
    return MatchResult(boxes, images, confusion, list(class_map.names), float(iou_threshold),
                       float(score_threshold), matches)
