"""COCO detection JSON (``images`` / ``annotations`` / ``categories``; ``bbox`` is ``x, y, w, h``).

An annotation becomes a rectangle shape from its ``bbox``, or, without one, a polygon shape from
its polygon ``segmentation`` (its bounding box, as for any polygon). Crowd regions (``iscrowd: 1``)
are not object instances and RLE-only annotations have no box: they become shapes of kind
``crowd`` / ``no_bbox``, which the driver skips with a count (so their frame is no empty negative).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from obdb.sources.contract import Frame, Shape, SourceError, Task, to_float, to_int_or_none


def _segmentation_points(seg: Any) -> list[float] | None:
    """All points of COCO polygon segmentation(s) as one flat list; None for RLE masks or nothing usable."""
    if not isinstance(seg, list) or not seg:
        return None
    polygons = seg if isinstance(seg[0], list) else [seg]
    points: list[float] = []
    for poly in polygons:
        if not isinstance(poly, list):
            return None
        points.extend(float(v) for v in poly[:len(poly) - len(poly) % 2])
    return points or None


def parse_coco(path: Path, data: dict[str, Any], images_dir: Path) -> Task:
    """Parse a COCO dict already loaded from ``path``; the task name is the file stem."""
    if not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise SourceError(f"{path}: COCO 'images' and 'annotations' must be lists")
    categories: dict[Any, str] = {}
    for cat in data.get("categories") or []:
        if not isinstance(cat, dict) or "id" not in cat or not cat.get("name"):
            raise SourceError(f"{path}: COCO category without id or name: {cat!r}")
        categories[cat["id"]] = str(cat["name"])

    frames: dict[Any, Frame] = {}
    for entry in data["images"]:
        if not isinstance(entry, dict) or "id" not in entry or not entry.get("file_name"):
            raise SourceError(f"{path}: COCO image without id or file_name: {entry!r}")
        if entry["id"] in frames:
            raise SourceError(f"{path}: COCO image id {entry['id']!r} appears twice")
        frames[entry["id"]] = Frame(name=str(entry["file_name"]), frame=to_int_or_none(entry["id"]),
                                    width=to_int_or_none(entry.get("width")),
                                    height=to_int_or_none(entry.get("height")))

    for ann in data["annotations"]:
        if not isinstance(ann, dict):
            raise SourceError(f"{path}: COCO annotation is not an object: {ann!r}")
        where = f"annotation id {ann.get('id')!r}"
        frame = frames.get(ann.get("image_id"))
        if frame is None:
            raise SourceError(f"{path}: {where} refers to unknown image_id {ann.get('image_id')!r}")
        label = categories.get(ann.get("category_id"))
        if label is None:
            raise SourceError(f"{path}: {where} refers to unknown category_id {ann.get('category_id')!r}")
        bbox = ann.get("bbox")
        if ann.get("iscrowd"):
            kind, points = "crowd", []
        elif isinstance(bbox, (list, tuple)) and len(bbox) == 4:
            x, y, w, h = (to_float(v, "bbox value", path, where) for v in bbox)
            kind, points = "rectangle", [x, y, x + w, y + h]
        else:
            try:
                outline = _segmentation_points(ann.get("segmentation"))
            except (TypeError, ValueError) as err:
                raise SourceError(f"{path}: {where}: malformed segmentation") from err
            kind, points = ("polygon", outline) if outline else ("no_bbox", [])
        frame.shapes.append(Shape(kind=kind, points=points, label=label, ref=where))
    return Task(name=path.stem, frames=list(frames.values()), root=images_dir, origin=str(path), format="coco",
                labels=list(dict.fromkeys(categories.values())))
