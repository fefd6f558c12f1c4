"""What every lint rule shares: the issue record, severities, rule names and one box-dropping helper.

An :class:`Issue` is one finding about one image (or one box of it): which rule, how bad, what
lint did about it, and enough detail (file path, box, other image) to find and fix it at the
source. Rules never log per item; the report lists the items and the run logs a short summary.
"""
from __future__ import annotations

from obdb.errors import UserError
from dataclasses import dataclass, field, replace
from typing import Any, Sequence

import numpy as np

from ..records import ImageRecord

ERROR, WARN, INFO = "error", "warn", "info"
SEVERITY_RANK = {INFO: 0, WARN: 1, ERROR: 2}

# what lint did about an issue
DROPPED_IMAGE, DROPPED_BOX, CLIPPED_BOX, CORRECTED, KEPT = (
    "dropped image", "dropped box", "clipped box", "corrected", "kept")

#: rule name -> what it means (the report lists every rule, with zero counts too, so a reader
#: sees what was checked and not only what was found)
RULES: dict[str, str] = {
    "source_skipped": "left out while loading: missing, empty or unreadable file",
    "outside_root": "the image path leads outside the data root ('..', absolute, a symlink out): never opened",
    "unreadable": "the file cannot be read or opened as an image",
    "truncated": "the pixel data does not decode: truncated or corrupt file",
    "unconvertible": "the pixel mode has no 8-bit RGB form (training could not use it)",
    "pixel_mode": "not 8-bit RGB/grey (16-bit, alpha, palette, CMYK...): converted as CVAT shows it",
    "too_small": "width or height below lint.min_image_size",
    "too_large": "width or height above lint.max_image_size",
    "size_mismatch": "the record's width/height differ from the file's (the file's are used)",
    "extension_mismatch": "the file extension names another format than the content (the content is used)",
    "exact_duplicate": "same file content as an earlier image (the first copy is kept)",
    "near_duplicate": "perceptual hash within lint.near_duplicate_hamming bits of an earlier image",
    "unknown_label": "box label is not in the class map",
    "degenerate_box": "box with zero/negative/non-finite size or below lint.min_box_size",
    "box_partly_outside": "box reaches outside the image",
    "box_outside": "box lies entirely outside the image",
    "duplicate_box": "same label and IoU >= lint.duplicate_box_iou with an earlier box",
}


class LintError(UserError, ValueError):
    """Nothing usable is left after the checks (the message says which rules removed the images)."""


@dataclass
class Issue:
    """One finding. ``box`` is the box index in the record as the source delivered it."""

    rule: str
    severity: str
    action: str
    image_id: str
    path: str
    message: str
    box: int | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"rule": self.rule, "severity": self.severity, "action": self.action,
                               "image_id": self.image_id, "path": self.path, "message": self.message}
        if self.box is not None:
            out["box"] = self.box
        if self.details:
            out["details"] = self.details
        return out


def issue_for(record: ImageRecord, rule: str, severity: str, action: str, message: str, *,
              box: int | None = None, **details: Any) -> Issue:
    if rule not in RULES:
        raise KeyError(f"unknown lint rule {rule!r}")
    return Issue(rule, severity, action, record.image_id, str(record.path), message, box, dict(details))


def at_least(issues: Sequence[Issue], severity: str) -> list[Issue]:
    """Issues of ``severity`` or worse."""
    floor = SEVERITY_RANK[severity]
    return [i for i in issues if SEVERITY_RANK[i.severity] >= floor]


def with_boxes(record: ImageRecord, keep: Sequence[int], boxes: np.ndarray | None = None) -> ImageRecord:
    """A copy of ``record`` with only the boxes at ``keep`` (optionally replaced by ``boxes``).

    Per-box lists in ``meta`` (same length as the boxes, e.g. the local source's ``occluded``) are
    filtered alike so they stay aligned; the input record is not changed."""
    keep = list(keep)
    n = len(record.labels)
    meta = {k: ([v[i] for i in keep] if isinstance(v, list) and len(v) == n else v) for k, v in record.meta.items()}
    new_boxes = record.boxes[keep] if boxes is None else np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return replace(record, boxes=new_boxes, labels=[record.labels[i] for i in keep], meta=meta)


def box_text(box: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(v):.1f}" for v in box) + "]"
