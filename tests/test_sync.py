"""obdb sync: the fake CVAT server → the tests' MongoDB server (SecantusDB or MONGODB_URI)."""
from __future__ import annotations

import json
from pathlib import Path

import bson
import pytest

from helpers.db_state import database_state
from helpers.servers import free_port
from helpers.tiny_data import tiny_settings
from obdb import cvat
from obdb.mongo import sync
from obdb.cli.main import main as obdb_main
from obdb.mongo.layout import write_task

FRAMES = [(f"fielddata/cam1/video1/video1frame{i:04d}.png", 64, 48) for i in range(4)]


@pytest.fixture()
def session(fake_cvat):
    with cvat.connect(cvat.CvatCredentials.from_env(fake_cvat.env), retries=1, backoff_s=0.01) as s:
        yield s


def run_sync(session, db, **options):
    plan = sync.plan_sync(session, db, **options)
    return plan, sync.apply_sync(session, db, plan, progress=False)


def snapshot(db) -> list[bytes]:
    """Every document of the three collections, as stored (BSON bytes, in _id order)."""
    return [bson.encode(doc) for name in ("tasks", "meta", "annotation_data")
            for doc in db[name].find().sort("_id", 1)]


def seed(fake_cvat, name: str, status: str = "completed", **extra) -> int:
    return fake_cvat.add_task(name, ["weed", "crop"], FRAMES, status=status, **extra)


def test_sync_writes_the_original_layout_and_twice_is_idempotent(fake_cvat, session, mongo_db):
    track = {"frame": 1, "label": "crop", "shapes": [
        {"type": "rectangle", "frame": 1, "points": [0, 0, 10, 10]},
        {"type": "rectangle", "frame": 3, "points": [10, 10, 30, 30], "outside": True}]}
    task_id = seed(fake_cvat, "gt_train_FieldData_1", tracks=[track], shapes=[
        {"type": "rectangle", "frame": 0, "label": "weed", "points": [1, 2, 11, 12], "occluded": True},
        {"type": "polygon", "frame": 2, "label": "weed", "points": [1, 1, 5, 1, 5, 5]},
        {"type": "polyline", "frame": 2, "label": "weed", "points": [1, 1, 5, 5]}])
    plan, summary = run_sync(session, mongo_db)
    assert [t.name for t in plan.add] == ["gt_train_FieldData_1"]
    assert (summary.added, summary.shapes, dict(summary.skipped_shapes)) == (1, 5, {})  # the polyline is stored too

    doc = mongo_db.tasks.find_one({"name": "gt_train_FieldData_1"})
    assert (doc["type"], doc["source"], doc["cvat_id"], doc["status"]) == ("task_data", "cvat", task_id, "completed")
    assert [(label["name"], label["id"]) for label in doc["labels"]] == [
        ("weed", fake_cvat.label_id(task_id, "weed")), ("crop", fake_cvat.label_id(task_id, "crop"))]
    meta = mongo_db.meta.find_one({"task_name": "gt_train_FieldData_1"})
    assert meta["frames"] == [{"name": n, "width": w, "height": h} for n, w, h in FRAMES]
    shapes = sorted(mongo_db.annotation_data.find({"task_name": "gt_train_FieldData_1"}, {"_id": 0, "obdb_batch": 0}),
                    key=lambda s: (s["frame"], s["shape_types"]))
    assert [(s["frame"], s["shape_types"], s["object_class"], s["points"]) for s in shapes] == [
        (0, "rectangle", "weed", [1.0, 2.0, 11.0, 12.0]),
        (1, "rectangle", "crop", [0.0, 0.0, 10.0, 10.0]),  # track keyframe
        (2, "polygon", "weed", [1.0, 1.0, 5.0, 1.0, 5.0, 5.0]),
        (2, "polyline", "weed", [1.0, 1.0, 5.0, 5.0]),
        (2, "rectangle", "crop", [5.0, 5.0, 20.0, 20.0])]  # interpolated; outside from frame 3
    assert shapes[0] == {"type": "annotation", "task_name": "gt_train_FieldData_1", "shape_types": "rectangle",
                         "occluded": True, "points": [1.0, 2.0, 11.0, 12.0], "frame": 0,
                         "label_id": fake_cvat.label_id(task_id, "weed"), "source": "manual",
                         "object_class": "weed", "img_path": FRAMES[0][0], "img_width": 64, "img_height": 48,
                         "attributes": []}

    before = snapshot(mongo_db)
    downloads = fake_cvat.count("GET", r"/annotations/?$") + fake_cvat.count("GET", r"/data/meta$")
    plan, summary = run_sync(session, mongo_db)
    assert (plan.add, plan.update, [t.name for t in plan.unchanged]) == ([], [], ["gt_train_FieldData_1"])
    assert fake_cvat.count("GET", r"/annotations/?$") + fake_cvat.count("GET", r"/data/meta$") == downloads
    assert snapshot(mongo_db) == before
    plan, summary = run_sync(session, mongo_db, full=True)  # re-read, same content: nothing rewritten
    assert (len(plan.update), summary.updated, summary.unchanged) == (1, 0, 1)
    assert snapshot(mongo_db) == before


def test_changed_tasks_are_updated_and_deleted_ones_removed(fake_cvat, session, mongo_db):
    keep, change, gone = (seed(fake_cvat, name) for name in ("keep", "change", "gone"))
    write_task(mongo_db, {"name": "by_hand"}, [{"name": "a.png", "width": 1, "height": 1}], [])
    run_sync(session, mongo_db)
    weed = fake_cvat.label_id(change, "weed")
    cvat.add_shapes(session, change, [{"type": "rectangle", "frame": 1, "label_id": weed, "points": [1, 1, 4, 4]}])
    fake_cvat.delete_task(gone)
    plan, summary = run_sync(session, mongo_db)
    assert ([t.name for t in plan.update], plan.delete, [t.name for t in plan.unchanged]) == (
        ["change"], ["gone"], ["keep"])
    assert (summary.updated, summary.deleted) == (1, 1)
    assert mongo_db.annotation_data.count_documents({"task_name": "change"}) == 1
    assert sorted(mongo_db.tasks.distinct("name")) == ["by_hand", "change", "keep"]  # by_hand: not ours
    assert mongo_db.meta.count_documents({"task_name": "gone"}) == 0
    assert [s["label_id"] for s in mongo_db.annotation_data.find({"task_name": "change"})] == [weed]


def test_a_task_stored_by_hand_is_left_alone_unless_adopted(fake_cvat, session, mongo_db):
    seed(fake_cvat, "shared", shapes=[{"type": "rectangle", "frame": 0, "label": "weed", "points": [0, 0, 2, 2]}])
    write_task(mongo_db, {"name": "shared", "labels": []}, [{"name": "x.png", "width": 5, "height": 5}], [])
    plan, summary = run_sync(session, mongo_db)
    assert (plan.foreign, summary.foreign) == (["shared"], 1)
    assert mongo_db.meta.find_one({"task_name": "shared"})["frames"][0]["name"] == "x.png"
    plan, summary = run_sync(session, mongo_db, adopt=True)
    assert summary.updated == 1 and mongo_db.tasks.find_one({"name": "shared"})["source"] == "cvat"
    assert mongo_db.annotation_data.count_documents({"task_name": "shared"}) == 1


def test_prefix_named_tasks_never_touch_each_other(fake_cvat, session, mongo_db):
    box = [{"type": "rectangle", "frame": 0, "label": "weed", "points": [0, 0, 2, 2]}]
    short = seed(fake_cvat, "gt_val_A", shapes=box)
    seed(fake_cvat, "gt_val_A_2", shapes=box * 3)
    plan, _ = run_sync(session, mongo_db, names=["gt_val_A"])
    assert mongo_db.tasks.distinct("name") == ["gt_val_A"]
    run_sync(session, mongo_db)
    fake_cvat.delete_task(short)
    plan, _ = run_sync(session, mongo_db, names=["gt_val_A_2"])
    assert plan.delete == []  # outside the names asked for
    plan, _ = run_sync(session, mongo_db)
    assert plan.delete == ["gt_val_A"]
    assert mongo_db.tasks.distinct("name") == ["gt_val_A_2"]
    assert mongo_db.annotation_data.count_documents({"task_name": "gt_val_A_2"}) == 3


def test_status_filter(fake_cvat, session, mongo_db):
    for status in ("annotation", "validation", "completed"):
        seed(fake_cvat, f"task_{status}", status=status)
    plan = sync.plan_sync(session, mongo_db)
    assert [t.name for t in plan.add] == ["task_completed"]
    plan = sync.plan_sync(session, mongo_db, statuses=["validation", "completed"])
    assert [t.name for t in plan.add] == ["task_completed", "task_validation"]
    plan = sync.plan_sync(session, mongo_db, statuses=["any"], pattern="task_*a*")
    assert [t.name for t in plan.add] == ["task_annotation", "task_validation"]


def test_two_cvat_tasks_with_one_name_are_refused(fake_cvat, session, mongo_db):
    first, second = seed(fake_cvat, "twin"), seed(fake_cvat, "twin")
    with pytest.raises(sync.SyncError, match=f"'twin' \\(ids {first}, {second}\\)"):
        sync.plan_sync(session, mongo_db)
    assert mongo_db.tasks.count_documents({}) == 0


# ---------------------------------------------------------------------------------------- command line


def write_settings(tmp_path: Path, mongo_block: dict) -> Path:
    path = tmp_path / "settings.json"
    settings = tiny_settings(tmp_path, tmp_path)
    settings["data"] = {"mongo": mongo_block}
    path.write_text(json.dumps(settings))
    return path


def test_cli_dry_run_then_sync(fake_cvat, mongo_db, mongo_settings, tmp_path, monkeypatch, capsys):
    for key, value in fake_cvat.env.items():
        monkeypatch.setenv(key, value)
    seed(fake_cvat, "gt_a")
    seed(fake_cvat, "gt_b", status="validation")
    settings = write_settings(tmp_path, mongo_settings(mongo_db.name))
    assert obdb_main(["sync", "-f", str(settings), "--dry-run", "--progress", "false"]) == 0
    out = capsys.readouterr().out
    assert "add: gt_a" in out and "gt_b" not in out and "would add 1" in out
    assert mongo_db.tasks.count_documents({}) == 0
    args = ["sync", "-f", str(settings), "--status", "completed", "--status", "validation", "--progress", "false"]
    assert obdb_main(args) == 0
    assert "2 added, 0 updated, 0 unchanged, 0 deleted" in capsys.readouterr().out
    assert sorted(mongo_db.tasks.distinct("name")) == ["gt_a", "gt_b"]


def test_cli_dry_run_writes_nothing_to_mongodb(fake_cvat, mongo_db, mongo_settings, tmp_path, monkeypatch, capsys):
    """No database, collection or index is created, and a database with data stays byte-identical."""
    for key, value in fake_cvat.env.items():
        monkeypatch.setenv(key, value)
    seed(fake_cvat, "gt_a", shapes=[{"type": "rectangle", "frame": 0, "label": "weed", "points": [0, 0, 2, 2]}])
    client = mongo_db.client
    settings = write_settings(tmp_path, mongo_settings(mongo_db.name))
    assert database_state(client, mongo_db.name) == {"exists": False}
    assert obdb_main(["sync", "-f", str(settings), "--dry-run", "--progress", "false"]) == 0
    assert "would add 1" in capsys.readouterr().out
    assert database_state(client, mongo_db.name) == {"exists": False}  # not even the database

    write_task(mongo_db, {"name": "by_hand"}, [{"name": "a.png", "width": 1, "height": 1}], [])  # no indexes yet
    before = database_state(client, mongo_db.name)
    assert obdb_main(["sync", "-f", str(settings), "--dry-run", "--full", "--progress", "false"]) == 0
    assert database_state(client, mongo_db.name) == before
    assert obdb_main(["sync", "-f", str(settings), "--progress", "false"]) == 0  # a real sync makes the indexes
    assert "task_name_batch_frame" in mongo_db.annotation_data.index_information()


def test_cli_mongo_down_is_a_clear_error(fake_cvat, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("MONGODB_URI", raising=False)
    for key, value in fake_cvat.env.items():
        monkeypatch.setenv(key, value)
    port = free_port()
    settings = write_settings(tmp_path, {"uri": f"mongodb://127.0.0.1:{port}/", "timeout_s": 0.3, "retries": 0})
    assert obdb_main(["sync", "-f", str(settings), "--progress", "false"]) == 3  # unreachable: the one table
    err = capsys.readouterr().err
    assert f"error: MongoDB at 127.0.0.1:{port} is not reachable" in err and "Traceback" not in err
    assert fake_cvat.count("GET", "^/api/tasks") == 0  # nothing asked of CVAT


# ---------------------------------------------------------------------------------------- ground truth


def test_sync_keeps_source_and_review_so_the_mongo_source_applies_the_rule(fake_cvat, session, mongo_db,
                                                                           mongo_settings, tmp_path, caplog):
    """Proposals (unreviewed, accepted, rejected) → sync → mongo source: human + accepted only."""
    from PIL import Image

    from helpers.fake_cvat.scenarios import FRAMES as GT_FRAMES
    from helpers.fake_cvat.scenarios import RULES, expected_boxes, loaded_boxes, seed_proposals
    from obdb.settings.loader import parse_settings
    from obdb.sources.factory import load_from_settings

    seed_proposals(fake_cvat, "gt_val_proposals")
    run_sync(session, mongo_db)
    stored = {tuple(d["points"]): d for d in mongo_db.annotation_data.find({"task_name": "gt_val_proposals"})}
    accepted = stored[(5.0, 20.0, 15.0, 30.0)]
    assert accepted["source"] == "auto"
    assert {"name": "review", "value": "accepted"} in accepted["attributes"]
    assert {"name": "score", "value": "0.9000"} in accepted["attributes"]
    assert stored[(1.0, 1.0, 10.0, 10.0)]["source"] == "manual"

    images = tmp_path / "images"
    for name, width, height in GT_FRAMES:
        (images / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (width, height)).save(images / name)
    for rule in RULES:
        settings = tiny_settings(tmp_path, tmp_path / "out")
        settings.update(annotations_list=["gt_val_proposals"], dataset_dir=str(images))
        settings["data"] = {"source": "mongo", "images_dir": str(images),
                            "mongo": {**mongo_settings(mongo_db.name), "include_auto": rule}}
        caplog.clear()
        with caplog.at_level("INFO", logger="obdb.sources"):
            loaded = load_from_settings(parse_settings(settings), progress=False)
        assert loaded_boxes(loaded.records) == expected_boxes(rule), rule
        left_out = {"accepted": 3, "all": 0, "none": 4}[rule]
        assert (f"left out {left_out} model proposal(s)" in caplog.text) == bool(left_out)


def test_a_task_name_typo_is_an_error_with_near_matches(fake_cvat, session, mongo_db, tmp_path, monkeypatch,
                                                       mongo_settings, capsys):
    seed(fake_cvat, "gt_val_FieldData_20200508")
    seed(fake_cvat, "gt_train_FieldData_20200508")
    with pytest.raises(sync.SyncError, match=r"no task named 'gt_val_FieldData_2020058' \(did you mean "
                                             r"'gt_val_FieldData_20200508'"):
        sync.plan_sync(session, mongo_db, names=["gt_val_FieldData_2020058"])
    for key, value in fake_cvat.env.items():
        monkeypatch.setenv(key, value)
    settings = write_settings(tmp_path, mongo_settings(mongo_db.name))
    assert obdb_main(["sync", "-f", str(settings), "--task", "gt_val_FieldData_20200508", "--task", "nope",
                      "--progress", "false"]) == 2
    assert "no task named 'nope'" in capsys.readouterr().err
    assert mongo_db.tasks.count_documents({}) == 0  # nothing synced: the plan failed first


def test_the_request_count_is_exact(fake_cvat, mongo_db, mongo_settings, tmp_path, monkeypatch, capsys):
    """Login, version check and listings count too (the summary once said 0 when 3 were made)."""
    for key, value in fake_cvat.env.items():
        monkeypatch.setenv(key, value)
    settings = write_settings(tmp_path, mongo_settings(mongo_db.name))
    start = len(fake_cvat.requests)
    assert obdb_main(["sync", "-f", str(settings), "--progress", "false"]) == 0
    made = [p for _m, p in fake_cvat.requests[start:] if not p.startswith("/api/auth/logout")]
    assert len(made) >= 3 and f"; {len(made)} CVAT requests" in capsys.readouterr().out
    seed(fake_cvat, "gt_a")
    for extra in (["--dry-run"], []):
        start = len(fake_cvat.requests)
        assert obdb_main(["sync", "-f", str(settings), "--progress", "false", *extra]) == 0
        made = [p for _m, p in fake_cvat.requests[start:] if not p.startswith("/api/auth/logout")]
        assert f"; {len(made)} CVAT requests" in capsys.readouterr().out


def test_an_unreachable_cvat_is_exit_3(fake_cvat, mongo_db, mongo_settings, tmp_path, monkeypatch, capsys):
    for key, value in fake_cvat.env.items():
        monkeypatch.setenv(key, value)
    settings = write_settings(tmp_path, mongo_settings(mongo_db.name))
    data = json.loads(settings.read_text())
    data["data"]["cvat"] = {"retries": 1}
    settings.write_text(json.dumps(data))
    fake_cvat.fail("GET", r"^/api/tasks/?$", status=503, times=50)
    assert obdb_main(["sync", "-f", str(settings), "--progress", "false"]) == 3
    assert "HTTP 503 while listing tasks" in capsys.readouterr().err
    fake_cvat.stop()
    assert obdb_main(["sync", "-f", str(settings), "--progress", "false"]) == 3
    assert "did not answer" in capsys.readouterr().err
