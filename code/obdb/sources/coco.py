"""COCO detection JSON (``images`` / ``annotations`` / ``categories``; ``bbox`` is ``x, y, w, h``).

Crowd regions (``iscrowd: 1``) are not object instances, so they are left out (and counted as
ignored) rather than trained on as ordinary boxes. An annotation without a ``bbox`` but with a
polygon ``segmentation`` gets the polygon's bounding box.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from obdb.sources.base import SourceError
from obdb.sources.formats import ParsedBox, ParsedFile, ParsedImage, bbox_of_points, to_float, to_int_or_none


def _segmentation_bbox(seg: Any) -> tuple[float, float, float, float] | None:
    """Bounding box of COCO polygon segmentation(s); None for RLE masks or nothing usable."""
    if not isinstance(seg, list) or not seg:
        return None
    polygons = seg if isinstance(seg[0], list) else [seg]
    points: list[tuple[float, float]] = []
    for poly in polygons:
        if not isinstance(poly, list):
            return None
        points.extend((float(poly[i]), float(poly[i + 1])) for i in range(0, len(poly) - 1, 2))
    return bbox_of_points(points) if points else None


def parse_coco(path: Path, data: dict[str, Any]) -> ParsedFile:
    """Parse a COCO dict already loaded from ``path``; the task name is the file stem."""
    if not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise SourceError(f"{path}: COCO 'images' and 'annotations' must be lists")
    categories: dict[Any, str] = {}
    for cat in data.get("categories") or []:
        if not isinstance(cat, dict) or "id" not in cat or not cat.get("name"):
            raise SourceError(f"{path}: COCO category without id or name: {cat!r}")
        categories[cat["id"]] = str(cat["name"])

    images: dict[Any, ParsedImage] = {}
    for entry in data["images"]:
        if not isinstance(entry, dict) or "id" not in entry or not entry.get("file_name"):
            raise SourceError(f"{path}: COCO image without id or file_name: {entry!r}")
        if entry["id"] in images:
            raise SourceError(f"{path}: COCO image id {entry['id']!r} appears twice")
        images[entry["id"]] = ParsedImage(name=str(entry["file_name"]), frame=to_int_or_none(entry["id"]),
                                          width=to_int_or_none(entry.get("width")),
                                          height=to_int_or_none(entry.get("height")))

    ignored: Counter[str] = Counter()
    for ann in data["annotations"]:
        if not isinstance(ann, dict):
            raise SourceError(f"{path}: COCO annotation is not an object: {ann!r}")
        where = f"annotation id {ann.get('id')!r}"
        image = images.get(ann.get("image_id"))
        if image is None:
            raise SourceError(f"{path}: {where} refers to unknown image_id {ann.get('image_id')!r}")
        label = categories.get(ann.get("category_id"))
        if label is None:
            raise SourceError(f"{path}: {where} refers to unknown category_id {ann.get('category_id')!r}")
        if ann.get("iscrowd"):
            ignored["crowd"] += 1
            continue
        bbox = ann.get("bbox")
        if isinstance(bbox, (list, tuple)) and len(bbox) == 4:
            x, y, w, h = (to_float(v, "bbox value", path, where) for v in bbox)
            box = (x, y, x + w, y + h)
        else:
            try:
                seg_box = _segmentation_bbox(ann.get("segmentation"))
            except (TypeError, ValueError):
                raise SourceError(f"{path}: {where}: malformed segmentation") from None
            if seg_box is None:
                ignored["no_bbox"] += 1
                continue
            box = seg_box
        image.boxes.append(ParsedBox(*box, label=label))
    return ParsedFile(path=path, format="coco", task=path.stem, images=list(images.values()),
                      ignored=ignored, labels=list(dict.fromkeys(categories.values())))
