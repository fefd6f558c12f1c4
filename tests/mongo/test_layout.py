"""Writing tasks in the original layout: exact names, idempotent, never half-replaced."""
from __future__ import annotations

from datetime import datetime, timezone

import pymongo.collection
import pytest
from bson import json_util

from obdb.mongo.connection import ensure_indexes
from obdb.mongo.layout import (
    BATCH,
    TaskInterrupted,
    TaskNotFound,
    delete_task,
    find_tasks,
    stored_tasks,
    write_task,
)

from helpers.reference_reader import read_task

UPDATED = datetime(2023, 5, 8, 12, 29, 12, tzinfo=timezone.utc)


def task(name: str, **extra) -> dict:
    return {"name": name, "labels": [{"id": 1, "name": "weed", "color": "#ff0000", "attributes": []}],
            "created_date": UPDATED, "updated_date": UPDATED, **extra}


def shapes(n: int, label: str = "weed", frames: int = 2) -> list[dict]:
    return [{"shape_types": "rectangle", "points": [float(i), 1.0, i + 10.0, 12.0], "frame": i % frames,
             "label_id": 1, "object_class": label, "occluded": False, "source": "manual",
             "img_path": f"f{i % frames}.png", "img_width": 64, "img_height": 48} for i in range(n)]


FRAMES = [{"name": "f0.png", "width": 64, "height": 48}, {"name": "f1.png", "width": 64, "height": 48}]


def dump(db) -> str:
    """Every document of the three collections, in a stable order, as extended JSON text."""
    out = []
    for coll in ("tasks", "meta", "annotation_data"):
        out += [json_util.dumps(d) for d in db[coll].find().sort("_id", 1)]
    return "\n".join(out)


def test_write_task_writes_the_original_layout(mongo_db) -> None:
    ensure_indexes(mongo_db)
    assert write_task(mongo_db, task("gt_train_A", cvat_id=7), FRAMES, shapes(3))
    doc = mongo_db.tasks.find_one({"name": "gt_train_A"})
    assert doc["type"] == "task_data" and doc["cvat_id"] == 7 and doc["updated_date"] == UPDATED
    assert mongo_db.meta.find_one({"task_name": "gt_train_A"})["frames"] == FRAMES
    docs = list(mongo_db.annotation_data.find({"task_name": "gt_train_A"}))
    assert len(docs) == 3 and {d["type"] for d in docs} == {"annotation"}
    assert stored_tasks(mongo_db) == {"gt_train_A": UPDATED}


def test_same_content_twice_is_a_no_op_byte_for_byte(mongo_db) -> None:
    assert write_task(mongo_db, task("t"), FRAMES, shapes(4))
    before = dump(mongo_db)
    assert not write_task(mongo_db, task("t"), FRAMES, shapes(4))
    assert dump(mongo_db) == before


def test_changed_content_replaces_every_shape(mongo_db) -> None:
    write_task(mongo_db, task("t"), FRAMES, shapes(4))
    task_id = mongo_db.tasks.find_one({"name": "t"})["_id"]
    later = datetime(2024, 1, 1, tzinfo=timezone.utc)
    assert write_task(mongo_db, task("t", updated_date=later), FRAMES, shapes(2, label="grass"))
    assert mongo_db.tasks.count_documents({}) == 1 and mongo_db.meta.count_documents({}) == 1
    assert mongo_db.tasks.find_one({"name": "t"})["_id"] == task_id
    assert sorted(d["object_class"] for d in mongo_db.annotation_data.find()) == ["grass", "grass"]
    assert stored_tasks(mongo_db) == {"t": later}


def test_prefix_named_tasks_are_kept_apart(mongo_db) -> None:
    write_task(mongo_db, task("gt_val_A"), FRAMES, shapes(2))
    write_task(mongo_db, task("gt_val_A_2"), FRAMES, shapes(5))
    write_task(mongo_db, task("gt_val_A"), FRAMES, shapes(1))
    assert mongo_db.annotation_data.count_documents({"task_name": "gt_val_A_2"}) == 5
    assert delete_task(mongo_db, "gt_val_A")
    assert not delete_task(mongo_db, "gt_val_A")
    assert mongo_db.annotation_data.count_documents({"task_name": "gt_val_A_2"}) == 5
    assert list(stored_tasks(mongo_db)) == ["gt_val_A_2"]
    assert [d["name"] for d in find_tasks(mongo_db, ["gt_val_A_2"])] == ["gt_val_A_2"]
    with pytest.raises(TaskNotFound, match=r"\['gt_val_A'\].*'gt_val_A_2'"):
        find_tasks(mongo_db, ["gt_val_A", "gt_val_A_2"])


def test_interrupted_write_leaves_the_old_shapes_and_says_so(mongo_db, monkeypatch) -> None:
    write_task(mongo_db, task("t"), FRAMES, shapes(3))
    old = read_task(mongo_db, find_tasks(mongo_db, ["t"])[0])
    real = pymongo.collection.Collection.replace_one

    def crash_on_tasks(self, *args, **kwargs):
        if self.name == "tasks":
            raise RuntimeError("process killed")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(pymongo.collection.Collection, "replace_one", crash_on_tasks)
    with pytest.raises(RuntimeError, match="killed"):
        write_task(mongo_db, task("t"), FRAMES, shapes(6, label="grass"))
    monkeypatch.undo()
    doc = find_tasks(mongo_db, ["t"])[0]
    # the new shapes are there but not committed: never returned mixed with the old ones
    assert mongo_db.annotation_data.count_documents({"task_name": "t"}) == 9
    with pytest.raises(TaskInterrupted, match="'t'.*interrupted"):
        read_task(mongo_db, doc)
    # writing again repairs it and leaves no stray documents
    write_task(mongo_db, task("t"), FRAMES, shapes(6, label="grass"))
    new = read_task(mongo_db, find_tasks(mongo_db, ["t"])[0])
    assert [s["object_class"] for s in new.shapes] == ["grass"] * 6
    assert mongo_db.annotation_data.count_documents({"task_name": "t"}) == 6
    assert [s["object_class"] for s in old.shapes] == ["weed"] * 3


def test_uncommitted_shapes_are_invisible_to_readers(mongo_db) -> None:
    """Original data has no batch field; shapes of a write that never reached meta stay hidden."""
    mongo_db.tasks.insert_one({"type": "task_data", "name": "t", "labels": []})
    mongo_db.meta.insert_one({"task_name": "t", "frames": FRAMES})
    mongo_db.annotation_data.insert_many([{**s, "task_name": "t"} for s in shapes(2)])
    mongo_db.annotation_data.insert_many([{**s, "task_name": "t", BATCH: "abc"} for s in shapes(5)])
    stored = read_task(mongo_db, find_tasks(mongo_db, ["t"])[0])
    assert len(stored.shapes) == 2 and [s["frame"] for s in stored.shapes] == [0, 1]
    assert stored.frames == FRAMES


def test_bad_input_is_refused_before_writing(mongo_db) -> None:
    with pytest.raises(ValueError, match="non-empty string 'name'"):
        write_task(mongo_db, {"name": ""}, [], [])
    with pytest.raises(ValueError, match="shape 0 belongs to task 'other'"):
        write_task(mongo_db, task("t"), FRAMES, [{"task_name": "other"}])
    assert mongo_db.annotation_data.count_documents({}) == 0


def test_find_tasks_asks_meta_only_for_names_without_a_tasks_document(mongo_db, mongo_commands) -> None:
    db, log = mongo_commands
    write_task(mongo_db, task("a"), FRAMES, [])
    mongo_db.meta.insert_one({"task_name": "hand_made", "frames": FRAMES})
    log.clear()
    assert [d["name"] for d in find_tasks(db, ["a"])] == ["a"]
    assert [c["find"] for c in log.sent("find")] == ["tasks"]
    log.clear()
    assert [d["name"] for d in find_tasks(db, ["a", "hand_made"])] == ["a", "hand_made"]
    assert [c["find"] for c in log.sent("find")] == ["tasks", "meta"]
