"""Pascal VOC XML: one ``<annotation>`` file per image.

Coordinates are used as written (no 1-based shift): that is what LabelImg, CVAT and DeepForest
write and read. Objects without a ``<bndbox>`` are counted as ignored.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

from obdb.sources.base import SourceError
from obdb.sources.formats import ParsedBox, ParsedFile, ParsedImage, to_float, to_int_or_none


def _text(node: ET.Element, tag: str) -> str | None:
    child = node.find(tag)
    if child is None or child.text is None:
        return None
    return child.text.strip() or None


def _flag(node: ET.Element, tag: str) -> bool:
    return (_text(node, tag) or "0") in ("1", "true", "True")


def parse_voc(path: Path, root: ET.Element) -> ParsedFile:
    """Parse a VOC file; the task name is the file stem (VOC has no task notion)."""
    filename = _text(root, "filename")
    if not filename:
        raise SourceError(f"{path}: Pascal VOC file has no <filename>")
    size = root.find("size")
    image = ParsedImage(name=filename, frame=None,
                        width=to_int_or_none(_text(size, "width")) if size is not None else None,
                        height=to_int_or_none(_text(size, "height")) if size is not None else None)
    ignored: Counter[str] = Counter()
    for number, obj in enumerate(root.iterfind("object")):
        where = f"object #{number}"
        label = _text(obj, "name")
        if not label:
            raise SourceError(f"{path}: {where} has no <name>")
        bndbox = obj.find("bndbox")
        if bndbox is None:
            ignored["no_bndbox"] += 1
            continue
        coords = [to_float(_text(bndbox, k), k, path, where) for k in ("xmin", "ymin", "xmax", "ymax")]
        image.boxes.append(ParsedBox(*coords, label=label, occluded=_flag(obj, "occluded"),
                                     difficult=_flag(obj, "difficult")))
    return ParsedFile(path=path, format="voc", task=path.stem, images=[image], ignored=ignored)
