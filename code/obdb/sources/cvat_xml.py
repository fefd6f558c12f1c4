"""CVAT for images 1.1 XML: the one reader (training and ``annotate upload-xml`` both use it) and a
minimal writer (used by the demo and the tests).

Reference layout::

    <annotations>
      <version>1.1</version>
      <meta><task><name>my task</name>...<labels><label><name>Tree</name>...</label></labels></task></meta>
      <image id="0" name="frame_000000.png" width="1920" height="1080">
        <box label="Tree" occluded="0" source="manual" xtl="1" ytl="2" xbr="30" ybr="40" rotation="0">
          <attribute name="review">accepted</attribute>
        </box>
        <polygon label="Tree" points="1,2;30,2;30,40"/>
      </image>
    </annotations>

The reader loses nothing people drew: every shape keeps its kind, points (in CVAT's JSON form, see
:class:`~obdb.sources.contract.Shape`), rotation, occlusion, z order, group, ``source`` and
``<attribute>`` values. Elements it has no encoding for (cuboids, skeletons) become shapes without
points, which the driver skips with a count; ``<tag>`` elements are image-level labels, not shapes.
XML comes through expat, which refuses external entities and entity expansion bombs.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from obdb.fileio import write_text
from obdb.sources.contract import Frame, Shape, SourceError, Task, to_float, to_int_or_none

#: XML element → shape kind, for the elements with points the reader understands.
KINDS = {"box": "rectangle", "polygon": "polygon", "polyline": "polyline", "points": "points",
         "ellipse": "ellipse", "mask": "mask"}
_NOT_SHAPES = {"tag", "attribute"}


def parse_xml(raw: bytes, origin: Path) -> ET.Element:
    """The document's root; a SourceError naming file, line and column when it is malformed."""
    try:
        return ET.fromstring(raw)
    except ET.ParseError as err:
        line, col = err.position
        reason = str(err).rsplit(": line", 1)[0]  # ParseError repeats the position; say it once
        raise SourceError(f"{origin}: malformed XML at line {line}, column {col + 1}: {reason}") from err


def read_cvat(path: Path) -> tuple[Task, ET.Element]:
    """Read and parse one CVAT for images 1.1 file: its task (images resolve under the file's
    folder until the caller says otherwise) and the document root, for ``<meta>``."""
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise SourceError(f"{path}: cannot read: {err}") from err
    root = parse_xml(raw, path)
    if root.tag != "annotations":
        raise SourceError(f"{path}: not a CVAT for images 1.1 file (root <{root.tag}>, expected <annotations>)")
    return parse_cvat(path, root, path.parent), root


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


def _flat_points(text: str | None, path: Path, where: str) -> list[float]:
    if not text or not text.strip():
        raise SourceError(f"{path}: {where}: shape has no points")
    flat: list[float] = []
    for pair in text.strip().split(";"):
        parts = pair.split(",")
        if len(parts) != 2:
            raise SourceError(f"{path}: {where}: bad point {pair!r} (expected 'x,y')")
        flat.extend(to_float(p, "coordinate", path, where) for p in parts)
    return flat


def _points(node: ET.Element, kind: str, path: Path, where: str) -> list[float]:
    a = node.attrib
    number = lambda key: to_float(a.get(key), key, path, where)  # noqa: E731
    if kind == "rectangle":
        return [number(k) for k in ("xtl", "ytl", "xbr", "ybr")]
    if kind == "ellipse":
        cx, cy, rx, ry = (number(k) for k in ("cx", "cy", "rx", "ry"))
        return [cx, cy, cx + rx, cy - ry]
    if kind == "mask":
        left, top, width, height = (number(k) for k in ("left", "top", "width", "height"))
        rle = [to_float(v, "rle", path, where) for v in (a.get("rle") or "").split(",") if v.strip()]
        return rle + [left, top, left + width - 1, top + height - 1]
    return _flat_points(a.get("points"), path, where)


def _shape(node: ET.Element, path: Path, where: str) -> Shape:
    a = node.attrib
    kind = KINDS.get(node.tag, node.tag)
    label = a.get("label") or ""
    if not label and node.tag in KINDS:
        raise SourceError(f"{path}: {where}: <{node.tag}> has no label")
    points = _points(node, kind, path, where) if node.tag in KINDS else []
    attributes = {attr.get("name", ""): attr.text or "" for attr in node.iterfind("attribute") if attr.get("name")}
    return Shape(kind=kind, points=points, label=label,
                 rotation=to_float(a.get("rotation", 0), "rotation", path, where),
                 occluded=a.get("occluded") == "1", source=a.get("source"), attributes=attributes,
                 z_order=to_int_or_none(a.get("z_order")) or 0, group=to_int_or_none(a.get("group_id")) or 0)


def parse_cvat(path: Path, root: ET.Element, images_dir: Path) -> Task:
    """A parsed ``<annotations>`` document as a task whose images live under ``images_dir``."""
    if root.find("track") is not None:
        raise SourceError(f"{path}: this is a 'CVAT for video' export (<track> elements); "
                          f"export the task as 'CVAT for images 1.1' instead")
    frames: list[Frame] = []
    for image in root.iterfind("image"):
        name = image.get("name")
        if not name:
            raise SourceError(f"{path}: <image id={image.get('id')!r}> has no name attribute")
        where = f"image {name!r}"
        frames.append(Frame(name=name, frame=to_int_or_none(image.get("id")), width=to_int_or_none(image.get("width")),
                            height=to_int_or_none(image.get("height")),
                            shapes=[_shape(node, path, where) for node in image if node.tag not in _NOT_SHAPES]))
    labels = [node.text.strip() for node in root.iterfind("meta/*/labels/label/name")
              if node.text and node.text.strip()]
    return Task(name=_task_name(root) or path.stem, frames=frames, root=images_dir, origin=str(path), format="cvat",
                labels=labels)


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
