"""Writing tasks in the original layout: exact names, idempotent, never half-replaced."""
from __future__ import annotations

from datetime import datetime, timezone

import bson
import pymongo.collection
import pytest
from bson import json_util

from obdb.mongo import layout
from obdb.mongo.connection import ensure_indexes
from obdb.mongo.layout import (
    BATCH,
    SHAPE_FIELDS,
    VIEW,
    TaskInterrupted,
    TaskNotFound,
    delete_task,
    find_tasks,
    read_task,
    stored_tasks,
    write_task,
)
from obdb.sources.mongo import read_task_frames, read_view

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


# --------------------------------------------------------------------------- the task_frames view


def view_parts(db, name: str) -> list[dict]:
    return sorted(db[VIEW].find({"task_name": name}), key=lambda p: p["part"])


def view_shapes_of(db, name: str) -> list[dict]:
    return [shape for part in view_parts(db, name) for group in part["groups"] for shape in group["s"]]


def test_view_holds_exactly_the_tasks_committed_shapes(mongo_db) -> None:
    ensure_indexes(mongo_db)
    write_task(mongo_db, task("other"), FRAMES, shapes(2))
    write_task(mongo_db, task("t"), FRAMES, shapes(5, frames=2))
    batch = find_tasks(mongo_db, ["t"])[0][BATCH]
    [part] = view_parts(mongo_db, "t")
    assert (part[BATCH], part["part"], part["parts"], part["shapes"]) == (batch, 0, 1, 5)
    assert sorted(g["_id"] for g in part["groups"]) == [0, 1]
    stored = {d["_id"]: d for d in mongo_db.annotation_data.find({"task_name": "t"})}
    in_view = {s["i"]: (g["_id"], s) for g in part["groups"] for s in g["s"]}
    assert in_view.keys() == stored.keys()  # the inserted shapes' own _ids
    for ident, (frame, shape) in in_view.items():
        assert frame == stored[ident]["frame"]
        assert shape == {short: stored[ident][long] for short, long in SHAPE_FIELDS.items() if long in stored[ident]}
    assert "task_name_batch_part" in mongo_db[VIEW].index_information()

    write_task(mongo_db, task("t"), FRAMES, shapes(3, label="grass"))  # replaced: the old view goes too
    assert {s["c"] for s in view_shapes_of(mongo_db, "t")} == {"grass"}
    assert len(view_shapes_of(mongo_db, "t")) == 3 and len(view_parts(mongo_db, "t")) == 1
    assert len(view_shapes_of(mongo_db, "other")) == 2


def test_empty_task_has_a_complete_view(mongo_db) -> None:
    write_task(mongo_db, task("t"), FRAMES, [])
    [part] = view_parts(mongo_db, "t")
    assert (part["part"], part["parts"], part["shapes"], part["groups"]) == (0, 1, 0, [])


def test_view_spans_parts_and_splits_a_frame_too_large_for_one(mongo_db, monkeypatch) -> None:
    monkeypatch.setattr(layout, "VIEW_PART_BYTES", 1500)  # about 10 shapes a part
    many = shapes(40, frames=4) + [{**s, "frame": 4, "img_path": "f4.png"} for s in shapes(30, frames=1)]
    write_task(mongo_db, task("t"), FRAMES, many)
    parts = view_parts(mongo_db, "t")
    assert len(parts) > 5 and [p["part"] for p in parts] == list(range(len(parts)))
    assert {p["parts"] for p in parts} == {len(parts)} and sum(p["shapes"] for p in parts) == 70
    assert all(len(bson.encode({"groups": p["groups"]})) <= 1500 + 100 for p in parts)
    frame4 = [g for p in parts for g in p["groups"] if g["_id"] == 4]
    assert len(frame4) > 1 and sum(len(g["s"]) for g in frame4) == 30  # one frame over several groups
    assert len({s["i"] for s in view_shapes_of(mongo_db, "t")}) == 70


def test_interrupted_write_leaves_the_previous_view_readable(mongo_db, monkeypatch) -> None:
    write_task(mongo_db, task("t"), FRAMES, shapes(3))
    old_batch = find_tasks(mongo_db, ["t"])[0][BATCH]
    real_replace, real_insert = pymongo.collection.Collection.replace_one, pymongo.collection.Collection.insert_many

    def crash_on_meta(self, *args, **kwargs):
        if self.name == "meta":
            raise RuntimeError("process killed")
        return real_replace(self, *args, **kwargs)

    def crash_in_view(self, documents, *args, **kwargs):
        if self.name == VIEW:
            real_insert(self, list(documents)[:1], *args, **kwargs)  # part 0 of several made it
            raise RuntimeError("process killed")
        return real_insert(self, documents, *args, **kwargs)

    for crash in (crash_on_meta, crash_in_view):
        with monkeypatch.context() as patch:
            patch.setattr(layout, "VIEW_PART_BYTES", 600)
            patch.setattr(pymongo.collection.Collection, "insert_many" if crash is crash_in_view else "replace_one",
                          crash)
            with pytest.raises(RuntimeError, match="killed"):
                write_task(mongo_db, task("t"), FRAMES, shapes(8, label="grass"))
        doc = find_tasks(mongo_db, ["t"])[0]
        assert doc[BATCH] == old_batch and mongo_db[VIEW].count_documents({BATCH: {"$ne": old_batch}}) >= 1
        assert read_view(mongo_db, "t", doc[BATCH]) is not None  # the old version, through its view
        assert [s["c"] for g in read_task_frames(mongo_db, doc).groups for s in g["s"]] == ["weed"] * 3

    assert write_task(mongo_db, task("t"), FRAMES, shapes(8, label="grass"))  # finishes the write
    doc = find_tasks(mongo_db, ["t"])[0]
    assert [s["c"] for g in read_view(mongo_db, "t", doc[BATCH]) for s in g["s"]] == ["grass"] * 8
    assert mongo_db[VIEW].count_documents({"task_name": "t"}) == 1
    assert mongo_db.annotation_data.count_documents({"task_name": "t"}) == 8


def test_rewriting_the_same_content_restores_a_missing_view_only(mongo_db, monkeypatch) -> None:
    write_task(mongo_db, task("t"), FRAMES, shapes(6))
    before = dump(mongo_db)
    view = view_parts(mongo_db, "t")
    mongo_db.drop_collection(VIEW)  # as after an older obdb, or an import
    assert not write_task(mongo_db, task("t"), FRAMES, shapes(6))
    assert dump(mongo_db) == before  # shapes untouched: same _ids, same bytes
    assert [{k: v for k, v in p.items() if k != "_id"} for p in view_parts(mongo_db, "t")] == [
        {k: v for k, v in p.items() if k != "_id"} for p in view]

    monkeypatch.setattr(layout, "VIEW_PART_BYTES", 600)
    assert not write_task(mongo_db, task("t"), FRAMES, shapes(6))  # complete view: nothing written
    assert len(view_parts(mongo_db, "t")) == 1
    mongo_db[VIEW].delete_many({"task_name": "t"})
    write_task(mongo_db, task("t"), FRAMES, shapes(6))
    parts = view_parts(mongo_db, "t")
    assert len(parts) > 1
    mongo_db[VIEW].delete_one({"_id": parts[1]["_id"]})  # an incomplete view is rewritten whole
    assert not write_task(mongo_db, task("t"), FRAMES, shapes(6))
    assert len(view_parts(mongo_db, "t")) == len(parts) and dump(mongo_db) == before


def test_delete_task_removes_the_view_of_that_name_only(mongo_db) -> None:
    write_task(mongo_db, task("gt_val_A"), FRAMES, shapes(2))
    write_task(mongo_db, task("gt_val_A_2"), FRAMES, shapes(5))
    assert delete_task(mongo_db, "gt_val_A")
    assert view_parts(mongo_db, "gt_val_A") == []
    assert len(view_shapes_of(mongo_db, "gt_val_A_2")) == 5


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
