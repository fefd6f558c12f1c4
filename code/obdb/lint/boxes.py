"""Box rules: degenerate boxes, boxes outside the image, duplicate boxes.

Checked in this order for each image, against the image's real size (corrected by the image
rules), because each step changes what the next one sees:

1. **degenerate**: non-finite coordinates, zero or negative width/height (``x2 <= x1``); dropped.
2. **outside**: a box entirely outside the image is dropped; one that reaches out is clipped to
   the image (``fix_out_of_bounds: "clip"``) or dropped (``"drop"``). Overhangs below
   :data:`EDGE_TOLERANCE` px are float noise from export tools and are clipped without a report.
3. **too small**: after clipping, narrower or lower than ``min_box_size``; dropped (reported as
   degenerate): a sliver at the image edge carries no signal and upsets some box losses.
4. **duplicate**: same label and IoU >= ``duplicate_box_iou`` with an earlier kept box (a shape
   drawn twice, or merged exports); the earlier one is kept. Double boxes teach the detector to
   predict two boxes per object and count as a false negative at evaluation.

Box numbers in issues are positions in the image's box list as lint received it.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..records import ImageRecord
from ..settings.schema import LintSettings
from .base import CLIPPED_BOX, DROPPED_BOX, WARN, Issue, box_text, issue_for, with_boxes

EDGE_TOLERANCE = 1e-3  # px


def iou_matrix(boxes: np.ndarray) -> np.ndarray:
    """Pairwise IoU of (N, 4) xyxy boxes."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    area = (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)
    w = (np.minimum(b[:, None, 2], b[None, :, 2]) - np.maximum(b[:, None, 0], b[None, :, 0])).clip(0)
    h = (np.minimum(b[:, None, 3], b[None, :, 3]) - np.maximum(b[:, None, 1], b[None, :, 1])).clip(0)
    inter = w * h
    union = area[:, None] + area[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


def _coords(box: Sequence[float]) -> list[float | str]:
    """JSON-safe coordinates (NaN/inf as text, which strict JSON readers accept)."""
    return [round(float(v), 3) if math.isfinite(v) else str(v) for v in box]


def check_boxes(records: Sequence[ImageRecord], settings: LintSettings) -> tuple[list[ImageRecord], list[Issue]]:
    """Every record, with its boxes fixed or dropped as the module docstring says."""
    out: list[ImageRecord] = []
    issues: list[Issue] = []
    for record in records:
        fixed, found = _check_record(record, settings)
        out.append(fixed)
        issues.extend(found)
    return out, issues


def _check_record(record: ImageRecord, settings: LintSettings) -> tuple[ImageRecord, list[Issue]]:
    issues: list[Issue] = []
    width, height = float(record.width), float(record.height)
    keep: list[int] = []
    boxes: list[tuple[float, float, float, float]] = []
    for index, raw in enumerate(record.boxes.tolist()):
        x1, y1, x2, y2 = raw
        label = record.labels[index]

        def report(rule: str, action: str, message: str, **extra: object) -> None:
            issues.append(issue_for(record, rule, WARN, action, message, box=index, label=label, coords=_coords(raw),
                                    **extra))

        if not all(math.isfinite(v) for v in raw):
            report("degenerate_box", DROPPED_BOX, f"{label} box {box_text(raw)} has non-finite coordinates")
            continue
        if x2 - x1 <= 0 or y2 - y1 <= 0:
            report("degenerate_box", DROPPED_BOX, f"{label} box {box_text(raw)} has zero or negative width/height")
            continue
        if x2 <= 0 or y2 <= 0 or x1 >= width or y1 >= height:
            report("box_outside", DROPPED_BOX, f"{label} box {box_text(raw)} lies outside the "
                   f"{record.width}x{record.height} image")
            continue
        clipped = (max(x1, 0.0), max(y1, 0.0), min(x2, width), min(y2, height))
        overhang = max(abs(a - b) for a, b in zip(clipped, raw))
        if overhang > EDGE_TOLERANCE:
            if settings.fix_out_of_bounds == "drop":
                report("box_partly_outside", DROPPED_BOX, f"{label} box {box_text(raw)} reaches outside the "
                       f"{record.width}x{record.height} image")
                continue
            report("box_partly_outside", CLIPPED_BOX, f"{label} box {box_text(raw)} clipped to {box_text(clipped)}",
                   clipped=_coords(clipped))
        x1, y1, x2, y2 = clipped
        if x2 - x1 < settings.min_box_size or y2 - y1 < settings.min_box_size:
            report("degenerate_box", DROPPED_BOX, f"{label} box {box_text(clipped)} is {x2 - x1:.1f}x{y2 - y1:.1f} px, "
                   f"below min_box_size {settings.min_box_size:g}")
            continue
        keep.append(index)
        boxes.append(clipped)
    keep, boxes = _drop_duplicates(record, keep, boxes, settings.duplicate_box_iou, issues)
    fixed = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    if len(keep) == len(record.labels) and np.array_equal(fixed, record.boxes):
        return record, issues
    return with_boxes(record, keep, fixed), issues


def _drop_duplicates(record: ImageRecord, keep: list[int], boxes: list[tuple[float, float, float, float]],
                     threshold: float,
                     issues: list[Issue]) -> tuple[list[int], list[tuple[float, float, float, float]]]:
    """Greedy in box order: a box is dropped when it matches an earlier *kept* box of its label."""
    if len(keep) < 2:
        return keep, boxes
    iou = iou_matrix(np.asarray(boxes))
    labels = [record.labels[i] for i in keep]
    survivors: list[int] = []  # positions in keep/boxes
    for pos in range(len(keep)):
        match = next((s for s in survivors if labels[s] == labels[pos] and iou[s, pos] >= threshold), None)
        if match is None:
            survivors.append(pos)
            continue
        issues.append(issue_for(record, "duplicate_box", WARN, DROPPED_BOX,
                                f"{labels[pos]} box {box_text(boxes[pos])} repeats box {keep[match]} "
                                f"(IoU {iou[match, pos]:.3f})", box=keep[pos], label=labels[pos],
                                coords=_coords(boxes[pos]), duplicate_of=keep[match],
                                iou=round(float(iou[match, pos]), 4)))
    return [keep[s] for s in survivors], [boxes[s] for s in survivors]
