"""Pushing review problems to CVAT as ``source=auto`` shapes (auto_annotate's write path), against
the fake CVAT server."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest

from obdb.records import ClassMap, ImageRecord
from obdb.review import rank_problems
from obdb.review.cvat_push import review_shapes
from obdb.review.report import problem_rows

CLASSES = ClassMap(("red", "blue"))
TASK = "gt_train_v0"


def _review_rows() -> list[dict[str, Any]]:
    """Frame 0: a red-labelled box the model calls blue, and an unlabelled red object; frame 1: a
    red box the model places 10 px to the right (IoU 0.5)."""
    records = [ImageRecord(f"{TASK}/f0.png", Path("/x/f0.png"), 100, 100, [[60, 60, 90, 90]], ["red"], task=TASK,
                           frame=0),
               ImageRecord(f"{TASK}/f1.png", Path("/x/f1.png"), 100, 100, [[10, 10, 40, 40]], ["red"], task=TASK,
                           frame=1)]
    predictions = [{"boxes": np.array([[60, 60, 90, 90], [5, 5, 30, 30]], np.float32),
                    "scores": np.array([0.9, 0.8], np.float32), "labels": np.array([2, 1])},
                   {"boxes": np.array([[20, 10, 50, 40]], np.float32), "scores": np.array([0.9], np.float32),
                    "labels": np.array([1])}]
    return problem_rows(rank_problems(records, predictions, CLASSES), records)


def _task(fake: Any) -> int:
    return fake.add_task(TASK, ["red", "blue"], [("f0.png", 100, 100), ("f1.png", 100, 100)], shapes=[
        {"type": "rectangle", "frame": 0, "label": "red", "points": [60, 60, 90, 90], "source": "manual"},
        {"type": "rectangle", "frame": 1, "label": "red", "points": [10, 10, 40, 40], "source": "manual"}])


def _shapes(fake: Any, task_id: int) -> list[tuple]:
    task = fake.tasks[task_id]
    labels = {label["id"]: label for label in task.labels}
    out = []
    for shape in fake.annotations(task_id)["shapes"]:
        label = labels[shape["label_id"]]
        names = {a["id"]: a["name"] for a in label["attributes"]}
        out.append((shape["frame"], label["name"], tuple(round(p, 2) for p in shape["points"]), shape["source"],
                    tuple(sorted((names[a["spec_id"]], a["value"]) for a in shape["attributes"]))))
    return sorted(out)


def test_review_shapes_propose_the_fix() -> None:
    rows = _review_rows()
    assert [(r["kind"], r["score"]) for r in rows] == [("wrong_class", pytest.approx(0.9)),
                                                      ("mislocated", pytest.approx(0.45)),
                                                      ("missing", pytest.approx(0.4))]
    spurious = {**rows[0], "kind": "spurious", "predicted_label": None, "predicted_box": None}
    elsewhere = {**rows[0], "task": "", "frame": None}
    shapes, skipped = review_shapes([*rows, spurious, elsewhere])
    assert skipped == {f"spurious:{TASK}": 1, "no_task": 1}
    assert [(s["frame"], s["label"], s["points"], s["source"], s["attributes"]) for s in shapes[TASK]] == [
        (0, "blue", [60, 60, 90, 90], "auto", {"review": "unreviewed", "score": "0.9000"}),  # relabel
        (1, "red", [20, 10, 50, 40], "auto", {"review": "unreviewed", "score": "0.4500"}),   # better placement
        (0, "red", [5, 5, 30, 30], "auto", {"review": "unreviewed", "score": "0.4000"})]     # the unlabelled object


def test_push_to_cvat_adds_auto_shapes_once(fake_cvat, settings_file: Callable[..., Path], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from obdb.cli.review import push
    from obdb.settings import load_settings

    task_id = _task(fake_cvat)
    before = _shapes(fake_cvat, task_id)
    review = tmp_path / "review" / "review.json"
    review.parent.mkdir()
    review.write_text(json.dumps({"format": "obdb-review", "problems": _review_rows()}))
    for key, value in fake_cvat.env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(settings_file())

    push(settings, review, top=10, dry_run=True, progress=False)
    assert "DRY RUN" in capsys.readouterr().out
    assert _shapes(fake_cvat, task_id) == before  # a dry run writes nothing

    push(settings, review, top=2, dry_run=False, progress=False)  # only the two most suspicious
    auto = [s for s in _shapes(fake_cvat, task_id) if s[3] == "auto"]
    assert auto == [(0, "blue", (60.0, 60.0, 90.0, 90.0), "auto", (("review", "unreviewed"), ("score", "0.9000"))),
                    (1, "red", (20.0, 10.0, 50.0, 40.0), "auto", (("review", "unreviewed"), ("score", "0.4500")))]
    assert [s for s in _shapes(fake_cvat, task_id) if s[3] != "auto"] == before  # human shapes untouched
    assert list((review.parent / "backups").iterdir())  # the task was backed up before the write

    push(settings, review, top=10, dry_run=False, progress=False)  # a rerun adds only what is new
    assert len([s for s in _shapes(fake_cvat, task_id) if s[3] == "auto"]) == 3


def test_push_to_an_unknown_task_fails_cleanly(fake_cvat, settings_file: Callable[..., Path], tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from obdb.cli.review import push
    from obdb.pipeline import RunError
    from obdb.settings import load_settings

    review = tmp_path / "review.json"
    review.write_text(json.dumps({"problems": _review_rows()}))
    for key, value in fake_cvat.env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(RunError, match=f"no CVAT task named '{TASK}'"):
        push(load_settings(settings_file()), review, top=10, dry_run=False, progress=False)
