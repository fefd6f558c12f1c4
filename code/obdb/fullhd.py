"""``full_hd: 1``: frames larger than full HD are used as their bottom-centre 1920×1080 region.

The original system filmed weeds with the camera tilted down: what matters is the lower middle of
a 4K frame, and training at full-HD keeps memory and time in check. It cropped the frames and
clipped the boxes; this module keeps that behaviour in one place:

* :func:`crop_rect` — the crop of a frame size (``None`` when the frame is not larger);
* :func:`crop_record` / :func:`apply_full_hd` — a record's boxes moved into the crop, clipped, and
  dropped (counted) when less than 1 px is left; the record's size becomes the crop's and
  ``meta["crop"] = [x0, y0, x1, y1]`` (frame pixels) says where it lies, so every stage that decodes
  the image (training, image cache, split features, lint, evaluation) crops it after decoding
  with :func:`crop_tensor` / :func:`crop_image` — one line each;
* :func:`to_frame` — boxes predicted on a crop mapped back to frame pixels (auto_annotate uploads
  frame coordinates to CVAT).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

FULL_HD = (1920, 1080)
MIN_BOX_SIZE = 1.0  # px left after clipping, as the sources require
Rect = tuple[int, int, int, int]


def crop_rect(width: int, height: int, size: tuple[int, int] = FULL_HD) -> Rect | None:
    """``(x0, y0, x1, y1)`` of the bottom-centre ``size`` region of a ``width``×``height`` frame
    larger than ``size`` in either direction, else None (smaller sides are kept whole)."""
    target_w, target_h = size
    if width <= target_w and height <= target_h:
        return None
    crop_w, crop_h = min(width, target_w), min(height, target_h)
    x0 = (width - crop_w) // 2
    y0 = height - crop_h
    return x0, y0, x0 + crop_w, y0 + crop_h


def record_crop(record: Any) -> Rect | None:
    """The crop a record carries (``meta["crop"]``), if any."""
    crop = getattr(record, "meta", {}).get("crop")
    return tuple(int(v) for v in crop) if crop else None  # type: ignore[return-value]


def clip_boxes(boxes: np.ndarray, rect: Rect) -> tuple[np.ndarray, np.ndarray]:
    """Frame-pixel boxes → crop-pixel boxes clipped to the crop, and the mask of boxes kept
    (at least ``MIN_BOX_SIZE`` wide and high after clipping)."""
    x0, y0, x1, y1 = rect
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    moved = boxes - np.asarray([x0, y0, x0, y0], dtype=np.float32)
    moved[:, [0, 2]] = moved[:, [0, 2]].clip(0, x1 - x0)
    moved[:, [1, 3]] = moved[:, [1, 3]].clip(0, y1 - y0)
    keep = ((moved[:, 2] - moved[:, 0]) >= MIN_BOX_SIZE) & ((moved[:, 3] - moved[:, 1]) >= MIN_BOX_SIZE)
    return moved[keep], keep


def crop_record(record: Any) -> int:
    """Crop one record in place (see the module docstring); return the boxes dropped. A record
    already cropped, or not larger than full HD, is left as it is."""
    if record_crop(record) is not None:
        return 0
    rect = crop_rect(record.width, record.height)
    if rect is None:
        return 0
    boxes, keep = clip_boxes(record.boxes, rect)
    for key, value in list(record.meta.items()):  # per-box lists (occluded, difficult, …) follow the boxes
        if isinstance(value, list) and len(value) == len(keep):
            record.meta[key] = [v for v, k in zip(value, keep) if k]
    record.labels = [label for label, k in zip(record.labels, keep) if k]
    record.boxes = boxes
    record.meta["frame_size"] = [record.width, record.height]
    record.meta["crop"] = list(rect)
    record.width, record.height = rect[2] - rect[0], rect[3] - rect[1]
    return int((~keep).sum())


@dataclass
class FullHdSummary:
    cropped: int = 0
    dropped_boxes: int = 0
    examples: list[str] = field(default_factory=list)


def apply_full_hd(records: Sequence[Any]) -> FullHdSummary:
    """Crop every record larger than full HD; log how many and how many boxes fell outside."""
    summary = FullHdSummary()
    for record in records:
        if record_crop(record) is not None:
            continue
        before = (record.width, record.height)
        dropped = crop_record(record)
        if record_crop(record) is not None:
            summary.cropped += 1
            summary.dropped_boxes += dropped
            if dropped and len(summary.examples) < 5:
                summary.examples.append(f"{record.image_id} ({before[0]}x{before[1]}): {dropped}")
    if summary.cropped:
        log.info("full_hd: %d frame(s) larger than %dx%d cropped to their bottom-centre region", summary.cropped,
                 *FULL_HD)
    if summary.dropped_boxes:
        log.warning("full_hd: dropped %d box(es) outside the full-HD crop, e.g. %s", summary.dropped_boxes,
                    "; ".join(summary.examples))
    return summary


def size_after_crop(record: Any, width: int, height: int) -> tuple[int, int]:
    """``(width, height)`` a decoded ``width``×``height`` file has once the record's crop is applied."""
    rect = record_crop(record)
    return (width, height) if rect is None else (rect[2] - rect[0], rect[3] - rect[1])


def shape_after_crop(record: Any, height: int, width: int) -> tuple[int, int]:
    """:func:`size_after_crop` as ``(height, width)``, the order tensors and decoders use."""
    new_width, new_height = size_after_crop(record, width, height)
    return new_height, new_width


def crop_tensor(image: Any, record: Any) -> Any:
    """A decoded ``C×H×W`` tensor (or ``H×W×C`` array with ``channels_last``) cut to the record's crop."""
    rect = record_crop(record)
    if rect is None:
        return image
    x0, y0, x1, y1 = rect
    return image[..., y0:y1, x0:x1]


def crop_image(image: Any, record: Any) -> Any:
    """A PIL image cut to the record's crop."""
    rect = record_crop(record)
    return image if rect is None else image.crop(rect)


def crop_frame(image: Any) -> tuple[Any, tuple[int, int]]:
    """auto_annotate: a PIL frame cut to full HD when larger, and the ``(x0, y0)`` offset that
    :func:`to_frame` adds back."""
    rect = crop_rect(*image.size)
    if rect is None:
        return image, (0, 0)
    return image.crop(rect), (rect[0], rect[1])


def to_frame(boxes: np.ndarray, offset: tuple[int, int]) -> np.ndarray:
    """Boxes in crop pixels → frame pixels."""
    x0, y0 = offset
    return np.asarray(boxes, dtype=np.float32).reshape(-1, 4) + np.asarray([x0, y0, x0, y0], dtype=np.float32)


def rows_to_frame(rows: Sequence[dict[str, Any]], records: Sequence[Any]) -> None:
    """Evaluation's per-box rows (``pred_x1`` … ``gt_y2``, by ``image_id``) from crop pixels to frame
    pixels, in place, so reports and stored results line up with the frames in CVAT."""
    offsets = {r.image_id: record_crop(r)[:2] for r in records if record_crop(r) is not None}  # type: ignore[index]
    for row in rows:
        offset = offsets.get(row.get("image_id"))
        if offset is None:
            continue
        for prefix in ("pred_", "gt_"):
            for axis, shift in (("x", offset[0]), ("y", offset[1])):
                for end in ("1", "2"):
                    key = f"{prefix}{axis}{end}"
                    if isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool):
                        row[key] = row[key] + shift


def cache_key(content_key: str, record: Any) -> str:
    """A feature/image cache key that tells a cropped frame from the whole one."""
    rect = record_crop(record)
    return content_key if rect is None else f"{content_key}-crop{'_'.join(map(str, rect))}"
