"""CVAT for images 1.1 XML read with full fidelity, to upload it again as a CVAT task.

:mod:`obdb.sources.cvat_xml` reduces every shape to a box because training needs boxes. Uploading
a file back to CVAT must lose nothing people drew: polygons, polylines, points, ellipses,
rotation, occlusion, z order, group, source and attribute values, plus the labels' attribute
specs from ``<meta>``. Masks, cuboids, skeletons and image tags are counted and reported instead
(they are rare in our data and have their own encodings).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..sources.contract import SourceError
from ..sources.cvat_xml import read_cvat

UPLOAD_KINDS = ("rectangle", "polygon", "polyline", "points", "ellipse")
INPUT_TYPES = {"select", "radio", "checkbox", "number", "text"}


@dataclass
class AttributeSpec:
    name: str
    input_type: str = "text"
    mutable: bool = False
    default_value: str = ""
    values: list[str] = field(default_factory=list)

    def to_request(self) -> dict[str, Any]:
        values = self.values or ([""] if self.input_type == "text" else [])
        return {"name": self.name, "input_type": self.input_type, "mutable": self.mutable,
                "default_value": self.default_value, "values": values}


@dataclass
class LabelSpec:
    name: str
    type: str = "any"
    attributes: list[AttributeSpec] = field(default_factory=list)

    def to_request(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "attributes": [a.to_request() for a in self.attributes]}


@dataclass
class XmlShape:
    """One shape as drawn; ``points`` in CVAT's flat JSON form (rectangles: x1, y1, x2, y2;
    ellipses: cx, cy, cx + rx, cy - ry, as CVAT stores them)."""

    type: str
    label: str
    points: list[float]
    occluded: bool = False
    z_order: int = 0
    rotation: float = 0.0
    source: str = "manual"
    group: int = 0
    attributes: dict[str, str] = field(default_factory=dict)


@dataclass
class XmlImage:
    frame: int
    name: str
    width: int | None
    height: int | None
    shapes: list[XmlShape] = field(default_factory=list)


@dataclass
class XmlTask:
    path: Path
    name: str
    labels: list[LabelSpec]
    images: list[XmlImage]
    ignored: Counter[str] = field(default_factory=Counter)

    @property
    def num_shapes(self) -> int:
        return sum(len(image.shapes) for image in self.images)


def _meta_labels(root: ET.Element, path: Path) -> list[LabelSpec]:
    labels = []
    for node in root.iterfind("meta/*/labels/label"):
        name = (node.findtext("name") or "").strip()
        if not name:
            continue
        label = LabelSpec(name=name, type=(node.findtext("type") or "any").strip() or "any")
        for attr in node.iterfind("attributes/attribute"):
            attr_name = (attr.findtext("name") or "").strip()
            input_type = (attr.findtext("input_type") or "text").strip()
            if input_type not in INPUT_TYPES:
                raise SourceError(f"{path}: label {name!r}: attribute {attr_name!r} has unknown input_type "
                                  f"{input_type!r} (known: {', '.join(sorted(INPUT_TYPES))})")
            values = [v for v in (attr.findtext("values") or "").split("\n")]
            values = [v for v in values if v != ""] if input_type != "text" else values
            label.attributes.append(AttributeSpec(
                name=attr_name, input_type=input_type,
                mutable=(attr.findtext("mutable") or "").strip().lower() == "true",
                default_value=attr.findtext("default_value") or "", values=values))
        labels.append(label)
    return labels


def _complete_labels(labels: list[LabelSpec], images: list[XmlImage]) -> list[LabelSpec]:
    """Labels and attributes used by shapes but missing from ``<meta>`` are added (text
    attributes), and a label whose shapes are of several kinds gets type ``any``, so CVAT
    accepts every shape of the file."""
    by_name = {label.name: label for label in labels}
    kinds: dict[str, set[str]] = {}
    for image in images:
        for shape in image.shapes:
            label = by_name.get(shape.label)
            if label is None:
                label = by_name[shape.label] = LabelSpec(shape.label)
                labels.append(label)
            kinds.setdefault(shape.label, set()).add(shape.type)
            known = {attr.name for attr in label.attributes}
            for name in shape.attributes:
                if name not in known:
                    label.attributes.append(AttributeSpec(name=name))
                    known.add(name)
    for name, used in kinds.items():
        label = by_name[name]
        if label.type != "any" and used != {label.type}:
            label.type = "any"
    return labels


def read_xml_task(path: Path) -> XmlTask:
    """One CVAT for images 1.1 file as a task to upload; errors name the file and the image."""
    parsed, root = read_cvat(path)
    ignored: Counter[str] = Counter(node.tag for node in root.iterfind("image/tag"))
    images = []
    for frame in parsed.frames:
        image = XmlImage(frame=frame.frame or 0, name=frame.name, width=frame.width or None,
                         height=frame.height or None)
        for s in frame.shapes:
            if s.kind not in UPLOAD_KINDS:
                ignored[s.kind] += 1
                continue
            image.shapes.append(XmlShape(type=s.kind, label=s.label, points=s.points, occluded=s.occluded,
                                         z_order=s.z_order, rotation=s.rotation, source=s.source or "manual",
                                         group=s.group, attributes=s.attributes))
        images.append(image)
    if not images:
        raise SourceError(f"{path}: holds no <image> elements")
    labels = _complete_labels(_meta_labels(root, path), images)
    return XmlTask(path=path, name=parsed.name, labels=labels, images=images, ignored=ignored)


def xml_files(folder: Path) -> list[Path]:
    """The ``*.xml`` files of a folder (or the one file given), sorted by name."""
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise SourceError(f"{folder}: no such file or folder")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".xml")
    if not files:
        raise SourceError(f"{folder}: holds no *.xml files")
    return files
