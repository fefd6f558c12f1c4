"""Missing-annotation candidates: confident predictions that overlap no ground-truth box.

A prediction with score >= ``min_score`` whose IoU with *every* ground-truth box of its frame is
below ``max_iou`` is something the model sees and the annotators did not mark: either a missed
object or a model error, which is what the review attribute lets a person decide. The IoU is
computed against ground truth of any label, so a box with the wrong label is not proposed again
as a "missing" object (a label fix is a different review).
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np

from .function import Detections


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix (len(a) × len(b)) of xyxy boxes; empty or degenerate boxes give 0, not NaN."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def shape_box(shape: dict[str, Any]) -> tuple[float, float, float, float] | None:
    """Axis-aligned box of a CVAT shape dict (rectangle, polygon, polyline, points, ellipse);
    ``None`` for shapes without plain coordinates (masks, skeletons, cuboids)."""
    kind = shape.get("type")
    points = [float(v) for v in shape.get("points") or []]
    if kind == "rectangle" and len(points) == 4:
        x1, y1, x2, y2 = points
        return min(x1, x2), min(y1, y2), max(x1, x2), max(y1, y2)
    if kind == "ellipse" and len(points) == 4:  # centre, then a corner of the bounding box
        cx, cy, rx, ry = points
        dx, dy = abs(rx - cx), abs(ry - cy)
        return cx - dx, cy - dy, cx + dx, cy + dy
    if kind in ("polygon", "polyline", "points") and len(points) >= 2:
        xs, ys = points[0::2], points[1::2]
        return min(xs), min(ys), max(xs), max(ys)
    return None


def frame_boxes(shapes: Iterable[dict[str, Any]]) -> dict[int, np.ndarray]:
    """Ground-truth boxes per frame from shape dicts (shapes without a box are left out)."""
    per_frame: dict[int, list[tuple[float, float, float, float]]] = {}
    for shape in shapes:
        box = shape_box(shape)
        if box is not None:
            per_frame.setdefault(int(shape["frame"]), []).append(box)
    return {frame: np.array(boxes, dtype=np.float64) for frame, boxes in per_frame.items()}


def missing_candidates(detections: Detections, gt_boxes: np.ndarray, *, min_score: float,
                       max_iou: float) -> Detections:
    """The detections with ``score >= min_score`` and IoU < ``max_iou`` with every GT box."""
    confident = detections.above(min_score)
    if not len(confident) or not len(gt_boxes):
        return confident
    best = box_iou(confident.boxes, gt_boxes).max(axis=1)
    keep = np.flatnonzero(best < max_iou)
    return Detections(confident.boxes[keep], confident.scores[keep], [confident.labels[i] for i in keep])
