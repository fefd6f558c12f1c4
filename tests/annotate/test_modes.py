"""Every mode end to end through the real cvat-sdk against the fake CVAT server.

The model is a :class:`FixedDetector` behind the real :class:`ModelDetectionFunction`, so each
assertion follows from predictions the test chose (frames are told apart by a key pixel).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from helpers.annotate import XML, FixedDetector, key_image
from obdb.annotate.function import ModelDetectionFunction
from obdb.annotate.modes import annotate_folder, annotate_tasks, find_missing, set_status
from obdb.cvat.push import RunOptions
from obdb.annotate.uploads import upload_xml
from obdb.cvat import AnnotateError, CvatCredentials, CvatError, connect, read_backup
from obdb.records import ClassMap

CLASSES = ClassMap(("red", "blue"))


@pytest.fixture()
def session(fake_cvat):
    s = connect(CvatCredentials.from_env(fake_cvat.env), retries=1, backoff_s=0.01)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture()
def options(tmp_path: Path) -> RunOptions:
    return RunOptions(out_dir=tmp_path / "out", progress=False)


def function(outputs: dict[int, list], threshold: float = 0.5) -> ModelDetectionFunction:
    return ModelDetectionFunction(FixedDetector(outputs), CLASSES, threshold=threshold, batch_size=2, progress=False)


def readable(fake, task_id: int, shapes: list[dict[str, Any]] | None = None) -> list[tuple]:
    """Shapes as (frame name, label name, type, points, source, {attribute name: value}), sorted."""
    task = fake.tasks[task_id]
    labels = {label["id"]: label for label in task.labels}
    out = []
    for shape in fake.annotations(task_id)["shapes"] if shapes is None else shapes:
        label = labels[shape["label_id"]]
        names = {a["id"]: a["name"] for a in label["attributes"]}
        out.append((task.frames[shape["frame"]].name, label["name"], shape["type"],
                    tuple(round(p, 2) for p in shape["points"]), shape["source"],
                    tuple(sorted((names[a["spec_id"]], a["value"]) for a in shape["attributes"]))))
    return sorted(out)


def human_dump(fake, task_id: int) -> str:
    """JSON of every human object of a task (shapes not from the model, all tracks, all tags)."""
    data = fake.annotations(task_id)
    human = {"shapes": sorted((s for s in data["shapes"] if s["source"] != "auto"), key=lambda s: s["id"]),
             "tracks": sorted(data["tracks"], key=lambda t: t["id"]), "tags": data["tags"]}
    return json.dumps(human, sort_keys=True)


def writes(fake, start: int) -> list[tuple[str, str]]:
    """Requests since ``start`` that could change something (login aside)."""
    return [(m, p.rstrip("/")) for m, p in fake.requests[start:] if m not in ("GET", "HEAD") and "/auth/" not in p]


def auto(frame: str, label: str, box: tuple, score: float) -> tuple:
    return (frame, label, "rectangle", tuple(float(v) for v in box), "auto",
            (("review", "unreviewed"), ("score", f"{score:.4f}")))


# --------------------------------------------------------------------------------------- mode 1


def test_folder_creates_a_task_and_a_rerun_adds_nothing(session, fake_cvat, options, tmp_path: Path) -> None:
    folder = tmp_path / "field a"
    for key in (1, 2, 3):
        key_image(folder / f"img{key}.png", key)
    outputs = {1: [("red", 0.9, (1, 2, 11, 12)), ("blue", 0.3, (5, 5, 9, 9))],
               2: [("blue", 0.8, (10, 10, 30, 30)), ("red", 0.55, (0, 0, 4, 4))], 3: []}
    options.chunk_size = 2
    start = len(fake_cvat.requests)
    (plan,) = annotate_folder(session, function(outputs), folder, options)
    task_id = fake_cvat.task_id("field a")
    assert plan.task_id == task_id and plan.create and plan.added == 3
    task = fake_cvat.tasks[task_id]
    assert [f.name for f in task.frames] == ["img1.png", "img2.png", "img3.png"]
    for label in task.labels:  # labels from the class map, each with the review attributes
        attrs = {a["name"]: a for a in label["attributes"]}
        assert attrs["review"]["input_type"] == "select" and attrs["review"]["default_value"] == "n/a"
        assert attrs["score"]["input_type"] == "text"
    assert [label["name"] for label in task.labels] == ["red", "blue"]
    assert readable(fake_cvat, task_id) == sorted([
        auto("img1.png", "red", (1, 2, 11, 12), 0.9), auto("img2.png", "blue", (10, 10, 30, 30), 0.8),
        auto("img2.png", "red", (0, 0, 4, 4), 0.55)])
    assert writes(fake_cvat, start).count(("PATCH", f"/api/tasks/{task_id}/annotations")) == 2  # 3 shapes / 2
    before = fake_cvat.annotations(task_id)

    (again,) = annotate_folder(session, function(outputs), folder, options)
    assert (again.task_id, again.create, again.added, again.duplicates, again.kept) == (task_id, False, 0, 3, 3)
    assert fake_cvat.annotations(task_id) == before
    assert len(fake_cvat.tasks) == 1


# --------------------------------------------------------------------------------------- mode 2


def seed_ground_truth(fake, tmp_path: Path, name: str = "gt a") -> int:
    """Two frames (keys 1, 2) with human shapes of several kinds, a track and a tag; labels
    without the review attributes, as tasks made by people have them."""
    frames = [key_image(tmp_path / "frames" / f"{name}-{k}.png", k) for k in (1, 2)]
    labels = ["red", {"name": "blue", "attributes": [{"name": "kind", "input_type": "text", "values": [""]}]}]
    return fake.add_task(name, labels, frames, shapes=[
        {"type": "rectangle", "frame": 0, "label": "red", "points": [0, 0, 20, 20], "source": "manual"},
        {"type": "rectangle", "frame": 0, "label": "blue", "points": [40, 30, 60, 46], "source": "semi-auto",
         "occluded": True},
        {"type": "polygon", "frame": 1, "label": "blue", "points": [5, 5, 25, 5, 25, 25], "source": "manual"},
    ], tracks=[{"label": "red", "frame": 0, "source": "manual", "shapes": [
        {"type": "rectangle", "frame": 1, "points": [30, 0, 40, 10], "outside": False}]}],
        tags=[{"label": "red", "frame": 1}])


def test_tasks_adds_predictions_keeps_humans_backs_up_and_patches_labels(session, fake_cvat, options,
                                                                         tmp_path: Path) -> None:
    task_id = seed_ground_truth(fake_cvat, tmp_path)
    other = seed_ground_truth(fake_cvat, tmp_path, "gt a_b")  # must not be touched
    human, other_before = human_dump(fake_cvat, task_id), fake_cvat.annotations(other)
    before = fake_cvat.read_annotations(task_id)  # the backup holds what the API answered
    outputs = {1: [("red", 0.9, (0, 0, 20, 20)), ("blue", 0.7, (2, 30, 12, 40))], 2: [("red", 0.6, (50, 5, 60, 15))]}
    (plan,) = annotate_tasks(session, function(outputs), options, names=["gt a"])
    # the prediction equal to the human red box is a duplicate; the other two are added
    assert (plan.added, plan.duplicates, plan.replaced) == (2, 1, 0)
    assert [a for a in readable(fake_cvat, task_id) if a[4] == "auto"] == sorted([
        auto("gt a-1.png", "blue", (2, 30, 12, 40), 0.7), auto("gt a-2.png", "red", (50, 5, 60, 15), 0.6)])
    assert human_dump(fake_cvat, task_id) == human
    assert fake_cvat.annotations(other) == other_before
    for label in fake_cvat.tasks[task_id].labels:  # review attributes added; "kind" kept
        names = [a["name"] for a in label["attributes"]]
        assert {"review", "score"} <= set(names)
    assert [a["name"] for a in fake_cvat.tasks[task_id].labels[1]["attributes"]][0] == "kind"
    backups = list((options.out_dir / "backups").glob(f"{task_id}-*.json"))
    assert len(backups) == 1 and read_backup(backups[0]) == before

    # a rerun on the one task adds nothing
    (again,) = annotate_tasks(session, function(outputs), options, names=["gt a"])
    assert (again.added, again.duplicates) == (0, 3)
    assert len(fake_cvat.annotations(task_id)["shapes"]) == 5


def test_replace_swaps_only_unreviewed_auto_shapes(session, fake_cvat, options, tmp_path: Path) -> None:
    task_id = seed_ground_truth(fake_cvat, tmp_path)
    human = human_dump(fake_cvat, task_id)
    first = {1: [("red", 0.9, (60, 0, 63, 3)), ("blue", 0.9, (50, 0, 55, 5))], 2: [("red", 0.9, (1, 40, 9, 47))]}
    annotate_tasks(session, function(first), options, names=["gt a"])
    # an annotator accepts the blue one
    task = fake_cvat.tasks[task_id]
    blue = next(label for label in task.labels if label["name"] == "blue")
    review_id = next(a["id"] for a in blue["attributes"] if a["name"] == "review")
    accepted = next(s for s in fake_cvat.annotations(task_id)["shapes"]
                    if s["label_id"] == blue["id"] and s["source"] == "auto")
    fake_cvat.set_attribute(task_id, accepted["id"], review_id, "accepted")

    second = {1: [("red", 0.8, (60, 0, 63, 3))], 2: [("blue", 0.8, (30, 30, 40, 40))]}
    (plan,) = annotate_tasks(session, function(second), options, names=["gt a"])
    # frame 1 red: the same box as before (kept, no churn); frame 2 red: unreviewed and gone → deleted;
    # the accepted blue stays; frame 2 blue is new
    assert (plan.added, plan.duplicates, plan.replaced) == (1, 1, 0)  # without --replace nothing goes
    options.replace = True
    (plan,) = annotate_tasks(session, function(second), options, names=["gt a"])
    assert (plan.added, plan.duplicates, plan.replaced) == (0, 2, 1)
    autos = [a[:4] for a in readable(fake_cvat, task_id) if a[4] == "auto"]
    assert autos == sorted([("gt a-1.png", "red", "rectangle", (60.0, 0.0, 63.0, 3.0)),
                            ("gt a-1.png", "blue", "rectangle", (50.0, 0.0, 55.0, 5.0)),
                            ("gt a-2.png", "blue", "rectangle", (30.0, 30.0, 40.0, 40.0))])
    assert human_dump(fake_cvat, task_id) == human


def test_a_frame_that_does_not_decode_is_left_out_and_its_shapes_kept(session, fake_cvat, options,
                                                                      tmp_path: Path) -> None:
    """A damaged upload (CVAT serves its bytes as they are) costs its own frame only: ``tasks`` and
    ``missing`` predict the others, name the frame in the plan's notes, and ``--replace`` leaves
    the old auto shape of the frame it could not predict; a task none of whose frames decode stops."""
    frames = [key_image(tmp_path / "f" / "a.png", 1), {"name": "b.png", "width": 64, "height": 48,
                                                       "data": b"<html>502 Bad Gateway</html>"},
              key_image(tmp_path / "f" / "c.png", 3)]
    task_id = fake_cvat.add_task("damaged", ["red", "blue"], frames, shapes=[
        {"type": "rectangle", "frame": 0, "label": "red", "points": [50, 0, 55, 5], "source": "auto"},
        {"type": "rectangle", "frame": 1, "label": "red", "points": [1, 1, 5, 5], "source": "auto"}])
    outputs = {1: [("red", 0.9, (0, 0, 20, 20))], 3: [("blue", 0.8, (30, 30, 40, 40))]}
    options.replace = True
    (plan,) = annotate_tasks(session, function(outputs), options, names=["damaged"])
    assert (plan.added, plan.replaced) == (2, 1)  # frame 0's old auto shape replaced, frame 1's kept
    assert any("left out 1 frame(s) that cannot be decoded" in n and "frame 1:" in n for n in plan.notes), plan.notes
    autos = [a[:4] for a in readable(fake_cvat, task_id) if a[4] == "auto"]
    assert autos == sorted([("a.png", "red", "rectangle", (0.0, 0.0, 20.0, 20.0)),
                            ("b.png", "red", "rectangle", (1.0, 1.0, 5.0, 5.0)),
                            ("c.png", "blue", "rectangle", (30.0, 30.0, 40.0, 40.0))])

    (found,) = find_missing(session, function(outputs), options, min_score=0.5, max_iou=0.3, names=["damaged"])
    assert found.added == 0 and any("frame 1:" in n for n in found.notes)

    fake_cvat.add_task("all damaged", ["red"], [{"name": "x.png", "width": 8, "height": 8, "data": b"\x00" * 10}])
    with pytest.raises(AnnotateError, match=r"none of its 1 frame\(s\) can be decoded: frame 0: cannot identify "
                       r"image file \(10 bytes\)"):
        annotate_tasks(session, function(outputs), options, names=["all damaged"])


# --------------------------------------------------------------------------------------- mode 5


def test_missing_adds_only_confident_predictions_off_the_ground_truth(session, fake_cvat, options,
                                                                      tmp_path: Path) -> None:
    task_id = seed_ground_truth(fake_cvat, tmp_path)
    outputs = {
        1: [("red", 0.9, (0, 0, 20, 20)),      # on the human red box: IoU 1
            ("blue", 0.9, (45, 30, 65, 46)),   # IoU 0.6 with the human blue box
            ("red", 0.8, (25, 0, 35, 10)),     # free: candidate
            ("red", 0.2, (70, 0, 80, 10)),     # free but below -t
            ("blue", 0.7, (10, 10, 30, 30))],  # IoU 100/700 = 0.14 with the red box: candidate at i=0.3
        2: [("red", 0.9, (30, 0, 40, 10)),     # on the track's box (tracks are ground truth too)
            ("blue", 0.6, (6, 6, 24, 24)),     # IoU 0.81 with the polygon's bounding box
            ("blue", 0.95, (50, 30, 60, 40))],  # free: candidate
    }
    human = human_dump(fake_cvat, task_id)
    start = len(fake_cvat.requests)
    (plan,) = find_missing(session, function(outputs), options, min_score=0.5, max_iou=0.3, names=["gt a"])
    assert plan.filtered == 4 and plan.added == 3
    assert [a for a in readable(fake_cvat, task_id) if a[4] == "auto"] == sorted([
        auto("gt a-1.png", "red", (25, 0, 35, 10), 0.8), auto("gt a-1.png", "blue", (10, 10, 30, 30), 0.7),
        auto("gt a-2.png", "blue", (50, 30, 60, 40), 0.95)])
    assert human_dump(fake_cvat, task_id) == human
    assert len(list((options.out_dir / "backups").glob("*.json"))) == 1
    # shapes went up in one request (one chunk), not one per shape
    assert writes(fake_cvat, start).count(("PATCH", f"/api/tasks/{task_id}/annotations")) == 1

    # a rerun proposes the same candidates and adds none of them again
    (again,) = find_missing(session, function(outputs), options, min_score=0.5, max_iou=0.3, names=["gt a"])
    assert (again.added, again.duplicates) == (0, 3)
    assert human_dump(fake_cvat, task_id) == human


# --------------------------------------------------------------------------------------- mode 4


def test_upload_xml_keeps_every_shape_kind(session, fake_cvat, options, tmp_path: Path) -> None:
    images = tmp_path / "images"
    key_image(images / "a.png", 1)
    key_image(images / "sub" / "b.png", 2)  # found by base name too
    (images / "b.png").write_bytes((images / "sub" / "b.png").read_bytes())
    path = tmp_path / "xml" / "f.xml"
    path.parent.mkdir()
    path.write_text(XML)
    (plan,) = upload_xml(session, [path], images, options, prefix="gt_")
    task_id = fake_cvat.task_id("gt_field 7")
    assert plan.added == 4 and any("mask" in note for note in plan.notes)
    task = fake_cvat.tasks[task_id]
    weed = next(label for label in task.labels if label["name"] == "weed")
    species = weed["attributes"][0]
    assert (species["name"], species["input_type"], species["values"]) == ("species", "select", ["thistle", "dock"])
    shapes = {s["type"]: s for s in fake_cvat.annotations(task_id)["shapes"]}
    assert set(shapes) == {"rectangle", "polygon", "points", "ellipse"}
    box = shapes["rectangle"]
    assert box["points"] == [1.5, 2.0, 10.0, 12.25] and box["occluded"] and box["z_order"] == 2
    assert box["rotation"] == 15.0 and box["attributes"] == [{"spec_id": species["id"], "value": "dock"}]
    assert shapes["polygon"]["group"] == 3 and shapes["points"]["source"] == "auto"
    assert shapes["ellipse"]["points"] == [20.0, 20.0, 24.0, 17.0]
    # a rerun adds nothing
    (again,) = upload_xml(session, [path], images, options, prefix="gt_")
    assert (again.added, again.duplicates) == (0, 4) and len(fake_cvat.tasks) == 1


# --------------------------------------------------------------------------------------- mode 6


def test_status_sets_jobs_of_exactly_the_named_tasks(session, fake_cvat, options, tmp_path: Path) -> None:
    a = fake_cvat.add_task("a", ["red"], [("1.png", 8, 8), ("2.png", 8, 8)], segment_size=1)
    ab = fake_cvat.add_task("a_b", ["red"], [("1.png", 8, 8)])
    plans = set_status(session, options, state="completed", stage="acceptance", pattern="a")
    assert [p.task_id for p in plans] == [a]
    assert [(j["stage"], j["state"]) for j in fake_cvat.jobs(a)] == [("acceptance", "completed")] * 2
    assert fake_cvat.jobs(ab)[0]["stage"] == "annotation"
    assert fake_cvat.tasks[a].status == "completed"


# --------------------------------------------------------------------------------------- safety


def test_dry_run_writes_nothing_anywhere(session, fake_cvat, options, tmp_path: Path) -> None:
    task_id = seed_ground_truth(fake_cvat, tmp_path)
    folder = tmp_path / "new folder"
    key_image(folder / "x.png", 1)
    outputs = {1: [("red", 0.9, (25, 0, 35, 10))], 2: [("blue", 0.9, (50, 30, 60, 40))]}
    options.dry_run = True
    before = fake_cvat.annotations(task_id)
    start = len(fake_cvat.requests)
    (folder_plan,) = annotate_folder(session, function(outputs), folder, options)
    (tasks_plan,) = annotate_tasks(session, function(outputs), options, names=["gt a"])
    (missing_plan,) = find_missing(session, function(outputs), options, min_score=0.5, max_iou=0.3, names=["gt a"])
    (status_plan,) = set_status(session, options, state="completed", names=["gt a"])
    assert writes(fake_cvat, start) == []
    assert fake_cvat.annotations(task_id) == before and len(fake_cvat.tasks) == 1
    assert not options.out_dir.exists()  # no backups either
    assert (folder_plan.create, folder_plan.added) == (True, 1)
    assert tasks_plan.added == 2 and missing_plan.added == 2
    assert any("review/score" in n for n in tasks_plan.notes)
    assert fake_cvat.jobs(task_id)[0]["state"] != "completed" and status_plan.job_state == {"state": "completed"}


def test_a_500_mid_upload_then_a_rerun_converges(session, fake_cvat, options, tmp_path: Path) -> None:
    task_id = seed_ground_truth(fake_cvat, tmp_path)
    human = human_dump(fake_cvat, task_id)
    outputs = {1: [("red", 0.9, (60 + i, 0, 62 + i, 2)) for i in range(5)],
               2: [("blue", 0.9, (0, 40 + i, 3, 42 + i)) for i in range(5)]}
    options.chunk_size = 3
    # the 2nd chunk fails beyond the retry budget (1 retry): 2 failures after 1 success
    fake_cvat.fail("PATCH", rf"/api/tasks/{task_id}/annotations", status=500, times=2, after=1)
    with pytest.raises(CvatError, match="HTTP 500"):
        annotate_tasks(session, function(outputs), options, names=["gt a"])
    data = fake_cvat.annotations(task_id)
    assert sum(s["source"] == "auto" for s in data["shapes"]) == 3  # the first chunk, whole
    (plan,) = annotate_tasks(session, function(outputs), options, names=["gt a"])
    assert (plan.added, plan.duplicates) == (7, 3)
    autos = [a for a in readable(fake_cvat, task_id) if a[4] == "auto"]
    assert len(autos) == 10 and len(set(autos)) == 10
    assert human_dump(fake_cvat, task_id) == human


def test_ambiguous_or_unknown_names_are_refused(session, fake_cvat, options, tmp_path: Path) -> None:
    from obdb.cvat.errors import AnnotateError

    fake_cvat.add_task("twin", ["red"], [("1.png", 8, 8)])
    fake_cvat.add_task("twin", ["red"], [("1.png", 8, 8)])
    folder = tmp_path / "twin"
    key_image(folder / "1.png", 1)
    with pytest.raises(AnnotateError, match="2 tasks are named 'twin'"):
        annotate_folder(session, function({}), folder, options)
    with pytest.raises(AnnotateError, match="no CVAT task named 'nope'"):
        annotate_tasks(session, function({}), options, names=["nope"])


# --------------------------------------------------------------------------------------- issue 15


def review_values(data: dict[str, Any], fake, task_id: int) -> dict[str, list[str | None]]:
    """The review value each shape and tag reads with, by source kind ('auto' or 'human')."""
    review_ids = {a["id"] for label in fake.tasks[task_id].labels for a in label["attributes"]
                  if a["name"] == "review"}
    out: dict[str, list[str | None]] = {"auto": [], "human": []}
    for obj in data["shapes"] + data["tags"] + data["tracks"]:
        value = next((a["value"] for a in obj.get("attributes") or [] if a["spec_id"] in review_ids), None)
        out["auto" if obj.get("source") == "auto" else "human"].append(value)
    return out


def test_after_auto_annotate_human_shapes_never_read_as_unreviewed(session, fake_cvat, options,
                                                                    tmp_path: Path) -> None:
    task_id = seed_ground_truth(fake_cvat, tmp_path)
    outputs = {1: [("red", 0.9, (60, 5, 70, 15))], 2: [("blue", 0.8, (50, 5, 60, 15))]}
    annotate_tasks(session, function(outputs), options, names=["gt a"])
    find_missing(session, function({1: [("blue", 0.95, (2, 30, 12, 40))]}), options, names=["gt a"],
                 min_score=0.5, max_iou=0.3)
    values = review_values(fake_cvat.read_annotations(task_id), fake_cvat, task_id)  # as CVAT answers a read
    assert values["auto"] == ["unreviewed"] * 3  # obdb writes it explicitly on its own shapes
    assert len(values["human"]) == 5 and "unreviewed" not in values["human"]
    assert set(values["human"]) <= {None, "n/a"}  # 2.23 fills in the neutral default, 2.80 leaves it out


def test_a_killed_task_creation_then_a_rerun_finishes_without_predicting_twice(session, fake_cvat, options,
                                                                             tmp_path: Path) -> None:
    folder = tmp_path / "field k"
    for key in (1, 2, 3):
        key_image(folder / f"img{key}.png", key)
    outputs = {1: [("red", 0.9, (1, 2, 11, 12))], 2: [("blue", 0.8, (10, 10, 30, 30))]}
    detector = FixedDetector(outputs)
    model = ModelDetectionFunction(detector, CLASSES, batch_size=2, progress=False)
    fake_cvat.fail("POST", r"^/api/tasks/\d+/data/?$", status=None, times=100)  # the server dies mid-creation
    fake_cvat.fail("DELETE", r"^/api/tasks/\d+/?$", status=None, times=100)  # ... so the task cannot be removed
    with pytest.raises(CvatError, match="did not answer while uploading 3 images") as caught:
        annotate_folder(session, model, folder, options)
    assert caught.value.exit_code == 3
    (leftover,) = fake_cvat.tasks.values()
    assert leftover.frames == [] and detector.batches == []  # nothing predicted for a task that is not there
    fake_cvat._faults.clear()  # the server is back

    (plan,) = annotate_folder(session, model, folder, options)
    assert plan.task_id == leftover.id and plan.create and plan.added == 2
    assert any("reuses the empty task" in note for note in plan.notes)
    assert sum(detector.batches) == 3  # each image predicted once over both runs
    assert [f.name for f in fake_cvat.tasks[leftover.id].frames] == ["img1.png", "img2.png", "img3.png"]
    assert len(fake_cvat.tasks) == 1 and len(fake_cvat.annotations(leftover.id)["shapes"]) == 2
    (again,) = annotate_folder(session, model, folder, options)  # and a third run adds nothing
    assert (again.added, again.duplicates) == (0, 2)


def test_tasks_mode_checks_every_target_before_predicting(session, fake_cvat, options, tmp_path: Path) -> None:
    from obdb.cvat.errors import AnnotateError

    seed_ground_truth(fake_cvat, tmp_path)
    fake_cvat.add_task("empty one", ["red", "blue"], [])
    fake_cvat.add_task("other labels", ["car"], [("1.png", 8, 8)])
    detector = FixedDetector({1: [("red", 0.9, (1, 2, 11, 12))]})
    model = ModelDetectionFunction(detector, CLASSES, progress=False)
    with pytest.raises(AnnotateError, match=r"'empty one' \(id \d+\) hold no images.*rerun the `folder` command"):
        annotate_tasks(session, model, options, names=["gt a", "empty one"])
    with pytest.raises(AnnotateError, match=r"'other labels' .* has none of the labels \['blue', 'red'\]"):
        annotate_tasks(session, model, options, names=["gt a", "other labels"])
    assert detector.batches == []


def test_fix_review_gives_old_tasks_the_neutral_default(session, fake_cvat, options, tmp_path: Path) -> None:
    """A task that got review=unreviewed as the default: the default becomes n/a, human objects
    that hold 'unreviewed' get 'n/a', proposals keep their value."""
    from helpers.fake_cvat.scenarios import OLD_REVIEW, seed_proposals

    from obdb.annotate.fix_review import fix_review

    task_id = seed_proposals(fake_cvat, "old gt", review=OLD_REVIEW)
    review_id = {a["name"]: a["id"] for a in fake_cvat.tasks[task_id].labels[0]["attributes"]}["review"]
    fake_cvat.add_shapes(task_id, [  # a person saved a shape in the UI: the shown default was written back
        {"type": "rectangle", "frame": 2, "label": "weed", "points": [1.0, 30.0, 9.0, 40.0], "source": "manual",
         "attributes": [{"spec_id": review_id, "value": "unreviewed"}]}])
    stored = fake_cvat.annotations(task_id)
    weeds = ModelDetectionFunction(FixedDetector({}, names=("weed", "crop")), ClassMap(("weed", "crop")),
                                   progress=False)
    (plan,) = annotate_tasks(session, weeds, options, names=["old gt"])  # says how to fix it
    assert any("old review default 'unreviewed'" in n and "fix-review --name 'old gt'" in n for n in plan.notes)
    options.dry_run = True
    (plan,) = fix_review(session, options, names=["old gt"])
    assert any("would set the review default to 'n/a' on label(s): weed, crop" in n for n in plan.notes)
    assert fake_cvat.annotations(task_id) == stored
    assert fake_cvat.tasks[task_id].labels[0]["attributes"][0]["default_value"] == "unreviewed"

    options.dry_run = False
    (plan,) = fix_review(session, options, names=["old gt"])
    for label in fake_cvat.tasks[task_id].labels:
        review = {a["name"]: a for a in label["attributes"]}["review"]
        assert review["default_value"] == "n/a" and review["values"][0] == "n/a"
        assert {"unreviewed", "accepted", "rejected"} <= set(review["values"])
    values = review_values(fake_cvat.read_annotations(task_id), fake_cvat, task_id)
    assert "unreviewed" not in values["human"] and len(values["human"]) == 4
    assert sorted(v for v in values["auto"] if v not in (None, "n/a")) == ["accepted", "rejected", "unreviewed"]
    assert any("on 1 human object(s)" in note for note in plan.notes)
    after = fake_cvat.annotations(task_id)
    geometry = sorted((s["frame"], s["label_id"], s["points"], s["source"]) for s in after["shapes"])
    assert geometry == sorted((s["frame"], s["label_id"], s["points"], s["source"]) for s in stored["shapes"])
    (again,) = fix_review(session, options, names=["old gt"])
    assert any("already have the neutral default" in note for note in again.notes)
