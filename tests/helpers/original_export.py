"""The original system's mongoexport files (``tasks.json``, ``meta.json``, ``annotation_data.json``)
for CVAT for images XML files such as ``make_tiny_dataset`` writes.

Written by hand (json + ElementTree, no bson, no obdb code) in the exact form ``mongoexport``
(database tools 100.x) gives: one compact document per line, relaxed extended JSON with
``{"$oid": …}`` ids and ``{"$date": "…Z"}`` dates, fields in the original layout's order. So a
test that imports these files checks compatibility with real exports, not with ourselves.
"""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

CREATED = datetime(2023, 5, 8, 12, 29, 12, 123000, tzinfo=timezone.utc)
COLOURS = ("#fa3253", "#33ddff", "#b83df5", "#ff6a4d")


class ObjectIds:
    """Increasing ObjectIds as one mongod would hand out: timestamp, fixed process part, counter."""

    def __init__(self, start: datetime = CREATED) -> None:
        self.seconds = int(start.timestamp())
        self.counter = 0x1A2B3C

    def __call__(self) -> dict[str, str]:
        self.counter += 1
        return {"$oid": f"{self.seconds:08x}a1b2c3d4e5{self.counter:06x}"}


def date(value: datetime) -> dict[str, str]:
    """Relaxed extended JSON date: milliseconds only when not zero, UTC as ``Z``."""
    text = value.strftime("%Y-%m-%dT%H:%M:%S")
    millis = value.microsecond // 1000
    return {"$date": text + (f".{millis:03d}" if millis else "") + "Z"}


def line(doc: dict[str, Any]) -> str:
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False)


def original_documents(annotation_files: list[Path], ids: ObjectIds | None = None
                       ) -> dict[str, list[dict[str, Any]]]:
    """tasks / meta / annotation_data documents for CVAT XML files (boxes → rectangles)."""
    ids = ids or ObjectIds()
    out: dict[str, list[dict[str, Any]]] = {"tasks": [], "meta": [], "annotation_data": []}
    for number, path in enumerate(sorted(annotation_files)):
        root = ET.parse(path).getroot()
        name = root.findtext("meta/task/name")
        label_names = [n.text for n in root.iterfind("meta/task/labels/label/name")]
        labels = [{"id": 10 * number + i + 1, "name": label, "color": COLOURS[i % len(COLOURS)], "attributes": []}
                  for i, label in enumerate(label_names)]
        label_id = {lab["name"]: lab["id"] for lab in labels}
        out["tasks"].append({"_id": ids(), "type": "task_data", "name": name, "labels": labels,
                             "created_date": date(CREATED + timedelta(days=number)),
                             "updated_date": date(CREATED + timedelta(days=number, hours=2, seconds=1))})
        frames = []
        for image in root.iterfind("image"):
            width, height = int(image.get("width")), int(image.get("height"))
            frames.append({"name": image.get("name"), "width": width, "height": height})
            for box in image.iterfind("box"):
                points = [float(box.get(k)) for k in ("xtl", "ytl", "xbr", "ybr")]
                out["annotation_data"].append({
                    "_id": ids(), "type": "annotation", "task_name": name, "shape_types": "rectangle",
                    "occluded": box.get("occluded") == "1", "points": points, "frame": int(image.get("id")),
                    "label_id": label_id[box.get("label")], "source": box.get("source", "manual"),
                    "object_class": box.get("label"), "img_path": image.get("name"),
                    "img_width": width, "img_height": height})
        out["meta"].append({"_id": ids(), "task_name": name, "frames": frames})
    return out


def write_original_export(annotation_files: list[Path], out_dir: Path, *, as_array: bool = False) -> Path:
    """Write the three files as ``mongoexport`` would (``as_array``: ``--jsonArray``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for collection, docs in original_documents(annotation_files).items():
        lines = [line(d) for d in docs]
        text = ("[" + ",".join(lines) + "]") if as_array else "".join(f"{text}\n" for text in lines)
        (out_dir / f"{collection}.json").write_text(text, encoding="utf-8")
    return out_dir
