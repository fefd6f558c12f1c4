"""One task, four ways in: a local CVAT XML file, MongoDB documents, the CVAT server (through the
source's cache), and ``obdb sync`` into MongoDB. Every shape kind, a frame whose every shape is
skipped, a negative and an image name outside the data root: the same records each way."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from obdb import cvat
from obdb.mongo import sync
from obdb.mongo.layout import write_task
from obdb.prepare import load_annotations
from obdb.settings import parse_settings
from obdb.sources import driver
from obdb.shapes import shape_box

from helpers.tiny_data import tiny_settings

TASK = "gt_train_S1_cam_V1"
LABELS = ["weed", "crop"]
NAMES = [f"fielddata/s1/v1frame{i:04d}.png" for i in range(6)] + ["../outside.png"]
# (frame, CVAT shape type, label, CVAT JSON points, rotation)
SHAPES: list[tuple[int, str, str, list[float], float]] = [
    (0, "rectangle", "weed", [1, 2, 11, 12], 0),
    (0, "polygon", "crop", [5, 5, 40, 8, 20, 30], 0),
    (1, "points", "weed", [3, 4, 10, 20, 7, 7], 0),
    (1, "ellipse", "crop", [30, 20, 36, 16], 30),  # cx, cy, cx + rx, cy - ry
    (2, "rectangle", "weed", [10, 10, 30, 20], 45),
    (2, "mask", "crop", [3, 5, 2, 40, 10, 43, 14], 0),  # RLE, then left, top, right, bottom
    (3, "polyline", "weed", [1, 1, 20, 20], 0),  # the frame's only shape: skipped, so the frame is left out
    (5, "rectangle", "weed", [50, 30, 70, 60], 0),  # clipped to the 64x48 image; an accepted proposal
    (6, "rectangle", "weed", [1, 1, 9, 9], 0),  # on the image outside the data root
]                                              # frame 4: no shapes, a negative


PROPOSAL = 7  # SHAPES index of the one shape a model proposed (and a person accepted)
ACCEPTED = ("auto", {"review": "accepted"})  # what the ground-truth rule is asked about it


def xml_shape(kind: str, label: str, p: list[float], rotation: float, proposal: bool = False) -> str:
    common = f'label="{label}" source="{"auto" if proposal else "manual"}" occluded="0" z_order="0"'
    if kind == "rectangle":
        review = '<attribute name="review">accepted</attribute>' if proposal else ""
        return (f'<box {common} xtl="{p[0]}" ytl="{p[1]}" xbr="{p[2]}" ybr="{p[3]}" rotation="{rotation}">'
                f"{review}</box>")
    if kind == "ellipse":
        return (f'<ellipse {common} cx="{p[0]}" cy="{p[1]}" rx="{p[2] - p[0]}" ry="{p[1] - p[3]}" '
                f'rotation="{rotation}"/>')
    if kind == "mask":
        left, top, right, bottom = p[-4:]
        rle = ", ".join(str(int(v)) for v in p[:-4])
        return (f'<mask {common} rle="{rle}" left="{left}" top="{top}" width="{right - left + 1}" '
                f'height="{bottom - top + 1}"/>')
    points = ";".join(f"{x},{y}" for x, y in zip(p[0::2], p[1::2]))
    return f'<{kind} {common} points="{points}"/>'


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    """images/ with the task's frames (and ``outside.png`` next to it, outside the data root) and
    annotations/task.xml."""
    for i, name in enumerate(NAMES):
        path = tmp_path / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 48), (20 * i, 100, 60)).save(path)
    images = []
    for i, name in enumerate(NAMES):
        shapes = "".join(xml_shape(kind, label, p, r, n == PROPOSAL)
                         for n, (f, kind, label, p, r) in enumerate(SHAPES) if f == i)
        images.append(f'<image id="{i}" name="{name}" width="64" height="48">{shapes}</image>')
    labels = "".join(f"<label><name>{label}</name></label>" for label in LABELS)
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "task.xml").write_text(
        f'<?xml version="1.0" encoding="utf-8"?><annotations><version>1.1</version><meta><task><name>{TASK}</name>'
        f"<labels>{labels}</labels></task></meta>{''.join(images)}</annotations>")
    return tmp_path


def settings(data: Path, out: Path, block: dict[str, Any]):
    raw = tiny_settings(data, out, annotations_list=[TASK])
    raw["data"] = {"images_dir": str(data / "images"), "group_regex": r"(v\d+)frame", **block}
    return parse_settings(json.loads(json.dumps(raw)))


def comparable(loaded) -> tuple:
    records = [(r.image_id, r.task, r.frame, r.group, r.width, r.height, tuple(r.labels),
                np.round(r.boxes, 3).tolist(), r.meta["occluded"]) for r in loaded.records]
    skipped = sorted(s.path for s in loaded.skipped)
    return records, skipped, loaded.dropped_boxes


def mongo_documents() -> tuple[list[dict], list[dict]]:
    """The task as MongoDB documents written by hand: every kind as CVAT names it, rotation kept."""
    frames = [{"name": name, "width": 64, "height": 48} for name in NAMES]
    shapes = [{"shape_types": kind, "points": [float(v) for v in p], "rotation": r, "frame": f, "object_class": label,
               "label_id": LABELS.index(label) + 1, "occluded": False, "source": "manual", "img_path": NAMES[f],
               "img_width": 64, "img_height": 48} for f, kind, label, p, r in SHAPES]
    shapes[PROPOSAL].update(source="auto", attributes={"review": "accepted"})
    return frames, shapes


def test_one_task_four_ways_gives_equal_records(data, tmp_path, fake_cvat, mongo_db, mongo_settings,
                                                monkeypatch, caplog) -> None:
    opened: list[Path] = []
    probe = driver.probe_image
    monkeypatch.setattr(driver, "probe_image", lambda path: opened.append(Path(path)) or probe(path))
    asked: list[tuple] = []  # every shape's source and attributes reach the ground-truth rule
    monkeypatch.setattr(driver, "is_ground_truth", lambda *args: asked.append((args[0], dict(args[1]))) or True)

    with caplog.at_level(logging.INFO, logger="obdb.sources"):
        local = load_annotations(settings(data, tmp_path / "local", {}), progress=False)
    assert "left out 1 frame(s) whose every shape was skipped" in caplog.text
    assert "skipped 1 image name(s) outside the data root" in caplog.text
    assert all(data / "images" in p.parents for p in opened)  # the outside image was never opened
    assert len(asked) == len(SHAPES) and ACCEPTED in asked

    frames, shapes = mongo_documents()
    write_task(mongo_db, {"name": TASK, "labels": [{"id": i + 1, "name": n} for i, n in enumerate(LABELS)]},
               frames, shapes)
    asked.clear()
    direct = load_annotations(settings(data, tmp_path / "mongo", {"source": "mongo",
                                                                   "mongo": mongo_settings(mongo_db.name)}),
                              progress=False)
    assert ACCEPTED in asked

    review = {"name": "review", "input_type": "select", "values": ["unreviewed", "accepted", "rejected"]}
    task_id = fake_cvat.add_task(TASK, [{"name": "weed", "attributes": [review]}, "crop"],
                                 [(name, (data / "images" / name).read_bytes()) for name in NAMES],
                                 shapes=[{"type": kind, "frame": f, "label": label, "points": p, "rotation": r}
                                         for n, (f, kind, label, p, r) in enumerate(SHAPES) if n != PROPOSAL],
                                 status="completed")
    spec = fake_cvat.tasks[task_id].labels[0]["attributes"][0]["id"]
    f, kind, label, p, r = SHAPES[PROPOSAL]
    with cvat.connect(cvat.CvatCredentials.from_env(fake_cvat.env), retries=1, backoff_s=0.01) as session:
        cvat.add_shapes(session, task_id, [{"type": kind, "frame": f, "label_id": fake_cvat.label_id(task_id, label),
                                            "points": p, "source": "auto",
                                            "attributes": [{"spec_id": spec, "value": "accepted"}]}])
    fake_cvat.set_status(task_id, "completed")
    for key, value in fake_cvat.env.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("CVAT_ACCESS_TOKEN", raising=False)
    asked.clear()
    from_cvat = load_annotations(settings(data, tmp_path / "cvat", {"source": "cvat"}), progress=False)
    assert ACCEPTED in asked

    synced_db = mongo_db.client[mongo_db.name + "_sync"]
    try:
        with cvat.connect(cvat.CvatCredentials.from_env(fake_cvat.env), retries=1, backoff_s=0.01) as session:
            summary = sync.apply_sync(session, synced_db, sync.plan_sync(session, synced_db), progress=False)
        assert (summary.shapes, dict(summary.skipped_shapes)) == (len(SHAPES), {})
        # ellipse, mask and rotated rectangle stored as their box; the polyline kept for the frame policy
        assert sorted(synced_db.annotation_data.distinct("shape_types")) == ["points", "polygon", "polyline",
                                                                             "rectangle"]
        asked.clear()
        synced = load_annotations(settings(data, tmp_path / "sync", {"source": "mongo",
                                                                      "mongo": mongo_settings(synced_db.name)}),
                                  progress=False)
        assert ACCEPTED in asked  # sync keeps source and attributes
    finally:
        mongo_db.client.drop_database(synced_db.name)

    records, skipped, dropped = comparable(local)
    assert [r[0] for r in records] == [f"{TASK}/{name}" for name in NAMES[:3] + NAMES[4:6]]
    assert {r[3] for r in records} == {"v1"} and dropped == 0
    expected = [[shape_box(kind, p, r) for f, kind, _, p, r in SHAPES if f == frame] for frame in (0, 1, 2)]
    for record, boxes in zip(records, expected):
        np.testing.assert_allclose(record[7], boxes, atol=1e-3)
    assert records[3][7] == [] and records[4][7] == [[50, 30, 64, 48]]  # a negative; a clipped box
    assert skipped == ["../outside.png"]
    for other in (direct, from_cvat, synced):
        assert comparable(other) == (records, skipped, dropped)

    skip = {"polygons": "skip"}  # the same policy everywhere: frame 0 keeps its rectangle only
    local_skip = comparable(load_annotations(settings(data, tmp_path / "local", skip), progress=False))
    assert [len(r[6]) for r in local_skip[0]] == [1, 1, 2, 0, 1]
    assert comparable(load_annotations(settings(data, tmp_path / "cvat", {"source": "cvat", **skip}),
                                       progress=False)) == local_skip
