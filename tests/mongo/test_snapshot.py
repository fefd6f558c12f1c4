"""``obdb db export|import``: the original system's mongoexport files load, our snapshots are
byte-stable, bad lines are reported with file and line, and imports are idempotent."""
from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest
from bson import ObjectId

from helpers.original_export import write_original_export
from helpers.servers import free_port
from helpers.tiny_data import make_tiny_dataset
from obdb.cli.main import main as obdb
from obdb.mongo.layout import find_tasks, write_task
from obdb.mongo.snapshot import SnapshotError, export_snapshot, import_snapshot, snapshot_files

from helpers.reference_reader import read_task

FILES = ("tasks.json", "meta.json", "annotation_data.json")


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """mongoexport files of the tiny data set (4 tasks, 12 frames) in the original layout."""
    data = make_tiny_dataset(tmp_path_factory.mktemp("tiny"))
    return write_original_export(sorted((data / "annotations").glob("*.xml")),
                                 tmp_path_factory.mktemp("original_export"))


def db_args(mongo_settings, db, folder: Path) -> list[str]:
    """``obdb db`` options reaching the test database through a settings file."""
    settings = {"variants": ["resnet18"], "data": {"source": "mongo", "mongo": mongo_settings(db.name)}}
    path = folder / "settings.json"
    path.write_text(json.dumps(settings))
    return ["-f", str(path), "--progress", "false"]


def test_original_files_import_and_export_byte_identical(original, mongo_db, mongo_settings, tmp_path,
                                                         capsys) -> None:
    opts = db_args(mongo_settings, mongo_db, tmp_path)
    assert obdb(["db", "import", str(original), *opts]) == 0
    assert "tasks 4" in capsys.readouterr().out
    assert mongo_db.annotation_data.count_documents({}) == sum(
        1 for _ in (original / "annotation_data.json").open())
    doc = mongo_db.tasks.find_one({"name": "gt_train_video00"})
    assert doc["created_date"] == datetime(2023, 5, 8, 12, 29, 12, 123000, tzinfo=timezone.utc)
    assert isinstance(doc["_id"], ObjectId)

    assert obdb(["db", "export", "--out", str(tmp_path / "snap"), *opts]) == 0
    for name in FILES:  # what mongoexport wrote is what we write
        assert (tmp_path / "snap" / name).read_bytes() == (original / name).read_bytes(), name


def test_snapshot_round_trip_is_byte_stable(original, mongo_db, tmp_path) -> None:
    import_snapshot(mongo_db, snapshot_files([original]), progress=False)
    write_task(mongo_db, {"name": "Ünïcode task", "labels": [], "updated_date": datetime.now(timezone.utc)},
               [{"name": "a b.png", "width": 10, "height": 10}],
               [{"shape_types": "polygon", "points": [1.5, 2.25, 3, 4, 0.1, 9], "frame": 0,
                 "object_class": "weed", "occluded": True, "img_path": "a b.png", "attributes": {"x": None}}])
    first = tmp_path / "first"
    assert set(export_snapshot(mongo_db, first, progress=False)) == {"tasks", "meta", "annotation_data"}
    assert sorted(p.name for p in first.iterdir()) == sorted(FILES)
    client = mongo_db.client
    other = client[mongo_db.name + "_b"]
    try:
        import_snapshot(other, snapshot_files([first]), progress=False)
        export_snapshot(other, tmp_path / "second", progress=False)
    finally:
        client.drop_database(other.name)
    for name in FILES:
        assert (first / name).read_bytes() == (tmp_path / "second" / name).read_bytes(), name


def test_import_is_idempotent_and_accepts_json_arrays(original, mongo_db, tmp_path) -> None:
    data = make_tiny_dataset(tmp_path / "tiny")
    array_dir = write_original_export(sorted((data / "annotations").glob("*.xml")), tmp_path / "arr", as_array=True)
    assert (array_dir / "tasks.json").read_text().startswith("[{")
    counts = import_snapshot(mongo_db, snapshot_files([array_dir]), progress=False)
    snapshot = {c: list(mongo_db[c].find().sort("_id", 1)) for c in ("tasks", "meta", "annotation_data")}
    assert import_snapshot(mongo_db, snapshot_files([array_dir]), progress=False) == counts
    assert {c: list(mongo_db[c].find().sort("_id", 1)) for c in snapshot} == snapshot
    # the same data as JSON lines (same _ids) changes nothing either
    import_snapshot(mongo_db, snapshot_files([original]), progress=False)
    assert {c: list(mongo_db[c].find().sort("_id", 1)) for c in snapshot} == snapshot


def test_malformed_line_names_file_and_line(original, mongo_db, mongo_settings, tmp_path, capsys) -> None:
    bad = tmp_path / "annotation_data.json"
    lines = (original / "annotation_data.json").read_text().splitlines()
    lines[4] = lines[4][:-5]  # cut off the end of the fifth document
    bad.write_text("\n".join(lines) + "\n")
    assert obdb(["db", "import", str(original / "tasks.json"), str(bad),
                 *db_args(mongo_settings, mongo_db, tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:5: malformed JSON line" in err
    assert mongo_db.tasks.count_documents({}) == 0  # nothing written when a file is bad


@pytest.mark.parametrize("change, message", [
    (lambda d: d.pop("frame"), "'frame' must be a whole number"),
    (lambda d: d.update(points="1,2,3,4"), "'points' must be a flat list of numbers"),
    (lambda d: d.update(task_name=""), "annotation_data document needs a non-empty string 'task_name'"),
])
def test_invalid_document_names_file_and_line(original, tmp_path, change, message) -> None:
    docs = [json.loads(x) for x in (original / "annotation_data.json").read_text().splitlines()]
    change(docs[2])
    bad = tmp_path / "annotation_data.json"
    bad.write_text("".join(json.dumps(d) + "\n" for d in docs))
    with pytest.raises(SnapshotError, match=f"{bad}:3: {message}"):
        import_snapshot(None, snapshot_files([bad]), progress=False)  # type: ignore[arg-type]


def test_array_errors_name_the_line(tmp_path) -> None:
    bad = tmp_path / "meta.json"
    bad.write_text('[\n{"task_name": "a", "frames": []},\n{"task_name": "b", "frames": [{"width": 3}]}\n]\n')
    with pytest.raises(SnapshotError, match=r"meta.json:3: frames\[0\] needs a string 'name'"):
        import_snapshot(None, snapshot_files([bad]), progress=False)  # type: ignore[arg-type]
    bad.write_text('[\n{"task_name": "a", "frames": []}\n{"task_name": "b", "frames": []}]')
    with pytest.raises(SnapshotError, match=r"meta.json:3: expected ',' or ']'"):
        import_snapshot(None, snapshot_files([bad]), progress=False)  # type: ignore[arg-type]


def test_duplicate_task_in_one_file_and_unknown_file_names(tmp_path) -> None:
    tasks = tmp_path / "tasks.json"
    tasks.write_text('{"name": "a"}\n{"name": "b"}\n{"name": "a"}\n')
    with pytest.raises(SnapshotError, match=r"tasks.json:3: task 'a' already has a tasks document at .*tasks.json:1"):
        import_snapshot(None, snapshot_files([tasks]), progress=False)  # type: ignore[arg-type]
    other = tmp_path / "labels.json"
    other.write_text("{}\n")
    with pytest.raises(SnapshotError, match="cannot tell the collection"):
        snapshot_files([other])


def test_import_replaces_a_task_written_under_another_id(original, mongo_db) -> None:
    """A task written by sync, then imported from an original export: one task, the imported shapes."""
    write_task(mongo_db, {"name": "gt_train_video01", "labels": []}, [{"name": "x.png", "width": 1, "height": 1}],
               [{"shape_types": "rectangle", "points": [0, 0, 1, 1], "frame": 0, "object_class": "old"}])
    import_snapshot(mongo_db, snapshot_files([original]), progress=False)
    assert mongo_db.tasks.count_documents({"name": "gt_train_video01"}) == 1
    stored = read_task(mongo_db, find_tasks(mongo_db, ["gt_train_video01"])[0])
    assert stored.shapes and "old" not in {s["object_class"] for s in stored.shapes}
    assert stored.frames[0]["name"] == "video01_frame0000.png"


def test_drop_and_task_filtered_export(original, mongo_db, tmp_path) -> None:
    mongo_db.annotation_data.insert_one({"task_name": "stray", "frame": 0})
    write_task(mongo_db, {"name": "written"}, [{"name": "x.png"}], [{"frame": 0, "object_class": "a"}])
    import_snapshot(mongo_db, snapshot_files([original]), drop=True, progress=False)
    assert mongo_db.annotation_data.count_documents({"task_name": "stray"}) == 0
    export_snapshot(mongo_db, tmp_path / "one", ["gt_train_video02"], progress=False)
    names = {json.loads(x)["task_name"] for x in (tmp_path / "one" / "annotation_data.json").open()}
    assert names == {"gt_train_video02"}
    assert [json.loads(x)["name"] for x in (tmp_path / "one" / "tasks.json").open()] == ["gt_train_video02"]


def test_server_down_is_a_clear_cli_error(original, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("MONGODB_URI", raising=False)  # it would win over the settings file
    settings = tmp_path / "s.json"
    settings.write_text(json.dumps({"variants": ["resnet18"], "data": {"mongo": {
        "host": "127.0.0.1", "port": free_port(), "timeout_s": 1.2, "retries": 1}}}))
    code = obdb(["db", "import", str(original), "-f", str(settings), "--progress", "false"])
    assert code == 3  # a service not reachable after retries (the exit-code table)
    assert "is not reachable after 2 attempt(s)" in capsys.readouterr().err


def test_export_of_an_unknown_task_fails_and_keeps_the_old_snapshot(original, mongo_db, mongo_settings, tmp_path,
                                                                    capsys) -> None:
    import_snapshot(mongo_db, snapshot_files([original]), progress=False)
    out = tmp_path / "snapshot"
    opts = db_args(mongo_settings, mongo_db, tmp_path)
    assert obdb(["db", "export", "--out", str(out), *opts]) == 0
    before = {name: (out / name).read_bytes() for name in FILES}
    assert obdb(["db", "export", "--out", str(out), "--task", "gt_train_video00", "--task", "gt_train_video0",
                 *opts]) == 2
    assert "no task named 'gt_train_video0'" in capsys.readouterr().err  # a prefix is not a match
    assert {name: (out / name).read_bytes() for name in FILES} == before


class CountingText(str):
    """Text that adds up how many characters its ``count`` calls scan."""

    scanned = 0

    def count(self, sub, start=None, end=None):  # type: ignore[override]
        begin = 0 if start is None else start
        stop = len(self) if end is None else min(end, len(self))
        self.scanned += max(0, stop - begin)
        return super().count(sub, begin, stop)


def test_json_array_is_read_in_one_pass(tmp_path) -> None:
    """Line numbers of a --jsonArray file are counted once over the text (they were counted from the
    start for every item: 8 000 items took 21 s, the same data as JSON lines 0.5 s)."""
    from obdb.mongo import snapshot

    n = 3000
    text = ("[\n" + ",\n".join(json.dumps({"task_name": "t", "frame": i, "points": [i, 1, 2, 3]}) for i in range(n))
            + "\n]\n")
    counting = CountingText(text)
    path = tmp_path / "annotation_data.json"
    items = list(snapshot._read_array(path, counting))
    assert [item.doc["frame"] for item in items] == list(range(n))
    assert items[0].where == f"{path}:2" and items[-1].where == f"{path}:{n + 1}"  # line numbers still right
    assert counting.scanned <= len(text)  # each character at most once, not once per item
    bad = CountingText(text.replace('"frame": 2999', '"frame": 2999,,'))
    with pytest.raises(SnapshotError, match=f"annotation_data.json:{n + 1}: malformed JSON in array item {n - 1}"):
        list(snapshot._read_array(path, bad))
