"""``auto_annotate.py`` / ``obdb annotate`` end to end: a real saved model, the fake CVAT server,
the environment for credentials, exit codes and messages."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from helpers.annotate import XML, key_image
from obdb.annotate.candidates import missing_candidates
from obdb.annotate.function import ModelDetectionFunction
from obdb.cli.annotate import main
from obdb.cli.main import main as obdb_main
from obdb.models import ModelSpec, build_detector, save_model
from obdb.records import ClassMap
from obdb.split import SplitManifest

ROOT = Path(__file__).resolve().parents[2]
MODES = ("folder", "tasks", "upload-gt", "upload-xml", "missing", "status", "fix-review")


@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-init ResNet-18 Faster R-CNN for the tiny data's classes (its detections are what
    they are; tests compare against the same model's own predictions)."""
    classes = ClassMap(("red", "blue"))
    spec = ModelSpec("resnet18", "faster_rcnn", num_classes=classes.num_classes, min_size=64, max_size=96)
    folder = tmp_path_factory.mktemp("model")
    model, spec = build_detector(spec, weights_dir=folder / "no-weights")
    save_model(folder / "model.pt", model, spec, classes)
    return folder / "model.pt"


def run(*args: str) -> int:
    return main([*args, "--progress", "false", "--log-level", "WARNING"])


def test_every_mode_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    for mode in MODES:
        with pytest.raises(SystemExit) as exit_info:
            main([mode, "--help"])
        assert exit_info.value.code == 0
        assert f"auto_annotate.py {mode}" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_info:  # registered as "obdb annotate"
        obdb_main(["annotate", "missing", "--help"])
    assert exit_info.value.code == 0 and "obdb annotate missing" in capsys.readouterr().out
    # the entry script is a thin wrapper around the same parser
    done = subprocess.run([sys.executable, str(ROOT / "code" / "auto_annotate.py"), "status", "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "--stage" in done.stdout


def test_folder_with_a_saved_model_then_rerun(model_file: Path, fake_cvat, cvat_env, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "plot 3"
    images = [key_image(folder / f"f{k}.png", k, size=(72, 64)) for k in (1, 2)]
    out = tmp_path / "out"
    args = ["folder", str(folder), "-m", str(model_file), "-t", "0.0", "--max-detections", "4", "--device", "cpu",
            "--out", str(out)]
    assert run(*args) == 0
    printed = capsys.readouterr().out
    task_id = fake_cvat.task_id("plot 3")
    expected_function = ModelDetectionFunction.from_file(model_file, threshold=0.0, max_detections=4, progress=False)
    expected = expected_function.predict_images(images)
    task = fake_cvat.tasks[task_id]
    labels = {label["id"]: label["name"] for label in task.labels}
    got = sorted((s["frame"], labels[s["label_id"]], tuple(round(p, 1) for p in s["points"]))
                 for s in fake_cvat.annotations(task_id)["shapes"])
    want = sorted((frame, label, tuple(round(round(float(p), 2), 1) for p in box))
                  for frame, found in enumerate(expected) for box, label in zip(found.boxes, found.labels))
    assert got == want and len(got) > 0
    assert "plot 3" in printed and "report:" in printed
    report = json.loads(next((out / "reports").glob("*-folder.json")).read_text())
    assert report["tasks"][0]["added"] == len(want)
    before = fake_cvat.annotations(task_id)
    assert run(*args) == 0  # rerun: nothing new
    assert fake_cvat.annotations(task_id) == before


def test_tasks_and_missing_keep_human_shapes_byte_identical(model_file: Path, fake_cvat, cvat_env,
                                                           tmp_path: Path) -> None:
    frames = [key_image(tmp_path / f"g{k}.png", k, size=(72, 64)) for k in (1, 2)]
    predicted = ModelDetectionFunction.from_file(model_file, threshold=0.0, max_detections=3,
                                                 progress=False).predict_images(frames)
    assert len(predicted[0]) > 0
    # a human box 1 px off the model's first box on frame 0 (IoU > 0.5, but not a duplicate), and
    # one far from everything on frame 1
    near = [float(v) + d for v, d in zip(predicted[0].boxes[0], (1, 1, 0, 0))]
    task_id = fake_cvat.add_task("gt_val_x", ["red", "blue"], frames, shapes=[
        {"type": "rectangle", "frame": 0, "label": "red", "points": near, "source": "manual"},
        {"type": "points", "frame": 1, "label": "blue", "points": [70, 62, 71, 63], "source": "manual"}])
    gt = {0: np.array([near]), 1: np.array([[70, 62, 71, 63]])}

    def human() -> str:
        data = fake_cvat.annotations(task_id)
        return json.dumps([s for s in data["shapes"] if s["source"] != "auto"], sort_keys=True)

    def autos() -> list[tuple]:
        return sorted((s["frame"], s["label_id"], tuple(round(p, 1) for p in s["points"]))
                      for s in fake_cvat.annotations(task_id)["shapes"] if s["source"] == "auto")

    before = human()
    common = ["-m", str(model_file), "--device", "cpu", "--max-detections", "3", "--out", str(tmp_path / "o")]
    labels = {label["name"]: label["id"] for label in fake_cvat.tasks[task_id].labels}

    def rows(per_frame: list) -> list[tuple]:
        return sorted((f, labels[label], tuple(round(round(float(p), 2), 1) for p in box))
                      for f, found in enumerate(per_frame) for box, label in zip(found.boxes, found.labels))

    candidates = rows([missing_candidates(found, gt[f], min_score=0.0, max_iou=0.5)
                       for f, found in enumerate(predicted)])
    assert 0 < len(candidates) < len(rows(predicted))  # the test exercises both outcomes
    assert run("missing", "--name", "gt_val_x", "-t", "0.0", "-i", "0.5", *common) == 0
    assert autos() == candidates and human() == before
    # mode 2 adds the rest of the predictions (those on human boxes), nothing twice
    assert run("tasks", "--pattern", "gt_val_*", "-t", "0.0", *common) == 0
    assert autos() == rows(predicted) and human() == before
    assert run("tasks", "--pattern", "gt_val_*", "-t", "0.0", *common) == 0  # rerun: nothing added
    assert autos() == rows(predicted) and human() == before
    assert len(list((tmp_path / "o" / "backups").glob(f"{task_id}-gt_val_x-*.json"))) == 2  # two runs wrote


def test_upload_gt_of_the_val_split(settings_file: Callable[..., Path], fake_cvat, cvat_env, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    path = settings_file()
    out = tmp_path / "o"
    assert run("upload-gt", "-f", str(path), "--split", "val", "--prefix", "val:", "--out", str(out)) == 0
    save_dir = Path(json.loads(path.read_text())["save_dir"])
    manifest = SplitManifest.load(next((save_dir / "splits").glob("*.json")))
    val_tasks = sorted({image_id.split("/")[0] for image_id, side in manifest.assignment.items() if side == "val"})
    assert sorted(t.name for t in fake_cvat.tasks.values()) == [f"val:{t}" for t in val_tasks]
    # every box of the val images is in CVAT, with its label, on the frame of its image
    from obdb.sources.local import load_local

    data = Path(json.loads(path.read_text())["dataset_dir"])
    records = [r for r in load_local(data / "annotations", images_dir=data / "images", progress=False).records
               if manifest.assignment[r.image_id] == "val"]
    want = sorted((r.path.name, label, tuple(round(float(v), 2) for v in box))
                  for r in records for box, label in zip(r.boxes, r.labels))
    got = []
    for task in fake_cvat.tasks.values():
        labels = {label["id"]: label["name"] for label in task.labels}
        for s in fake_cvat.annotations(task.id)["shapes"]:
            assert s["source"] == "manual" and s["type"] == "rectangle"
            got.append((task.frames[s["frame"]].name, labels[s["label_id"]], tuple(s["points"])))
    assert sorted(got) == want
    capsys.readouterr()
    # rerun: same tasks, nothing added
    assert run("upload-gt", "-f", str(path), "--split", "val", "--prefix", "val:", "--out", str(out)) == 0
    assert len(fake_cvat.tasks) == len(val_tasks)
    assert sum(len(fake_cvat.annotations(t)["shapes"]) for t in fake_cvat.tasks) == len(want)
    assert " dup " in capsys.readouterr().out


def test_upload_gt_from_files_and_upload_xml(tiny_data: Path, fake_cvat, cvat_env, tmp_path: Path) -> None:
    assert run("upload-gt", "--annotations", str(tiny_data / "annotations" / "gt_train_video00.xml"),
               "--images", str(tiny_data / "images"), "--out", str(tmp_path / "o")) == 0
    (task,) = fake_cvat.tasks.values()
    assert task.name == "gt_train_video00" and len(task.frames) == 3
    xml_dir = tmp_path / "xml"
    xml_dir.mkdir()
    (xml_dir / "field.xml").write_text(XML)
    images = tmp_path / "img"
    key_image(images / "a.png", 1)
    key_image(images / "b.png", 2)
    assert run("upload-xml", str(xml_dir), "--images", str(images), "--out", str(tmp_path / "o")) == 0
    xml_task = fake_cvat.tasks[fake_cvat.task_id("field 7")]
    assert sorted(s["type"] for s in fake_cvat.annotations(xml_task.id)["shapes"]) == \
        ["ellipse", "points", "polygon", "rectangle"]


def test_status_dry_run_then_real(fake_cvat, cvat_env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    task_id = fake_cvat.add_task("done 1", ["red"], [("1.png", 8, 8)])
    start = len(fake_cvat.requests)
    args = ["status", "--name", "done 1", "--state", "completed", "--stage", "acceptance", "--out", str(tmp_path)]
    assert run(*args, "--dry-run") == 0
    assert "DRY RUN" in capsys.readouterr().out
    assert [m for m, p in fake_cvat.requests[start:] if m != "GET" and "/auth/" not in p] == []
    assert fake_cvat.tasks[task_id].status == "annotation"
    assert run(*args) == 0
    assert fake_cvat.tasks[task_id].status == "completed"


def test_wrong_credentials_fail_clearly(fake_cvat, cvat_env, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CVAT_PASSWORD", "not-the-password-42")
    code = run("status", "--name", "x", "--state", "completed", "--out", str(tmp_path))
    err = capsys.readouterr().err
    assert code == 2  # bad credentials: the one exit-code table
    assert f"refused the credentials of user {fake_cvat.username}" in err
    assert "not-the-password-42" not in err


def test_server_version_mismatch(fake_cvat, cvat_env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake_cvat.add_task("t", ["red"], [("1.png", 8, 8)])
    fake_cvat.server_version = "2.3.0"
    args = ["status", "--name", "t", "--state", "completed", "--out", str(tmp_path)]
    assert run(*args) != 0
    assert "runs version 2.3.0" in capsys.readouterr().err
    assert run(*args, "--allow-version-mismatch") == 0
    assert fake_cvat.jobs(fake_cvat.task_id("t"))[0]["state"] == "completed"


def test_bad_input_is_a_usage_error(model_file: Path, fake_cvat, cvat_env, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert run("tasks", "--name", "no such task", "-m", str(model_file), "--out", str(tmp_path)) == 2
    assert "no CVAT task named 'no such task'" in capsys.readouterr().err
    assert run("folder", str(tmp_path / "missing"), "-m", str(model_file), "--out", str(tmp_path)) == 2
    assert "not a folder" in capsys.readouterr().err
    assert run("folder", str(tmp_path), "-m", str(tmp_path / "nope.pt")) == 2
    assert "model file not found" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # the old tool's "--flag False" is refused, not read as true
        main(["tasks", "--name", "x", "-m", "m.pt", "--dry-run", "False"])


def test_an_unreachable_server_is_exit_3_with_true_advice(model_file: Path, fake_cvat, cvat_env, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "plot 9"
    for i in range(2):
        key_image(folder / f"{i}.png", i + 1, size=(64, 48))
    fake_cvat.fail("POST", r"^/api/tasks/\d+/data/?$", status=None, times=100)
    fake_cvat.fail("DELETE", r"^/api/tasks/\d+/?$", status=400, times=100)  # refused at once: no retry waits
    args = ["folder", str(folder), "-m", str(model_file), "--out", str(tmp_path / "out"), "-t", "0.0",
            "--device", "cpu"]
    assert run(*args) == 3
    err = capsys.readouterr().err
    assert "did not answer while uploading 2 images" in err and "rerun the same command" in err
    fake_cvat._faults.clear()
    assert run(*args) == 0  # the advice holds: the rerun reuses the empty task
    (task,) = fake_cvat.tasks.values()
    assert len(task.frames) == 2


def test_fix_review_command(fake_cvat, cvat_env, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from helpers.fake_cvat.scenarios import OLD_REVIEW, seed_proposals

    task_id = seed_proposals(fake_cvat, "old gt", review=OLD_REVIEW)
    args = ["fix-review", "--name", "old gt", "--out", str(tmp_path)]
    assert run(*args, "--dry-run") == 0
    assert "would set the review default" in capsys.readouterr().out
    assert run(*args) == 0
    assert "review default set to 'n/a'" in capsys.readouterr().out
    assert all({a["name"]: a for a in label["attributes"]}["review"]["default_value"] == "n/a"
               for label in fake_cvat.tasks[task_id].labels)
    assert run("fix-review", "--name", "old gt_", "--out", str(tmp_path)) == 2
