"""The one preparation stage (load → lint → class map → split) that the runner, review, obdb split
and scoring share: new objects at every step, and the same data whichever caller asks."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

from obdb import scoring
from obdb.prepare import keep_class_map, load_annotations, prepare
from obdb.records import AnnotationSet, ClassMap
from obdb.settings import load_settings


def test_steps_return_new_objects(settings_file: Callable[..., Path]) -> None:
    path = settings_file()
    raw = json.loads(path.read_text())
    raw["data"]["excluded_frames"] = ["video00_frame0000.png"]
    path.write_text(json.dumps(raw))
    settings = load_settings(path)
    loaded = load_annotations(settings, progress=False)
    assert len(loaded.records) == 11 and "gt_train_video00/video00_frame0000.png" not in {
        r.image_id for r in loaded.records}
    before = [(r.image_id, list(r.labels), r.boxes.copy()) for r in loaded.records]
    kept = keep_class_map(loaded, ClassMap(("red",)))
    assert isinstance(kept, AnnotationSet) and kept is not loaded
    assert {label for r in kept.records for label in r.labels} == {"red"}
    after = [(r.image_id, list(r.labels), r.boxes) for r in loaded.records]
    assert [(i, labels) for i, labels, _ in after] == [(i, labels) for i, labels, _ in before]
    assert all((a == b).all() for (_, _, a), (_, _, b) in zip(after, before))


def test_write_false_writes_no_report_and_makes_the_same_split(settings_file: Callable[..., Path]) -> None:
    settings = load_settings(settings_file())
    save_dir = Path(settings.save_dir)
    quiet = prepare(settings, progress=False, write=False)
    assert quiet.split is not None and quiet.split_file is None
    assert not (save_dir / "splits").exists() and not (save_dir / "lint").exists()  # nothing written
    run = prepare(settings, progress=False)
    assert run.split is not None and run.split.hash == quiet.split.hash
    assert run.split_file == save_dir / "splits" / f"{run.split.hash}.json" and run.split_file.is_file()
    assert (save_dir / "lint" / "report.json").is_file()
    assert [r.image_id for r in run.val] == [r.image_id for r in quiet.val] and run.val
    assert sorted(r.image_id for r in run.train + run.val) == sorted(r.image_id for r in run.records)
    assert prepare(settings, progress=False, split=False).split is None


def test_scoring_takes_the_runs_prepared_split(settings_file: Callable[..., Path]) -> None:
    """Scoring recomputes a lost manifest through the same stage, without saving it."""
    settings = load_settings(settings_file())
    run = prepare(settings, progress=False)
    assert run.split_file is not None
    header = {"class_map": run.class_map.to_json(), "extra": {"split_file": "splits/gone.json",
                                                              "split_hash": run.split.hash}}
    records = scoring.records_from_run(settings, header, "val", progress=False)
    assert [r.image_id for r in records] == [r.image_id for r in run.val]
    assert sorted(p.name for p in (Path(settings.save_dir) / "splits").glob("*.json")) == [run.split_file.name]
