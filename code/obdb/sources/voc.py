"""Pascal VOC XML: one ``<annotation>`` file per image.

Coordinates are used as written (no 1-based shift): that is what LabelImg, CVAT and DeepForest
write and read. An object without a ``<bndbox>`` becomes a shape of kind ``no_bndbox``, which the
driver skips with a count.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from obdb.sources.contract import Frame, Shape, SourceError, Task, to_float, to_int_or_none


def _text(node: ET.Element | None, tag: str) -> str | None:
    child = node.find(tag) if node is not None else None
    if child is None or child.text is None:
        return None
    return child.text.strip() or None


def _flag(node: ET.Element, tag: str) -> bool:
    return (_text(node, tag) or "0") in ("1", "true", "True")


def parse_voc(path: Path, root: ET.Element, images_dir: Path) -> Task:
    """Parse a VOC file; the task name is the file stem (VOC has no task notion)."""
    filename = _text(root, "filename")
    if not filename:
        raise SourceError(f"{path}: Pascal VOC file has no <filename>")
    size = root.find("size")
    frame = Frame(name=filename, frame=None, width=to_int_or_none(_text(size, "width")),
                  height=to_int_or_none(_text(size, "height")))
    for number, obj in enumerate(root.iterfind("object")):
        where = f"object #{number}"
        label = _text(obj, "name")
        if not label:
            raise SourceError(f"{path}: {where} has no <name>")
        bndbox = obj.find("bndbox")
        points = [] if bndbox is None else [to_float(_text(bndbox, k), k, path, where)
                                            for k in ("xmin", "ymin", "xmax", "ymax")]
        frame.shapes.append(Shape(kind="rectangle" if bndbox is not None else "no_bndbox", points=points,
                                  label=label, occluded=_flag(obj, "occluded"), difficult=_flag(obj, "difficult"),
                                  ref=where))
    return Task(name=path.stem, frames=[frame], root=images_dir, origin=str(path), format="voc")
