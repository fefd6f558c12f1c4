"""Per-box results in MongoDB: documents, replacement on re-evaluation, "most FP first" as one
query, and test_model on a run whose data came from MongoDB."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from helpers.tiny_data import make_tiny_dataset, tiny_settings
from obdb.evaluation import match_records
from obdb.mongo.results import COLLECTION, store_box_results
from obdb.records import ClassMap, ImageRecord

CLASSES = ClassMap(("red", "blue"))


def _case() -> tuple[list[ImageRecord], list[dict]]:
    records = [ImageRecord(f"gt_train_v0/f{i}.png", Path(f"/data/f{i}.png"), 100, 100, [[10, 10, 40, 40]], ["red"],
                           task="gt_train_v0", frame=i) for i in range(3)]
    predictions = [{"boxes": np.array([[10, 10, 40, 40]] + [[50, 50, 60, 60]] * i, np.float32),
                    "scores": np.array([0.9] + [0.8] * i, np.float32), "labels": np.array([1] + [2] * i)}
                   for i in range(3)]  # image i has i false positives
    return records, predictions


def _aggregate_fp(collection) -> list[tuple[str, int]]:
    pipeline = [{"$match": {"kind": "FP"}}, {"$group": {"_id": "$image_id", "fp": {"$sum": 1}}},
                {"$sort": {"fp": -1}}]
    return [(d["_id"], d["fp"]) for d in collection.aggregate(pipeline)]


def test_store_box_results(mongo_db) -> None:
    records, predictions = _case()
    rows = match_records(records, predictions, CLASSES).boxes
    kwargs = dict(model_id="abc", model="m.pt", variant="resnet18", split="val", evaluated="2024-01-01T00:00:00")
    assert store_box_results(mongo_db, rows, records, **kwargs) == len(rows) == 6
    collection = mongo_db[COLLECTION]
    docs = list(collection.find({}, {"_id": 0}).sort([("image_id", 1), ("kind", 1)]))
    assert len(docs) == 6
    first = docs[0]
    assert (first["task_name"], first["frame"], first["img_path"]) == ("gt_train_v0", 0, "f0.png")
    assert (first["kind"], first["object_class"], first["iou"], first["model_id"]) == ("TP", "red", 1.0, "abc")
    assert first["pred_points"] == [10, 10, 40, 40] and first["gt_points"] == [10, 10, 40, 40]
    assert _aggregate_fp(collection) == [("gt_train_v0/f2.png", 2), ("gt_train_v0/f1.png", 1)]

    # the same model evaluated again replaces its documents; another model's stay
    store_box_results(mongo_db, rows, records, **{**kwargs, "model_id": "other"})
    first_id = collection.find_one({"model_id": "abc"})["evaluation_id"]
    assert store_box_results(mongo_db, rows[:2], records, **kwargs) == 2
    assert collection.count_documents({"model_id": "abc"}) == 2
    assert collection.find_one({"model_id": "abc"})["evaluation_id"] != first_id
    assert collection.count_documents({"model_id": "other"}) == 6


def test_test_model_on_mongo_data_stores_results(mongo_db, mongo_settings, tmp_path: Path) -> None:
    import torch

    from helpers.original_export import write_original_export
    from obdb.cli.test_model import main
    from obdb.models import ModelSpec, build_detector, save_model
    from obdb.mongo.snapshot import import_snapshot, snapshot_files

    data = make_tiny_dataset(tmp_path / "data", videos=2, frames=2)
    export = write_original_export(sorted((data / "annotations").glob("*.xml")), tmp_path / "export")
    import_snapshot(mongo_db, snapshot_files([export]), progress=False)
    raw = tiny_settings(data, tmp_path)
    raw["data"] = {"images_dir": str(data / "images"), "source": "mongo", "mongo": mongo_settings(mongo_db.name)}
    raw["annotations_list"] = ["gt_train_video00", "gt_train_video01"]
    settings = tmp_path / "settings.json"
    settings.write_text(json.dumps(raw))
    torch.manual_seed(0)
    model, spec = build_detector(ModelSpec(backbone="resnet18", num_classes=3, min_size=96, max_size=96))
    model.roi_heads.score_thresh = 0.0
    save_model(tmp_path / "model.pt", model, spec, CLASSES, extra={"variant": "resnet18"})

    out = tmp_path / "report"
    argv = ["-m", str(tmp_path / "model.pt"), "-f", str(settings), "--split", "all", "--out", str(out),
            "--score-threshold", "0", "--no-plots", "--device", "cpu", "--progress", "false"]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    stored = metrics["stored"]
    assert stored["collection"] == COLLECTION and len(stored["model_id"]) == 16
    rows = (out / "per_box.csv").read_text().splitlines()[1:]
    assert stored["documents"] == len(rows) == mongo_db[COLLECTION].count_documents({}) > 0
    doc = mongo_db[COLLECTION].find_one({"kind": "FN"}) or mongo_db[COLLECTION].find_one({})
    assert doc["task_name"] in ("gt_train_video00", "gt_train_video01") and doc["split"] == "all"
    assert doc["img_path"].startswith("video0") and doc["model_id"] == stored["model_id"]
    # --store-results false leaves the collection alone
    mongo_db[COLLECTION].delete_many({})
    assert main([*argv, "--store-results", "false"]) == 0
    assert mongo_db[COLLECTION].count_documents({}) == 0
    assert "stored" not in json.loads((out / "metrics.json").read_text())


@pytest.mark.parametrize("flag", ["maybe"])
def test_store_results_flag_is_a_boolean(flag: str, tmp_path: Path) -> None:
    from obdb.cli.test_model import main

    with pytest.raises(SystemExit):
        main(["-m", str(tmp_path / "m.pt"), "--store-results", flag])
