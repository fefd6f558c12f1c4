"""The CVAT source (data.source = "cvat") against the fake CVAT server."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.tiny_data import LABELS, make_tiny_dataset, tiny_settings
from obdb import cvat
from obdb.prepare import load_annotations
from obdb.settings.loader import parse_settings
from obdb.sources.contract import SourceError
from obdb.sources.local import parse_file


@pytest.fixture()
def data(tmp_path):
    return make_tiny_dataset(tmp_path / "data", videos=3, frames=3)


def seed_from_files(fake_cvat, data: Path) -> list[str]:
    """The tiny data set's CVAT XML tasks as tasks on the fake server (same images, same boxes)."""
    names = []
    for xml in sorted((data / "annotations").glob("*.xml")):
        parsed = parse_file(xml)
        shapes = [{"type": shape.kind, "frame": frame.frame, "label": shape.label, "points": shape.points}
                  for frame in parsed.frames for shape in frame.shapes]
        fake_cvat.add_task(parsed.name, list(LABELS), [data / "images" / frame.name for frame in parsed.frames],
                           shapes=shapes, status="completed")
        names.append(parsed.name)
    return names


def settings_for(data: Path, out: Path, tasks: list[str], **cvat_block):
    settings = tiny_settings(data, out)
    settings["annotations_list"] = tasks
    settings["data"] = {"source": "cvat", "cvat": cvat_block}
    return parse_settings(settings)


def summary(annotations) -> list[tuple]:
    return sorted((r.image_id, r.width, r.height, r.group, r.task, r.frame, tuple(r.labels),
                   np.round(r.boxes, 3).tobytes()) for r in annotations.records)


def test_cvat_source_equals_the_local_files_and_reuses_its_cache(cvat_env, data, tmp_path):
    fake = cvat_env
    tasks = seed_from_files(fake, data)
    local = tiny_settings(data, tmp_path / "local")
    local["annotations_list"] = tasks
    expected = load_annotations(parse_settings(local), progress=False)

    settings = settings_for(data, tmp_path / "run", tasks)
    loaded = load_annotations(settings, progress=False)
    assert summary(loaded) == summary(expected) and len(loaded.records) == 9
    assert fake.frame_downloads() == 9
    cache = tmp_path / "run" / "train" / "cvat_cache"
    assert sorted(p.name for p in cache.iterdir()) == [f"{fake.task_id(t)}-{t}" for t in sorted(tasks)]
    assert all(r.path.is_relative_to(cache) for r in loaded.records)
    assert not list(cache.rglob("*.tmp"))

    annotation_reads = fake.count("GET", r"/annotations/?$")
    again = load_annotations(settings, progress=False)
    assert summary(again) == summary(expected)
    assert fake.frame_downloads() == 9 and fake.count("GET", r"/annotations/?$") == annotation_reads

    # an edit in CVAT: the annotations are read again, the frames are not
    with cvat.connect(cvat.CvatCredentials.from_env(fake.env)) as session:
        task_id = fake.task_id(tasks[0])
        cvat.add_shapes(session, task_id, [{"type": "polygon", "frame": 0, "label_id": fake.label_id(task_id, "red"),
                                            "points": [1, 2, 20, 2, 20, 30]}])
    changed = load_annotations(settings, progress=False)
    record = next(r for r in changed.records if r.task == tasks[0] and r.frame == 0)
    assert record.labels[-1] == "red" and record.boxes[-1].tolist() == [1.0, 2.0, 20.0, 30.0]
    assert fake.frame_downloads() == 9 and fake.count("GET", r"/annotations/?$") == annotation_reads + 1

    fake.stop()
    offline = load_annotations(settings_for(data, tmp_path / "run", tasks, offline=True), progress=False)
    assert summary(offline) == summary(changed)
    with pytest.raises(SourceError, match=r"\['gt_train_video09'\] are not in the CVAT cache"):
        load_annotations(settings_for(data, tmp_path / "run", ["gt_train_video09"], offline=True), progress=False)
    with pytest.raises(SourceError, match="did not answer.*offline: true"):
        load_annotations(settings_for(data, tmp_path / "run", tasks, retries=0), progress=False)


def test_empty_frames_tracks_and_exact_names(cvat_env, tmp_path):
    fake = cvat_env
    frames = [(f"v1/frame{i}.png", 40, 30) for i in range(4)]
    fake.add_task("gt_val_A", ["weed"], frames, tracks=[{"frame": 0, "label": "weed", "shapes": [
        {"type": "rectangle", "frame": 0, "points": [0, 0, 10, 10]},
        {"type": "rectangle", "frame": 2, "points": [0, 0, 10, 10], "outside": True}]}])
    fake.add_task("gt_val_A_2", ["weed"], frames[:1],
                  shapes=[{"type": "rectangle", "frame": 0, "label": "weed", "points": [1, 1, 9, 9]}])
    settings = settings_for(tmp_path, tmp_path / "run", ["gt_val_A"], cache_dir=str(tmp_path / "cache"))
    loaded = load_annotations(settings, progress=False)
    assert [(r.image_id, len(r.boxes)) for r in sorted(loaded.records, key=lambda r: r.frame)] == [
        ("gt_val_A/v1/frame0.png", 1), ("gt_val_A/v1/frame1.png", 1),
        ("gt_val_A/v1/frame2.png", 0), ("gt_val_A/v1/frame3.png", 0)]  # empty frames kept as negatives
    assert fake.frame_downloads(fake.task_id("gt_val_A_2")) == 0
    no_empty = settings.model_copy(update={"data": settings.data.model_copy(update={"keep_empty": False})})
    assert len(load_annotations(no_empty, progress=False).records) == 2
    with pytest.raises(SourceError, match=r"no task named \['gt_val'\]"):
        load_annotations(settings_for(tmp_path, tmp_path / "run", ["gt_val"]), progress=False)


# ---------------------------------------------------------------------------------------- ground truth


@pytest.mark.parametrize("rule", ["accepted", "all", "none"])
def test_only_human_and_accepted_shapes_are_ground_truth(cvat_env, data, tmp_path, rule, caplog):
    """Proposals (source auto) count only once a person accepted them (data.cvat.include_auto)."""
    from helpers.fake_cvat.scenarios import expected_boxes, loaded_boxes, seed_proposals

    seed_proposals(cvat_env, "gt_val_proposals")
    block = {} if rule == "accepted" else {"include_auto": rule}
    settings = settings_for(data, tmp_path / "out", ["gt_val_proposals"], **block)
    assert settings.data.cvat.include_auto == rule
    with caplog.at_level("INFO", logger="obdb.sources"):
        loaded = load_annotations(settings, progress=False)  # what the runner, review and test_model load
    assert loaded_boxes(loaded.records) == expected_boxes(rule)
    left_out = {"accepted": 3, "all": 0, "none": 4}[rule]
    assert (f"left out {left_out} model proposal(s)" in caplog.text) == bool(left_out)


def test_cvat_errors_keep_the_exit_code_table(cvat_env, data, tmp_path, monkeypatch):
    """An unreachable CVAT is exit 3 through the runner's source too; a missing task is 2."""
    settings = settings_for(data, tmp_path / "out", ["no such task"], retries=0)
    with pytest.raises(SourceError, match="no task named") as caught:
        load_annotations(settings, progress=False)
    assert caught.value.exit_code == 2
    monkeypatch.setenv("CVAT_URL", f"http://127.0.0.1:{_closed_port()}")
    with pytest.raises(SourceError, match="did not answer") as caught:
        load_annotations(settings, progress=False)
    assert caught.value.exit_code == 3


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_review_and_test_model_score_against_the_same_ground_truth(cvat_env, data, tmp_path):
    """test_model.py -f and obdb review load through the source: proposals not accepted stay out."""
    from helpers.fake_cvat.scenarios import expected_boxes, loaded_boxes, seed_proposals

    from obdb.records import ClassMap
    from obdb.prepare import prepare
    from obdb.scoring import records_from_run

    seed_proposals(cvat_env, "gt_val_proposals")
    raw = tiny_settings(data, tmp_path / "out", annotations_list=["gt_val_proposals"],
                        default_class_map=["Background", "crop", "weed"])
    raw["data"] = {"source": "cvat"}
    settings = parse_settings(raw)
    header = {"class_map": ClassMap(("crop", "weed")).to_json()}
    scored = records_from_run(settings, header, "all", progress=False)
    assert loaded_boxes(scored) == expected_boxes("accepted")
    reviewed = prepare(settings, save_dir=tmp_path / "out", progress=False, split=False).records  # as review does
    assert loaded_boxes(reviewed) == expected_boxes("accepted")
