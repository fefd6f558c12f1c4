"""Rank suspected label errors by comparing ground truth with out-of-sample predictions.

A model that never saw an image (see :mod:`obdb.review.folds`) disagrees with its labels in four
ways, each a :class:`Problem` ``kind`` with a suspicion ``score`` in [0, 1]:

* ``missing``: a confident prediction that overlaps no ground-truth box (IoU < ``overlap``): an
  object nobody labelled. Score: prediction score × the class's precision over the whole data
  set (a confident prediction of a class the model is rarely wrong about is more telling).
* ``spurious``: a ground-truth box that no confident prediction explains (none of its class
  placed well or partly, none of another class on it): a box on nothing. Score: the class's
  recall (a class the model usually finds) × (1 − the best score of any prediction overlapping
  it), so a faint detection there weakens the suspicion.
* ``mislocated``: the model's confident same-class box for this object overlaps it only partly
  (``overlap`` ≤ IoU < ``good_iou``): a shifted or badly sized box. Score: prediction score ×
  (1 − IoU).
* ``wrong_class``: a confident prediction of another class sits on the box (IoU ≥
  ``iou_threshold``) and beats every same-class prediction there. Score: its score minus the best
  same-class score on the box.

Each ground-truth box is reported at most once (wrong class, else mislocated, else spurious),
and overlapping ``missing`` predictions of one object are reported once. Pure numpy.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping, Sequence

import numpy as np

from ..evaluation.matching import box_iou, match_records
from ..records import ClassMap, ImageRecord

KINDS = ("missing", "spurious", "mislocated", "wrong_class")


@dataclass
class Problem:
    """One suspected label error. ``box`` is the ground-truth box concerned (xyxy pixels), or for
    ``missing`` the predicted box; ``label`` is the ground-truth label (None for ``missing``),
    ``predicted_label``/``predicted_box`` the prediction that raised the suspicion (None for a
    ``spurious`` box nothing overlaps); ``iou`` is the IoU between the two boxes (0 when either is
    missing); ``gt_index``/``pred_index`` point into the record's boxes and the prediction."""

    image_id: str
    box: list[float]
    kind: str
    score: float
    label: str | None = None
    predicted_label: str | None = None
    iou: float = 0.0
    predicted_box: list[float] | None = None
    gt_index: int | None = None
    pred_index: int | None = None

    @property
    def shape_label(self) -> str:
        """The label a corrected shape would carry: the model's for ``missing`` and
        ``wrong_class``, the ground truth's otherwise."""
        if self.kind in ("missing", "wrong_class"):
            return str(self.predicted_label)
        return str(self.label)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReviewThresholds:
    """``min_score``: a prediction this confident counts as the model's opinion; ``overlap``:
    below this IoU two boxes are about different objects; ``good_iou``: at or above it a box is
    placed well enough; ``iou_threshold``: the IoU of a match (tables, wrong class)."""

    min_score: float = 0.5
    overlap: float = 0.2
    good_iou: float = 0.75
    iou_threshold: float = 0.5

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_score <= 1.0:
            raise ValueError(f"min_score must be in [0, 1], got {self.min_score}")
        if not 0.0 < self.overlap < self.good_iou <= 1.0:
            raise ValueError(f"need 0 < overlap < good_iou <= 1, got {self.overlap} and {self.good_iou}")
        if not self.overlap <= self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in [overlap, 1], got {self.iou_threshold}")


def _arrays(prediction: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    def numpy(value: Any, dtype: type) -> np.ndarray:
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        return np.asarray(value, dtype=dtype)

    return (numpy(prediction["boxes"], np.float64).reshape(-1, 4), numpy(prediction["scores"], np.float64).reshape(-1),
            numpy(prediction["labels"], np.int64).reshape(-1))


def class_rates(records: Sequence[ImageRecord], predictions: Sequence[Mapping[str, Any]], class_map: ClassMap,
                thresholds: ReviewThresholds) -> tuple[dict[str, float], dict[str, float]]:
    """Per-class precision and recall of the confident predictions over the whole set (1.0 for a
    class without predictions / ground truth: no evidence against it)."""
    counts = match_records(records, predictions, class_map, iou_threshold=thresholds.iou_threshold,
                           score_threshold=thresholds.min_score).per_class_counts()
    precision = {n: c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else 1.0 for n, c in counts.items()}
    recall = {n: c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else 1.0 for n, c in counts.items()}
    return precision, recall


def _box(values: np.ndarray) -> list[float]:
    return [round(float(v), 2) for v in values]


def image_problems(record: ImageRecord, prediction: Mapping[str, Any], class_map: ClassMap,
                   thresholds: ReviewThresholds, precision: Mapping[str, float],
                   recall: Mapping[str, float]) -> list[Problem]:
    """The problems of one image (unsorted); see the module docstring for the rules."""
    t = thresholds
    boxes, scores, labels = _arrays(prediction)
    valid = (labels >= 1) & (labels < class_map.num_classes)
    gt_boxes = np.asarray(record.boxes, dtype=np.float64).reshape(-1, 4)
    gt_labels = np.asarray([class_map.index(label) for label in record.labels], dtype=np.int64)
    ious = box_iou(gt_boxes, boxes)  # G × P
    confident = valid & (scores >= t.min_score)
    owner = ious.argmax(axis=0) if len(gt_boxes) else np.zeros(len(boxes), dtype=np.int64)
    problems: list[Problem] = []
    for g, (gt_box, gt_label) in enumerate(zip(gt_boxes, gt_labels)):
        name = class_map.name(int(gt_label))
        row = ious[g]
        same, other = valid & (labels == gt_label), valid & (labels != gt_label)
        on_box = row >= t.iou_threshold
        best_same = float(scores[same & on_box].max()) if (same & on_box).any() else 0.0
        rivals = np.flatnonzero(other & on_box & confident)
        if len(rivals):
            p = int(rivals[np.argmax(scores[rivals])])
            if scores[p] > best_same:
                problems.append(Problem(record.image_id, _box(gt_box), "wrong_class", float(scores[p]) - best_same,
                                        name, class_map.name(int(labels[p])), float(row[p]), _box(boxes[p]), g, p))
                continue
        candidates = np.flatnonzero(same & confident & (owner == g) & (row >= t.overlap))
        if len(candidates):
            p = int(candidates[np.argmax(row[candidates])])
            if row[p] < t.good_iou:
                problems.append(Problem(record.image_id, _box(gt_box), "mislocated", float(scores[p]) * (1 - row[p]),
                                        name, name, float(row[p]), _box(boxes[p]), g, p))
            continue
        touching = valid & (row >= t.overlap)
        seen = float(scores[touching].max()) if touching.any() else 0.0  # a weak box here is weak evidence
        if seen < t.min_score:
            problems.append(Problem(record.image_id, _box(gt_box), "spurious", recall.get(name, 1.0) * (1 - seen),
                                    name, gt_index=g))
    unexplained = confident & ((ious.max(axis=0) if len(gt_boxes) else np.zeros(len(boxes))) < t.overlap)
    taken: list[int] = []
    for p in np.flatnonzero(unexplained)[np.argsort(-scores[unexplained], kind="stable")]:
        if taken and box_iou(boxes[[p]], boxes[taken]).max() >= t.iou_threshold:
            continue  # another confident box of the same unlabelled object
        taken.append(int(p))
        pred_name = class_map.name(int(labels[p]))
        problems.append(Problem(record.image_id, _box(boxes[p]), "missing",
                                float(scores[p]) * precision.get(pred_name, 1.0), None, pred_name, 0.0,
                                _box(boxes[p]), None, int(p)))
    return problems


def rank_problems(records: Sequence[ImageRecord], predictions: Sequence[Mapping[str, Any]], class_map: ClassMap,
                  thresholds: ReviewThresholds | None = None) -> list[Problem]:
    """Every suspected problem of every record (one prediction dict per record, in order; model
    label indices), most suspicious first (ties: image id, then kind). Problems scored 0 are left
    out: they carry no evidence (a class the model never gets right says nothing about a box)."""
    if len(predictions) != len(records):
        raise ValueError(f"{len(predictions)} predictions for {len(records)} records; "
                         "there must be exactly one prediction dict per record, in order")
    thresholds = thresholds or ReviewThresholds()
    precision, recall = class_rates(records, predictions, class_map, thresholds)
    problems = [problem for record, prediction in zip(records, predictions)
                for problem in image_problems(record, prediction, class_map, thresholds, precision, recall)]
    for problem in problems:
        problem.score = round(min(max(problem.score, 0.0), 1.0), 6)
        problem.iou = round(problem.iou, 6)
    problems = [p for p in problems if p.score > 0]  # e.g. a class the model never finds: no evidence
    problems.sort(key=lambda p: (-p.score, p.image_id, KINDS.index(p.kind), p.gt_index or 0, p.pred_index or 0))
    return problems
