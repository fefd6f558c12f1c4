"""Runs, studies and outputs under attack (issue 20): names that try to leave ``save_dir``, a
kill between ``metrics.json`` and ``manifest.json``, secrets in command lines, temp files of
other programs, damaged checkpoints, bad warm starts, a full SQLite disk and a study whose every
trial diverged. The runner runs in-process through its real entry point (``main``) with ``fit``
replaced by a cheap fake where training itself is beside the point.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
from torch import nn

import obdb.pipeline as pipeline
from obdb.cli.common import guarded
from obdb.cli.runner import main as runner_main
from obdb.fileio import TEMP_NAME, atomic_path, remove_stale_temps, write_text
from obdb.hpo import build_pruner, build_sampler, open_storage, run_search
from obdb.hpo.study import StudyFailed
from obdb.redaction import redact, redact_argv
from obdb.settings import HyperParams, ParamRange
from obdb.training import TrainingDiverged, TrainState

SPACE = {"lr": ParamRange(low=0.001, high=0.1)}


# --- helpers --------------------------------------------------------------------------------------
class FakeFit:
    """``pipeline.fit`` stand-in: no detector, a score from the parameters, calls counted."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def __call__(self, data: Any, config: Any, params: Any, *, max_epochs: int, name: str, extra_hooks: Any = (),
                 **_: Any) -> tuple[nn.Module, TrainState, Any]:
        self.calls.append(name)
        state = TrainState()
        trainer = type("FakeTrainer", (), {})()
        trainer.state, trainer.metrics, trainer.max_epochs = state, {}, max_epochs
        for epoch in range(1, max_epochs + 1):
            score = 1.0 / (1.0 + abs(math.log10(params.lr) + 2.0)) * epoch / max_epochs
            state.epoch, trainer.metrics = epoch, {"score": score, "improved": True}
            if score > state.best_score:
                state.best_score, state.best_epoch = score, epoch
            for hook in extra_hooks:
                hook.after_epoch(trainer)
            state.history.append({"epoch": float(epoch), "val/map": score})
        return nn.Linear(1, 1), state, config.spec


@pytest.fixture()
def fake_fit(monkeypatch: pytest.MonkeyPatch) -> FakeFit:
    fake = FakeFit()
    monkeypatch.setattr(pipeline, "fit", fake)
    return fake


def run_main(settings: Path, *overrides: str, monkeypatch: pytest.MonkeyPatch | None = None) -> int:
    argv = ["-f", str(settings), *overrides, "--progress", "false"]
    if monkeypatch is not None:  # manifest.json stores sys.argv
        monkeypatch.setattr(sys, "argv", ["torch_model_runner.py", *argv])
    return runner_main(argv)


def snapshot(root: Path, skip: Path) -> set[Path]:
    """Every file and folder under ``root`` except those inside ``skip`` (save_dir)."""
    return {p for p in root.rglob("*") if skip != p and skip not in p.parents}


def write_settings(path: Path, settings: dict[str, Any]) -> Path:
    path.write_text(json.dumps(settings, indent=2))
    return path


def base_settings(settings_file: Any, **changes: Any) -> dict[str, Any]:
    return json.loads(settings_file(**changes).read_text())


# --- 20.2: names that become paths ------------------------------------------------------------------
ESCAPES = ["../../../escape_{tag}", "resnet18/../../../escape_{tag}", "/tmp/obdb_abs_escape_{tag}",
           "..", "a\\..\\..\\escape_{tag}"]


@pytest.mark.parametrize("form", ESCAPES)
@pytest.mark.parametrize("key", ["variant", "experiment"])
def test_unsafe_variant_and_experiment_names_are_refused_before_anything_is_written(
        settings_file: Any, tmp_path: Path, key: str, form: str, capsys: pytest.CaptureFixture[str]) -> None:
    tag = uuid.uuid4().hex[:8]
    name = form.format(tag=tag)
    if key == "variant":  # backbone given, so the name itself is the only problem
        settings = base_settings(settings_file, variants=[name])
        settings[name] = {**settings["resnet18"], "backbone": "resnet18"}
    else:
        settings = base_settings(settings_file, experiment=name)
    path = write_settings(tmp_path / "settings.json", settings)
    save_dir = tmp_path / "train"
    before = snapshot(tmp_path, save_dir)
    assert run_main(path) == 2
    err = capsys.readouterr().err
    assert ("variants[0]" if key == "variant" else "experiment") in err and repr(name) in err
    assert snapshot(tmp_path, save_dir) == before  # nothing outside save_dir ...
    assert not save_dir.exists() or not any(save_dir.rglob("*"))  # ... and nothing inside it either
    assert not Path(f"/tmp/obdb_abs_escape_{tag}").exists()


@pytest.mark.parametrize("task", ["../../../escape_task", "/tmp/obdb_abs_escape_task", "a/../../b"])
def test_task_names_never_become_paths_outside_save_dir(tiny_data: Path, settings_file: Any, tmp_path: Path,
                                                        task: str, fake_fit: FakeFit) -> None:
    """Task names come from annotation files and servers (the user cannot rename them), so they are
    sanitised where they name a file (CVAT cache, backups), never refused; a whole run with such
    names writes nothing outside save_dir."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    for xml in (data / "annotations").glob("*.xml"):
        text = xml.read_text()
        xml.write_text(text.replace(f"<name>{xml.stem}</name>", f"<name>{task}{xml.stem}</name>"))
    settings = base_settings(settings_file, dataset_dir=str(data))
    settings["data"] = {"images_dir": str(data / "images")}
    path = write_settings(tmp_path / "settings.json", settings)
    save_dir = tmp_path / "train"
    before = snapshot(tmp_path, save_dir)
    assert run_main(path) == 0
    assert (save_dir / "resnet18" / "manifest.json").is_file()
    assert snapshot(tmp_path, save_dir) == before
    assert not list(Path("/tmp").glob("obdb_abs_escape_task*"))


# --- 20.6: the manifest is part of "complete" --------------------------------------------------------
def test_a_kill_between_metrics_and_manifest_is_repaired_by_the_rerun(settings_file: Any, fake_fit: FakeFit) -> None:
    path = settings_file()
    assert run_main(str(path)) == 0
    out = Path(json.loads(path.read_text())["save_dir"]) / "resnet18"
    manifest = json.loads((out / "manifest.json").read_text())
    (out / "manifest.json").unlink()  # as if killed after metrics.json was renamed into place
    assert fake_fit.calls == ["resnet18 final"]
    assert run_main(str(path)) == 0
    assert fake_fit.calls == ["resnet18 final"]  # not trained again ...
    again = json.loads((out / "manifest.json").read_text())  # ... but the manifest is there now
    assert {k: v for k, v in again.items() if k != "written"} == {k: v for k, v in manifest.items() if k != "written"}


def test_metrics_json_is_written_last(settings_file: Any, fake_fit: FakeFit) -> None:
    path = settings_file()
    assert run_main(str(path)) == 0
    out = Path(json.loads(path.read_text())["save_dir"]) / "resnet18"
    order = sorted(("metrics.json", "manifest.json", "model.pt", "class_map.json"),
                   key=lambda n: (out / n).stat().st_mtime_ns)
    assert order[-1] == "metrics.json"  # the commit marker of a final training


# --- 20.7: secrets -------------------------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "postgresql://worker:S3CRET@db/optuna", "postgresql://worker@db/optuna?password=S3CRET",
    "postgresql://worker@db/optuna?sslmode=require&password=S3CRET", "mysql://u@h/db?passwd=S3CRET&x=1",
    "https://cvat.example/api?token=S3CRET", "postgresql://u@h/db?sslpassword=S3CRET",
    "postgresql://u@h/db?api_key=S3CRET;other=1", "connecting to postgresql://a:S3CRET@h/db failed",
])
def test_redact_hides_every_form_of_password(text: str) -> None:
    assert "S3CRET" not in redact(text) and "***" in redact(text)


def test_redact_argv_hides_overrides_and_flag_values() -> None:
    argv = ["torch_model_runner.py", "-f", "s.json", "hpo.storage=postgresql://u:S3CRET@h:5432/db",
            "hpo.storage=postgresql://u@h/db?password=S3CRET", "cvat.password=S3CRET", "--token", "S3CRET",
            "--api-key=S3CRET", "train.batch_size=4"]
    out = redact_argv(argv)
    assert "S3CRET" not in json.dumps(out)
    assert out[:3] == argv[:3] and out[-1] == "train.batch_size=4"
    assert out[3] == "hpo.storage=postgresql://u:***@h:5432/db"


def test_storage_password_in_an_override_is_not_stored(settings_file: Any, fake_fit: FakeFit,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """``hpo.storage=sqlite:///…?password=`` stands for any URL with a secret (the run itself needs
    a reachable storage): neither manifest.json nor the log file keeps it."""
    path = settings_file()
    save_dir = Path(json.loads(path.read_text())["save_dir"])
    override = "hpo.storage=postgresql://u:S3CRET@127.0.0.1:1/db?password=S3CRET"
    monkeypatch.setattr(pipeline, "check_reachable", lambda url: None)
    monkeypatch.setattr(pipeline, "is_shared", lambda url: False)  # keep the study lock on a file
    monkeypatch.setattr(pipeline, "storage_url", lambda configured, save: f"sqlite:///{save / 'optuna.db'}")
    assert run_main(path, override, monkeypatch=monkeypatch) == 0
    manifest = json.loads((save_dir / "resnet18" / "manifest.json").read_text())
    assert any(a.startswith("hpo.storage=postgresql://u:***@") for a in manifest["argv"])
    leaks = [p for p in save_dir.rglob("*") if p.is_file() and b"S3CRET" in p.read_bytes()]
    assert not leaks


# --- 20.8: temp files are ours only, cleaned by every command that makes them -------------------
def test_temp_files_have_a_name_no_other_program_uses(tmp_path: Path) -> None:
    with atomic_path(tmp_path / "out.json") as tmp:
        assert TEMP_NAME.match(tmp.name), tmp.name
        tmp.write_text("{}")
    assert not TEMP_NAME.match(".out.json.abc.tmp") and not TEMP_NAME.match(".obdb-12-x.tmp.bak")


def test_stale_temp_cleaning_leaves_other_programs_files_alone(tmp_path: Path) -> None:
    folder = tmp_path / "save" / "resnet18"
    folder.mkdir(parents=True)
    theirs = [folder / ".model.pt.x1y2.tmp", folder / ".swp.tmp", tmp_path / "save" / ".editor.tmp"]
    ours = folder / ".obdb-4242-k3j2h1.tmp"
    for path in (*theirs, ours):
        path.write_bytes(b"x")
        old = time.time() - 3600
        os.utime(path, (old, old))
    assert remove_stale_temps(tmp_path / "save") == 1
    assert not ours.exists() and all(p.exists() for p in theirs)


def test_a_write_sweeps_abandoned_temps_of_its_folder(tmp_path: Path) -> None:
    abandoned = tmp_path / ".obdb-4242-abandoned.tmp"
    recent = tmp_path / ".obdb-4243-recent.tmp"  # may be another host's write in progress
    for path, age in ((abandoned, 3600), (recent, 0)):
        path.write_bytes(b"x")
        os.utime(path, (time.time() - age, time.time() - age))
    write_text(tmp_path / "a.txt", "a")
    assert not abandoned.exists() and recent.exists()


def test_obdb_split_removes_its_own_leftovers_only(settings_file: Any, tmp_path: Path) -> None:
    from obdb.cli.split import main as split_main

    path = settings_file()
    splits = tmp_path / "train" / "splits"
    splits.mkdir(parents=True)
    ours, theirs = splits / ".obdb-4242-killed.tmp", splits / ".notes.tmp"
    for file in (ours, theirs):
        file.write_bytes(b"x")
        os.utime(file, (time.time() - 60, time.time() - 60))
    assert split_main(["-f", str(path), "--progress", "false"]) == 0
    assert not ours.exists() and theirs.exists()
    assert not [p for p in splits.rglob("*") if TEMP_NAME.match(p.name)]


# --- 20.10: run-side errors: one line, exit 2, found before anything is written ---------------------
def test_a_damaged_best_pt_is_one_line_before_anything_is_written(settings_file: Any, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = settings_file()
    best = tmp_path / "train" / "resnet18" / "checkpoints" / "best.pt"
    best.parent.mkdir(parents=True)
    best.write_bytes(b"PK\x03\x04 not really a torch file")
    assert run_main(path) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(best) in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "train").rglob("*")) == ["best.pt", "checkpoints", "resnet18"]


@pytest.mark.parametrize("entry", ["no-such-study", "missing_best_params.json"])
def test_a_bad_warm_start_is_found_before_optuna_db_and_the_split(settings_file: Any, tmp_path: Path, entry: str,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = settings_file(resnet18={"run_hpo": 1, "use_settings_file": 0},
                         hpo={"pruner": "none", "warm_start_from": [str(tmp_path / entry) if entry.endswith(".json")
                                                                    else entry]})
    assert run_main(path) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "hpo.warm_start_from" in err
    save_dir = tmp_path / "train"
    assert not (save_dir / "optuna.db").exists() and not (save_dir / "splits").exists()


def _search(storage: Any, objective: Any, name: str = "s") -> Any:
    return run_search(objective, name=name, storage=storage,
                      sampler=build_sampler("random", n_startup_trials=1, seed=0),
                      pruner=build_pruner("none", warmup_epochs=1, max_epochs=1), space=SPACE, log_scale=["lr"],
                      base=HyperParams(), max_trials=3)


def test_a_study_whose_every_trial_diverged_is_one_line_exit_2(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    def diverges(params: HyperParams, number: int, hooks: Any) -> float:
        raise TrainingDiverged(f"trial {number}: loss is nan at epoch 1, iteration 3")

    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    with pytest.raises(StudyFailed, match="no trial completed .3 failed, 0 pruned; last failure: trial 2: loss is nan"):
        _search(storage, diverges)
    assert guarded(lambda: _search(storage, diverges, name="s2")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: study s2: no trial completed")


def test_a_diverged_trial_is_a_failed_trial_in_one_line_and_the_search_goes_on(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def first_diverges(params: HyperParams, number: int, hooks: Any) -> float:
        if number == 0:
            raise TrainingDiverged(f"trial {number}: loss is nan at epoch 1, iteration 3")
        return 0.5

    _search(open_storage(f"sqlite:///{tmp_path / 'optuna.db'}"), first_diverges)
    study = optuna.load_study(study_name="s", storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE", "COMPLETE"]
    assert study.trials[0].user_attrs["fail_reason"] == "trial 0: loss is nan at epoch 1, iteration 3"
    assert not [r for r in caplog.records if r.exc_info]  # no traceback in the log, Optuna's included
    assert "trial 0: loss is nan at epoch 1, iteration 3: this trial counts as failed" in caplog.text


def test_sqlite_disk_full_during_the_study_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """SQLite's ``max_page_count`` makes the database "full" as a full volume does (SQLITE_FULL)."""
    import sqlalchemy

    db = tmp_path / "optuna.db"
    storage = open_storage(f"sqlite:///{db}")
    optuna.create_study(study_name="s", storage=storage, direction="maximize")
    pages = {"limit": None}

    @sqlalchemy.event.listens_for(storage.engine, "connect")
    def _limit(conn: Any, _record: Any) -> None:
        cursor = conn.cursor()
        if pages["limit"] is None:
            pages["limit"] = cursor.execute("PRAGMA page_count").fetchone()[0] + 1
        cursor.execute(f"PRAGMA max_page_count = {pages['limit']}")
        cursor.close()

    storage.engine.dispose()  # new connections get the limit

    def fills(params: HyperParams, number: int, hooks: Any) -> float:
        optuna.load_study(study_name="s", storage=storage).set_user_attr(f"pad{number}", "x" * 200_000)
        return 0.5

    def body() -> int:
        _search(storage, fills)
        return 0

    with pytest.raises(OSError) as caught:
        _search(storage, fills)
    assert caught.value.errno == 28 and caught.value.filename == str(db)
    assert guarded(body) == 2  # the exit code of every full disk (obdb.errors)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(db) in err[0] and "Traceback" not in err[0]


# --- 20.8: cache-build leftovers when the runner is PID 1 (the container case) ----------------------
def test_cache_build_leftovers_of_a_killed_pid_1_are_removed(tmp_path: Path) -> None:
    """In a container the runner is PID 1 at every start, so "is pid 1 alive" is always true; the
    build folder records the process start time too, and a PID 1 that started at another time is
    another process."""
    from obdb import image_cache
    from obdb.fileio import host_name, process_gone, process_start

    host, here = host_name(), process_start(os.getpid())
    pid1 = process_start(1)
    assert here is not None and pid1 is not None
    killed_pid1 = tmp_path / f".abc.{host}.1.00000000-1.r1.tmp"  # an earlier container's PID 1
    live_pid1 = tmp_path / f".abc.{host}.1.{pid1}.r2.tmp"  # the PID 1 that runs now
    mine = tmp_path / f".abc.{host}.{os.getpid()}.{here}.r3.tmp"  # this process: building right now
    reused = tmp_path / f".abc.{host}.{os.getpid()}.00000000-2.r4.tmp"  # our pid, an older process
    for folder in (killed_pid1, live_pid1, mine, reused):
        folder.mkdir()
    removed = image_cache.remove_abandoned_builds(tmp_path)
    assert sorted(removed) == sorted([killed_pid1, reused])
    assert live_pid1.is_dir() and mine.is_dir()
    assert process_gone(host, 1, "00000000-1") and not process_gone(host, 1, pid1)
    assert not process_gone("another-host", 4_000_000, "x")  # another host's process cannot be asked


def test_a_cache_build_names_its_folder_with_the_process_start_time(tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import tempfile

    from obdb import image_cache
    from obdb.fileio import process_start

    made: list[str] = []
    real = tempfile.mkdtemp

    def spy(*args: Any, **kwargs: Any) -> str:
        made.append(real(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(image_cache.tempfile, "mkdtemp", spy)
    import numpy as np
    from PIL import Image

    from obdb.records import ImageRecord

    Image.fromarray(np.zeros((40, 40, 3), np.uint8)).save(tmp_path / "a.png")
    record = ImageRecord("a", tmp_path / "a.png", 40, 40, np.zeros((0, 4), np.float32), [])
    image_cache.ImageCache.build([record], 32, 32, root=tmp_path / "cache", progress=False)
    parts = Path(made[0]).name[1:].split(".")
    assert parts[2] == str(os.getpid()) and parts[3] == process_start(os.getpid())
