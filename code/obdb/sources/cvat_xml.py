"""CVAT for images 1.1 XML: reader (task/job exports) and a minimal writer (used by the demo).

Reference layout::

    <annotations>
      <version>1.1</version>
      <meta><task><name>my task</name>...<labels><label><name>Tree</name>...</label></labels></task></meta>
      <image id="0" name="frame_000000.png" width="1920" height="1080">
        <box label="Tree" occluded="0" xtl="1" ytl="2" xbr="30" ybr="40" rotation="0"/>
        <polygon label="Tree" points="1,2;30,2;30,40"/>
      </image>
    </annotations>

Boxes are taken as they are (a ``rotation`` is turned into the enclosing axis-aligned box),
polygons and ellipses become their bounding box, other shapes (polylines, points, masks, cuboids,
skeletons) are counted as ignored. ``<tag>`` elements are image-level labels, not shapes, and are
skipped silently.
"""
from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from obdb.fileio import write_text
from obdb.sources.base import SourceError
from obdb.sources.formats import (
    ParsedBox,
    ParsedFile,
    ParsedImage,
    bbox_of_points,
    rotated_rect_bbox,
    to_float,
    to_int_or_none,
)

_NOT_SHAPES = {"tag", "attribute"}


def _task_name(root: ET.Element) -> str | None:
    """Task name from ``<meta>``: a task export has ``meta/task/name``; job exports have
    ``meta/job`` (with a ``name`` or a nested ``task/name`` in some CVAT versions)."""
    meta = root.find("meta")
    if meta is None:
        return None
    for xpath in ("task/name", "job/name", "job/task/name", "job/task_name"):
        node = meta.find(xpath)
        if node is not None and node.text and node.text.strip():
            return node.text.strip()
    return None


def _meta_labels(root: ET.Element) -> list[str]:
    names = []
    for node in root.iterfind("meta/*/labels/label/name"):
        if node.text and node.text.strip():
            names.append(node.text.strip())
    return names


def _parse_points(text: str | None, path: Path, where: str) -> list[tuple[float, float]]:
    if not text or not text.strip():
        raise SourceError(f"{path}: {where}: polygon has no points")
    points = []
    for pair in text.strip().split(";"):
        parts = pair.split(",")
        if len(parts) != 2:
            raise SourceError(f"{path}: {where}: bad polygon point {pair!r} (expected 'x,y')")
        points.append((to_float(parts[0], "x", path, where), to_float(parts[1], "y", path, where)))
    return points


def _shape_box(shape: ET.Element, path: Path, where: str) -> tuple[float, float, float, float] | None:
    """Box of one shape element, or None when the shape kind cannot become a box."""
    a = shape.attrib
    if shape.tag == "box":
        x1, y1, x2, y2 = (to_float(a.get(k), k, path, where) for k in ("xtl", "ytl", "xbr", "ybr"))
        rotation = to_float(a.get("rotation", 0), "rotation", path, where)
        return rotated_rect_bbox(x1, y1, x2, y2, rotation)
    if shape.tag == "polygon":
        return bbox_of_points(_parse_points(a.get("points"), path, where))
    if shape.tag == "ellipse":
        cx, cy, rx, ry = (to_float(a.get(k), k, path, where) for k in ("cx", "cy", "rx", "ry"))
        rad = math.radians(to_float(a.get("rotation", 0), "rotation", path, where))
        ex = math.hypot(rx * math.cos(rad), ry * math.sin(rad))
        ey = math.hypot(rx * math.sin(rad), ry * math.cos(rad))
        return cx - ex, cy - ey, cx + ex, cy + ey
    return None


def parse_cvat(path: Path, root: ET.Element) -> ParsedFile:
    """Parse a CVAT for images 1.1 export (root ``<annotations>``)."""
    if root.find("track") is not None:
        raise SourceError(f"{path}: this is a 'CVAT for video' export (<track> elements); "
                          f"export the task as 'CVAT for images 1.1' instead")
    task = _task_name(root) or path.stem
    ignored: Counter[str] = Counter()
    images: list[ParsedImage] = []
    for image in root.iterfind("image"):
        name = image.get("name")
        if not name:
            raise SourceError(f"{path}: <image id={image.get('id')!r}> has no name attribute")
        where = f"image {name!r}"
        parsed = ParsedImage(name=name, frame=to_int_or_none(image.get("id")),
                             width=to_int_or_none(image.get("width")),
                             height=to_int_or_none(image.get("height")))
        for shape in image:
            if shape.tag in _NOT_SHAPES:
                continue
            box = _shape_box(shape, path, where)
            if box is None:
                ignored[shape.tag] += 1
                continue
            label = shape.get("label")
            if not label:
                raise SourceError(f"{path}: {where}: <{shape.tag}> has no label")
            parsed.boxes.append(ParsedBox(*box, label=label, occluded=shape.get("occluded") == "1"))
        images.append(parsed)
    return ParsedFile(path=path, format="cvat", task=task, images=images, ignored=ignored,
                      labels=_meta_labels(root))


@dataclass
class CvatBox:
    """A box to write: pixel ``x1, y1, x2, y2`` and its label."""

    label: str
    x1: float
    y1: float
    x2: float
    y2: float


@dataclass
class CvatImage:
    """An image to write; ``frame`` becomes the CVAT image id."""

    frame: int
    name: str
    width: int
    height: int
    boxes: Sequence[CvatBox]


def cvat_xml_text(task: str, labels: Sequence[str], images: Sequence[CvatImage]) -> str:
    """Render a CVAT for images 1.1 document that CVAT itself and :func:`parse_cvat` accept."""
    root = ET.Element("annotations")
    ET.SubElement(root, "version").text = "1.1"
    meta = ET.SubElement(root, "meta")
    task_el = ET.SubElement(meta, "task")
    ET.SubElement(task_el, "id").text = "0"
    ET.SubElement(task_el, "name").text = task
    ET.SubElement(task_el, "size").text = str(len(images))
    ET.SubElement(task_el, "mode").text = "annotation"
    labels_el = ET.SubElement(task_el, "labels")
    for label in labels:
        label_el = ET.SubElement(labels_el, "label")
        ET.SubElement(label_el, "name").text = label
        ET.SubElement(label_el, "type").text = "rectangle"
        ET.SubElement(label_el, "attributes")
    for image in images:
        image_el = ET.SubElement(root, "image", id=str(image.frame), name=image.name,
                                 width=str(image.width), height=str(image.height))
        for box in image.boxes:
            ET.SubElement(image_el, "box", label=box.label, source="manual", occluded="0",
                          xtl=f"{box.x1:.2f}", ytl=f"{box.y1:.2f}", xbr=f"{box.x2:.2f}",
                          ybr=f"{box.y2:.2f}", z_order="0")
    ET.indent(root, space="  ")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def write_cvat_xml(path: Path, task: str, labels: Sequence[str], images: Sequence[CvatImage]) -> Path:
    """Atomically write a CVAT for images 1.1 file."""
    return write_text(path, cvat_xml_text(task, labels, images))
