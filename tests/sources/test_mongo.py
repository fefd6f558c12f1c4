"""The ``mongo`` data source: original-layout tasks give the same records as the local-file source
of the same annotations; exact task names; negatives; polygons; missing images; server down."""
from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from bson import ObjectId
from PIL import Image

from helpers.original_export import write_original_export
from helpers.reference_reader import read_task, task_to_parsed
from helpers.servers import free_port
from helpers.tiny_data import make_tiny_dataset, tiny_settings
from obdb.mongo.layout import BATCH, find_tasks, read_task_frames, write_task
from obdb.mongo.snapshot import import_snapshot, snapshot_files
from obdb.prepare import load_annotations
from obdb.records import ImageRecord
from obdb.settings import load_settings
from obdb.sources.contract import SourceError
from obdb.sources.mongo import frames_to_task


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"))


def settings_for(data: Path, out: Path, data_block: dict[str, Any], **changes: Any):
    path = out / "settings.json"
    raw = tiny_settings(data, out, **changes)
    raw["data"] = {"images_dir": str(data / "images"), **data_block}
    path.write_text(json.dumps(raw))
    return load_settings(path)


def comparable(record: ImageRecord) -> tuple:
    return (record.image_id, str(record.path), record.width, record.height, record.boxes.tobytes(),
            record.labels, record.group, record.task, record.frame, record.meta["occluded"],
            record.meta["difficult"])


def test_imported_original_export_equals_the_local_source(tiny, mongo_db, mongo_settings, tmp_path) -> None:
    export = write_original_export(sorted((tiny / "annotations").glob("*.xml")), tmp_path / "export")
    import_snapshot(mongo_db, snapshot_files([export]), progress=False)
    tasks = ["gt_train_video03", "gt_train_video00", "gt_train_video02"]
    local = load_annotations(settings_for(tiny, tmp_path, {}, annotations_list=tasks), progress=False)
    mongo = load_annotations(settings_for(tiny, tmp_path, {"source": "mongo", "mongo": mongo_settings(mongo_db.name)},
                                          annotations_list=tasks), progress=False)
    assert len(local.records) == 9 and not local.skipped
    assert [comparable(r) for r in mongo.records] == [comparable(r) for r in local.records]
    assert mongo.records[0].meta["format"] == "mongo" and mongo.skipped == []
    assert mongo.dropped_boxes == local.dropped_boxes


def test_label_map_and_group_regex_apply_like_local(tiny, mongo_db, mongo_settings, tmp_path) -> None:
    import_snapshot(mongo_db, snapshot_files([write_original_export(
        sorted((tiny / "annotations").glob("*.xml")), tmp_path / "export")]), progress=False)
    block = {"label_map": {"red": "weed", "blue": None}, "group_regex": r"frame(\d)"}
    local = load_annotations(settings_for(tiny, tmp_path, block), progress=False)
    mongo = load_annotations(settings_for(tiny, tmp_path, {**block, "source": "mongo",
                                                          "mongo": mongo_settings(mongo_db.name)}), progress=False)
    assert [comparable(r) for r in mongo.records] == [comparable(r) for r in local.records]
    assert {label for r in mongo.records for label in r.labels} == {"weed"}
    assert {r.group for r in mongo.records} == {"0"}


# --------------------------------------------------------------------------- hand-made tasks


def image(folder: Path, name: str, size: tuple[int, int] = (64, 48)) -> str:
    (folder / name).parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 200, 30)).save(folder / name)
    return name


def shape(frame: int, img: str, kind: str, points: list[float], label: str = "weed", **extra: Any) -> dict:
    return {"shape_types": kind, "points": points, "frame": frame, "object_class": label, "occluded": False,
            "source": "manual", "img_path": img, "img_width": 64, "img_height": 48, "label_id": 1, **extra}


def frames(*names: str) -> list[dict]:
    return [{"name": n, "width": 64, "height": 48} for n in names]


def mongo_load(images: Path, out: Path, db_name: str, mongo_settings, tasks: list[str], mongo: dict | None = None,
               **data: Any):
    block = {"source": "mongo", "images_dir": str(images), "mongo": {**mongo_settings(db_name), **(mongo or {})},
             **data}
    return load_annotations(settings_for(images, out, block, annotations_list=tasks), progress=False)


@pytest.fixture()
def field(tmp_path: Path) -> Path:
    """Images laid out as on the CVAT share (``fielddata/<session>/...``)."""
    root = tmp_path / "share"
    for i in range(4):
        image(root, f"fielddata/s1/v1frame{i:04d}.png")
    return root


def test_exact_task_names_only(field, mongo_db, mongo_settings, tmp_path) -> None:
    one = [shape(0, "fielddata/s1/v1frame0000.png", "rectangle", [1, 1, 20, 20])]
    write_task(mongo_db, {"name": "gt_val_A"}, frames("fielddata/s1/v1frame0000.png"), one)
    write_task(mongo_db, {"name": "gt_val_A_2"}, frames("fielddata/s1/v1frame0001.png"),
               [shape(0, "fielddata/s1/v1frame0001.png", "rectangle", [1, 1, 20, 20])])
    loaded = mongo_load(field, tmp_path, mongo_db.name, mongo_settings, ["gt_val_A"])
    assert [r.image_id for r in loaded.records] == ["gt_val_A/fielddata/s1/v1frame0000.png"]
    assert loaded.records[0].path == field / "fielddata/s1/v1frame0000.png"
    assert loaded.records[0].group == "A" and loaded.records[0].frame == 0  # group: task without split prefix
    with pytest.raises(SourceError,
                       match=r"task\(s\) not found: \['gt_val', 'gt_val_A.\*'\].*'gt_val_A', 'gt_val_A_2'"):
        mongo_load(field, tmp_path, mongo_db.name, mongo_settings, ["gt_val", "gt_val_A.*", "gt_val_A"])


def test_negatives_kept_or_left_out(field, mongo_db, mongo_settings, tmp_path) -> None:
    names = [f"fielddata/s1/v1frame{i:04d}.png" for i in range(3)]
    write_task(mongo_db, {"name": "t"}, frames(*names), [shape(1, names[1], "rectangle", [2, 3, 30, 40])])
    kept = mongo_load(field, tmp_path, mongo_db.name, mongo_settings, ["t"])
    assert [(r.frame, len(r.boxes)) for r in kept.records] == [(0, 0), (1, 1), (2, 0)]
    np.testing.assert_array_equal(kept.records[1].boxes, [[2, 3, 30, 40]])
    dropped = mongo_load(field, tmp_path, mongo_db.name, mongo_settings, ["t"], keep_empty=False)
    assert [r.frame for r in dropped.records] == [1]


def test_polygons_become_boxes_or_are_skipped(field, mongo_db, mongo_settings, tmp_path, caplog) -> None:
    names = [f"fielddata/s1/v1frame{i:04d}.png" for i in range(3)]
    shapes = [shape(0, names[0], "rectangle", [1, 2, 11, 12], occluded=True),
              shape(0, names[0], "polygon", [5, 5, 40, 8, 20, 30]),
              shape(1, names[1], "points", [3, 4, 10, 20, 7, 7]),
              shape(2, names[2], "polyline", [1, 1, 9, 9])]
    write_task(mongo_db, {"name": "t"}, frames(*names), shapes)
    with caplog.at_level(logging.INFO, logger="obdb.sources"):
        loaded = mongo_load(field, tmp_path, mongo_db.name, mongo_settings, ["t"])
    assert [r.frame for r in loaded.records] == [0, 1]  # frame 2 shows only an unusable shape: not a negative
    np.testing.assert_array_equal(loaded.records[0].boxes, [[1, 2, 11, 12], [5, 5, 40, 30]])
    np.testing.assert_array_equal(loaded.records[1].boxes, [[3, 4, 10, 20]])
    assert loaded.records[0].meta["occluded"] == [True, False]
    assert "bounding box of 1 points shape(s), 1 polygon shape(s)" in caplog.text
    assert "skipped 1 polyline shape(s)" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="obdb.sources"):
        skipped = mongo_load(field, tmp_path, mongo_db.name, mongo_settings, ["t"], mongo={"polygons": "skip"})
    assert [(r.frame, len(r.boxes)) for r in skipped.records] == [(0, 1)]
    assert "skipped 1 points shape(s), 1 polygon shape(s), 1 polyline shape(s)" in caplog.text
    assert "left out 2 frame(s)" in caplog.text


def test_shapes_grouped_by_frame_convert_like_whole_documents(field, mongo_db, mongo_settings, tmp_path) -> None:
    """The reader's one aggregation (shapes grouped by frame on the server, only the fields used)
    gives the same parse as whole shape documents grouped here: negatives, polygons, frames stored
    as 1.0, missing fields, label_id fallback, a frame meta does not list, _id order."""
    names = [f"fielddata/s1/v1frame{i:04d}.png" for i in range(4)]
    # no object_class, occluded, img_path or size; frame stored as a double
    minimal = {"shape_types": "rectangle", "points": [4, 4, 14, 24], "frame": 1.0, "label_id": 2}
    shapes = [shape(0, names[0], "rectangle", [1, 2, 11, 12], occluded=True),
              shape(3, names[3], "points", [3, 4, 10, 20, 7, 7], label="crop"),
              shape(0, names[0], "polygon", [5, 5, 40, 8, 20, 30]),
              minimal,
              shape(2, names[2], "polyline", [1, 1, 9, 9]),
              shape(0, names[0], "rectangle", [6, 6, 9, 9], label="crop")]
    task = {"name": "t", "labels": [{"id": 1, "name": "weed"}, {"id": 2, "name": "crop"}]}
    write_task(mongo_db, task, frames(*names[:3]), shapes)
    doc = find_tasks(mongo_db, ["t"])[0]
    # annotated before the others but stored last: its box must still come first on frame 0
    early = ObjectId.from_datetime(datetime(2001, 1, 1, tzinfo=timezone.utc))
    mongo_db.annotation_data.insert_one({"_id": early, "task_name": "t", BATCH: doc[BATCH],
                                         **shape(0, names[0], "rectangle", [30, 30, 50, 40], label="stone")})

    grouped = read_task_frames(mongo_db, doc)
    assert sorted(g["_id"] for g in grouped.groups) == [0, 1, 2, 3]  # 7 shapes in 4 documents
    parsed = frames_to_task(grouped, mongo_db.name, field)
    assert parsed == task_to_parsed(read_task(mongo_db, doc), mongo_db.name, field)
    shapes = {f.frame: [(s.kind, s.points, s.label, s.occluded) for s in f.shapes] for f in parsed.frames}
    assert shapes == {0: [("rectangle", [30, 30, 50, 40], "stone", False), ("rectangle", [1, 2, 11, 12], "weed", True),
                          ("polygon", [5, 5, 40, 8, 20, 30], "weed", False),
                          ("rectangle", [6, 6, 9, 9], "crop", False)],
                      1: [("rectangle", [4, 4, 14, 24], "crop", False)],
                      2: [("polyline", [], "weed", False)],  # not a box kind: its points are not read
                      3: [("points", [3, 4, 10, 20, 7, 7], "crop", False)]}
    assert [(f.name, f.width, f.height) for f in parsed.frames] == [
        (names[0], 64, 48), (names[1], 64, 48), (names[2], 64, 48), (names[3], 64, 48)]  # frame 3 sized by its shape

    loaded = mongo_load(field, tmp_path, mongo_db.name, mongo_settings, ["t"])
    assert [r.frame for r in loaded.records] == [0, 1, 3]
    np.testing.assert_array_equal(loaded.records[0].boxes,
                                  [[30, 30, 50, 40], [1, 2, 11, 12], [5, 5, 40, 30], [6, 6, 9, 9]])
    assert loaded.records[0].labels == ["stone", "weed", "weed", "crop"]
    assert loaded.records[0].meta["occluded"] == [False, True, False, False]


def test_bad_frame_names_the_shape_document(field, mongo_db, mongo_settings, tmp_path) -> None:
    write_task(mongo_db, {"name": "t"}, frames("fielddata/s1/v1frame0000.png"),
               [shape(0, "fielddata/s1/v1frame0000.png", "rectangle", [1, 1, 9, 9]),
                shape(1.5, "fielddata/s1/v1frame0001.png", "rectangle", [1, 1, 9, 9])])
    bad = mongo_db.annotation_data.find_one({"frame": 1.5})["_id"]
    with pytest.raises(SourceError, match=f"task 't': annotation_data {bad}: 'frame' must be a whole number >= 0, "
                                          f"got 1.5"):
        mongo_load(field, tmp_path, mongo_db.name, mongo_settings, ["t"])


def test_missing_image_is_skipped_with_reason(field, mongo_db, mongo_settings, tmp_path) -> None:
    names = ["fielddata/s1/v1frame0000.png", "fielddata/gone/frame.png"]
    write_task(mongo_db, {"name": "t"}, frames(*names), [shape(1, names[1], "rectangle", [1, 1, 9, 9])])
    loaded = mongo_load(field, tmp_path, mongo_db.name, mongo_settings, ["t"])
    assert [r.frame for r in loaded.records] == [0]
    assert len(loaded.skipped) == 1 and "image file not found" in loaded.skipped[0].reason
    assert loaded.skipped[0].path == str(field / "fielddata/gone/frame.png")
    assert loaded.skipped[0].boxes == 1  # the box on the missing image is counted, not lost silently


def test_malformed_shape_names_task_and_document(field, mongo_db, mongo_settings, tmp_path) -> None:
    write_task(mongo_db, {"name": "t"}, frames("fielddata/s1/v1frame0000.png"),
               [shape(0, "fielddata/s1/v1frame0000.png", "rectangle", [1, 1, 9])])
    with pytest.raises(SourceError, match=r"task 't': annotation_data \w+ \(frame 0\): 'points'"):
        mongo_load(field, tmp_path, mongo_db.name, mongo_settings, ["t"])


def test_server_down_is_a_clear_error(field, tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("MONGODB_URI", raising=False)  # it would win over the settings file
    port = free_port()
    block = {"source": "mongo", "images_dir": str(field),
             "mongo": {"host": "127.0.0.1", "port": port, "timeout_s": 1.2, "retries": 1}}
    settings = settings_for(field, tmp_path, block, annotations_list=["t"])
    with pytest.raises(SourceError, match=f"MongoDB at 127.0.0.1:{port} is not reachable after 2 attempt"):
        load_annotations(settings, progress=False)
