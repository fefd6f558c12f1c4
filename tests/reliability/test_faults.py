"""Faults, one test each: kill -9 of the runner during a search trial, during final training and at
random moments; MongoDB stopped mid-read; the PostgreSQL study storage restarted mid-search; CVAT
answering 500 or timing out mid-upload; a full disk and a read-only ``save_dir``.

The runner runs as a user starts it (``code/torch_model_runner.py -f settings.json``, its own
process group, killed with SIGKILL like the OOM killer or ``docker kill`` would), on a data set of
four 64 px images (one train and one validation video), so an epoch is one optimizer step.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from helpers.faults import (MongoRelay, PrivatePostgres, Runner, broken_outputs, can_mount_tmpfs,
                            private_postgres_problem, read_only_dir, run_to_end, shrink_tmpfs, temp_files, tmpfs,
                            trial_record, trials)
from helpers.servers import SecantusServer, free_port
from helpers.tiny_data import make_tiny_dataset, tiny_settings
from obdb.fileio import TEMP_NAME
from obdb.models import load_model
from obdb.training import Hook, Trainer
from obdb.training import hooks as hooks_module
from obdb.training.hooks import CheckpointHook, EvalHook

VARIANT = "resnet18"
STUDY = f"tiny-{VARIANT}"
SEARCH = {"run_hpo": 1, "use_settings_file": 0}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("fault_data"), videos=2, frames=2, size=64)


def write_settings(dataset: Path, out: Path, **changes: Any) -> Path:
    """Tiny settings (64 px) with ``changes`` to top-level keys, ``data`` included."""
    raw = {**tiny_settings(dataset, out, model={"min_size": 64, "max_size": 64, "pretrained": "none"}), **changes}
    path = out / "settings.json"
    path.write_text(json.dumps(raw, indent=2))
    return path


def outputs(out: Path) -> tuple[Path, Path]:
    """``(save_dir, variant folder)`` of the settings written by :func:`write_settings`."""
    return out / "train", out / "train" / VARIANT


def epochs_trained(log: str) -> list[int]:
    """Final-training epochs a run finished, from its per-epoch log lines."""
    return [int(line.split(" final epoch ")[1].split("/")[0]) for line in log.splitlines()
            if f"{VARIANT} final epoch " in line]


def assert_clean_finish(save_dir: Path, variant_dir: Path) -> None:
    """A finished run: the model loads, nothing is half-written, no temp file is left."""
    load_model(variant_dir / "model.pt")
    assert json.loads((variant_dir / "metrics.json").read_text())["status"] == "complete"
    assert temp_files(save_dir) == []
    assert broken_outputs(save_dir) == []


# ------------------------------------------------------------------- the two checkpoint files
class Killed(BaseException):
    """Stands in for SIGKILL inside the process: nothing after it runs."""


class Toy(nn.Module):
    """A one-weight model with the detector calling convention the trainer uses."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(4))

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        return {"loss": ((self.weight * torch.stack(images)) ** 2).mean()}


class Recorder(Hook):
    """Placed before the checkpoint hook: keeps each epoch's weights as trained."""

    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def after_epoch(self, trainer: Trainer) -> None:
        self.weights[trainer.state.epoch] = {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def toy_trainer(folder: Path, scores: dict[int, float], recorder: Recorder, max_epochs: int = 3) -> Trainer:
    model = Toy()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer_box: list[Trainer] = []
    evaluate = EvalHook(lambda _model: {"map": scores[trainer_box[0].state.epoch]})
    trainer = Trainer(model, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 1), [([torch.ones(4)], [{}])],
                      device=torch.device("cpu"), max_epochs=max_epochs, progress=False,
                      hooks=[evaluate, recorder, CheckpointHook(folder)])
    trainer_box.append(trainer)
    return trainer


@pytest.mark.parametrize("killed_write", [1, 2], ids=["first_file", "second_file"])
def test_kill_between_the_two_checkpoint_files_keeps_best_weights_true(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                       killed_write: int) -> None:
    """Epoch 2 improves and writes ``best.pt`` and ``last.pt``; the process dies during one of the
    two writes. The resumed run does not improve on the committed best, so its final best weights
    must be those of the best epoch ``last.pt`` names, never the lost epoch's."""
    writes: list[Path] = []
    real_save = hooks_module.save_torch

    def dying_save(path: Path, obj: Any) -> Path:
        writes.append(Path(path))
        if len(writes) == 2 + killed_write:  # epoch 1 wrote two files
            raise Killed()
        return real_save(path, obj)

    recorder = Recorder()
    monkeypatch.setattr(hooks_module, "save_torch", dying_save)
    with pytest.raises(Killed):
        toy_trainer(tmp_path, {1: 0.5, 2: 0.7}, recorder).train()
    monkeypatch.setattr(hooks_module, "save_torch", real_save)

    resumed = toy_trainer(tmp_path, {2: 0.4, 3: 0.3}, recorder)
    assert resumed.resume(tmp_path / "last.pt")
    state = resumed.train()
    assert state.epoch == 3 and state.best_epoch in (1, 2)
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    expected = recorder.weights[state.best_epoch]
    assert best.keys() == expected.keys()
    assert all(torch.equal(best[k], expected[k]) for k in best), \
        f"best.pt does not hold the weights of epoch {state.best_epoch} (files written: {writes})"


# ------------------------------------------------------------------- kill -9 of the runner
@pytest.mark.slow
def test_kill_9_during_a_search_trial_loses_no_completed_trial(data: Path, tmp_path: Path) -> None:
    settings = write_settings(data, tmp_path, resnet18=SEARCH, search_epochs=2, max_num_trials=2, max_train_epochs=1)
    save_dir, variant_dir = outputs(tmp_path)
    db = save_dir / "optuna.db"

    def mid_trial() -> Any:
        """A complete trial, and a running one that reported its first epoch."""
        now = trials(db, STUDY, live=True)
        running = [t for t in now if t.state.name == "RUNNING" and t.intermediate_values]
        return running[0] if running and any(t.state.name == "COMPLETE" for t in now) else None

    runner = Runner(settings, tmp_path / "first.log")
    killed = runner.wait_until(mid_trial, "a second trial past its first epoch", poll=0.5)
    runner.kill()
    before = trials(db, STUDY)
    completed = {t.number: trial_record(t) for t in before if t.state.name == "COMPLETE"}
    assert [t.number for t in before if t.state.name == "RUNNING"] == [killed.number]
    assert not (variant_dir / "model.pt").exists()

    rerun = run_to_end(settings, tmp_path / "rerun.log")
    assert rerun.process.returncode == 0, rerun.tail()
    after = {t.number: t for t in trials(db, STUDY)}
    assert {n: trial_record(after[n]) for n in completed} == completed  # nothing lost or changed
    assert after[killed.number].state.name == "FAIL"
    (retry,) = [t for t in after.values() if t.user_attrs.get("retry_of") == killed.number]
    assert retry.params == killed.params and retry.state.name == "COMPLETE"
    assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in after.values()) == 2  # max_num_trials
    assert f"trial {killed.number} was left running by an interrupted run" in rerun.text
    best = json.loads((variant_dir / "best_params.json").read_text())
    assert after[best["trial_number"]].state.name == "COMPLETE"
    _, _, _, header = load_model(variant_dir / "model.pt")
    assert header["extra"]["params"] == best["params"]
    assert_clean_finish(save_dir, variant_dir)


@pytest.mark.slow
def test_kill_9_while_a_checkpoint_is_written_redoes_at_most_one_epoch(data: Path, tmp_path: Path) -> None:
    """SIGKILL lands while epoch k+1's ``last.pt`` is being written (its temp file exists): the
    rerun resumes after epoch k, trains only the epochs after it, and removes the dead temp file."""
    settings = write_settings(data, tmp_path, max_train_epochs=3, max_plateau_count=10)
    save_dir, variant_dir = outputs(tmp_path)
    checkpoints = variant_dir / "checkpoints"
    last = checkpoints / "last.pt"

    def writing_next_checkpoint() -> bool:
        try:
            names = os.listdir(checkpoints)
        except FileNotFoundError:
            return False
        # epoch 1 committed (last.pt and best.pt), and a later checkpoint's temp file is being written
        return {"last.pt", "best.pt"} <= set(names) and any(TEMP_NAME.match(n) for n in names)

    runner = Runner(settings, tmp_path / "first.log")
    runner.wait_until(writing_next_checkpoint, "a second last.pt being written", poll=0.005)
    runner.kill()
    k = torch.load(last, weights_only=True)["state"]["epoch"]  # the last committed epoch
    assert 1 <= k < 3 and max(epochs_trained(runner.text)) <= k  # epoch k+1 was in progress: lost
    assert not (variant_dir / "model.pt").exists()

    rerun = run_to_end(settings, tmp_path / "rerun.log")
    assert rerun.process.returncode == 0, rerun.tail()
    assert f"resumed from {last} after epoch {k}" in rerun.text
    assert epochs_trained(rerun.text) == list(range(k + 1, 4))  # only epoch k+1 is trained twice
    assert "temp file(s) that an interrupted run left" in rerun.text
    metrics = json.loads((variant_dir / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1.0, 2.0, 3.0] and metrics["epochs_run"] == 3
    assert_clean_finish(save_dir, variant_dir)


@pytest.mark.slow
def test_kill_9_at_random_moments_never_leaves_a_broken_output(data: Path, tmp_path: Path) -> None:
    """One output folder, killed at a random moment of each of three runs (seeded), then run to the
    end: after every kill each output that exists is whole; at the end nothing is missing."""
    settings = write_settings(data, tmp_path, resnet18=SEARCH, search_epochs=1, max_num_trials=2, max_train_epochs=1)
    save_dir, variant_dir = outputs(tmp_path)
    for seed in (1, 2, 3):
        runner = Runner(settings, tmp_path / f"killed-{seed}.log")
        delay = random.Random(seed).uniform(4.0, 20.0)
        try:
            runner.process.wait(timeout=delay)  # a run with little left may finish first: fine too
        except subprocess.TimeoutExpired:
            runner.kill()
        assert runner.process.returncode in (0, -9), runner.tail()
        assert broken_outputs(save_dir) == [], f"after the kill at {delay:.1f} s:\n{runner.tail()}"
    final = run_to_end(settings, tmp_path / "final.log")
    assert final.process.returncode == 0, final.tail()
    assert_clean_finish(save_dir, variant_dir)
    for name in ("best_params.json", "class_map.json", "manifest.json"):
        assert (variant_dir / name).is_file()


# ------------------------------------------------------------------- MongoDB stopped mid-read
def mongo_with_tiny_data(data: Path, folder: Path) -> SecantusServer:
    """A MongoDB server this test owns, holding the tiny data set's tasks in the original layout."""
    import pymongo

    from helpers.original_export import write_original_export
    from obdb.mongo.snapshot import import_snapshot, snapshot_files

    server = SecantusServer(folder / "mongo")
    export = write_original_export(sorted((data / "annotations").glob("*.xml")), folder / "export")
    with pymongo.MongoClient(server.uri) as client:
        import_snapshot(client["faults"], snapshot_files([export]), progress=False)
    return server


def mongo_block(data: Path, uri: str, timeout_s: float) -> dict[str, Any]:
    return {"source": "mongo", "images_dir": str(data / "images"),
            "mongo": {"uri": uri, "database": "faults", "timeout_s": timeout_s, "retries": 1}}


@pytest.mark.slow
def test_mongodb_stopped_mid_read_is_a_clear_error_and_a_rerun_succeeds(data: Path, tmp_path: Path) -> None:
    """The server dies when the runner asks for the second task's shapes: after the driver's retry
    the run stops with exit 2 and a message naming host:port, having trained nothing. With the
    server back, the same command trains."""
    server = mongo_with_tiny_data(data, tmp_path)
    relay = MongoRelay(server.port, trip_on="aggregate", trip_after=1, on_trip=server.stop)
    settings = write_settings(data, tmp_path, max_train_epochs=1, data=mongo_block(data, relay.uri, timeout_s=2))
    save_dir, variant_dir = outputs(tmp_path)
    restarted = None
    try:
        first = run_to_end(settings, tmp_path / "first.log")
        assert relay.tripped.is_set(), first.tail()
        assert first.process.returncode == 3, first.tail()  # the server went away: exit 3 (obdb.errors)
        error = [line for line in first.text.splitlines() if line.startswith("error: ")]
        assert error and error[-1].startswith(f"error: MongoDB at 127.0.0.1:{relay.port} failed while reading "
                                              f"database 'faults'"), first.tail()
        assert "Traceback" not in first.text
        assert not variant_dir.exists() and not list(save_dir.glob("splits/*.json"))

        restarted = SecantusServer(tmp_path / "mongo")  # same storage, another process
        relay.reopen(restarted.port)
        rerun = run_to_end(settings, tmp_path / "rerun.log")
        assert rerun.process.returncode == 0, rerun.tail()
        assert "2 train / 2 val images" in rerun.text
        assert_clean_finish(save_dir, variant_dir)
    finally:
        relay.close()
        server.stop()
        if restarted is not None:
            restarted.stop()


def test_mongodb_restarted_mid_read_is_ridden_out(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A server back within ``data.mongo.timeout_s`` costs the read nothing: the driver retries it."""
    from obdb.prepare import load_annotations
    from obdb.settings import load_settings

    monkeypatch.delenv("MONGODB_URI", raising=False)
    server = mongo_with_tiny_data(data, tmp_path)
    servers = [server]

    def restart() -> None:
        server.stop()

        def back() -> None:
            time.sleep(0.5)
            servers.append(SecantusServer(tmp_path / "mongo"))
            relay.reopen(servers[-1].port)

        threading.Thread(target=back, daemon=True).start()

    relay = MongoRelay(server.port, trip_on="aggregate", trip_after=1, on_trip=restart)
    try:
        clean = load_annotations(load_settings(write_settings(
            data, tmp_path, data=mongo_block(data, server.uri, timeout_s=30))), progress=False)
        loaded = load_annotations(load_settings(write_settings(
            data, tmp_path, data=mongo_block(data, relay.uri, timeout_s=30))), progress=False)
        assert relay.tripped.is_set() and len(servers) == 2
        assert [(r.image_id, r.boxes.tolist(), r.labels) for r in loaded.records] == \
            [(r.image_id, r.boxes.tolist(), r.labels) for r in clean.records]
        assert len(loaded.records) == 4
    finally:
        relay.close()
        for each in servers:
            each.stop()


# ------------------------------------------------------------------- PostgreSQL restarted mid-search
@pytest.mark.slow
@pytest.mark.skipif(private_postgres_problem() is not None,
                    reason=f"no private PostgreSQL cluster here: {private_postgres_problem()}")
def test_postgresql_restarted_mid_search_loses_no_completed_trial(data: Path, tmp_path: Path) -> None:
    """A private cluster (never the machine's PostgreSQL) restarted while the second trial trains:
    every connection the runner holds is cut. The search rides it out (stale pooled connections are
    replaced, a missed heartbeat is retried), or fails with a clear error and a rerun completes;
    either way no completed trial is lost."""
    pg = PrivatePostgres(free_port())
    env = {"OBDB_OPTUNA_STORAGE": pg.url}
    settings = write_settings(data, tmp_path, resnet18=SEARCH, search_epochs=1, max_num_trials=2, max_train_epochs=1,
                              hpo={"pruner": "none", "heartbeat_interval": 1, "grace_period": 5})
    save_dir, variant_dir = outputs(tmp_path)
    try:
        runner = Runner(settings, tmp_path / "first.log", env)
        runner.wait_until(lambda: f"study {STUDY}: worker" in runner.text and " runs trial 1\n" in runner.text,
                          "the second trial", poll=0.2)
        completed = {t.number: trial_record(t) for t in trials(pg.url, STUDY) if t.state.name == "COMPLETE"}
        assert list(completed) == [0]
        pg.restart()
        code = runner.finish()
        log = runner.text
        if code != 0:  # allowed: an error message, then the same command finishes the study
            assert any(line.startswith("error: ") for line in log.splitlines()), runner.tail()
            rerun = run_to_end(settings, tmp_path / "rerun.log", env)
            assert rerun.process.returncode == 0, rerun.tail()
            log += rerun.text
        after = {t.number: t for t in trials(pg.url, STUDY)}
        assert {n: trial_record(after[n]) for n in completed} == completed
        assert sum(t.state.name in ("COMPLETE", "PRUNED") for t in after.values()) == 2
        assert_clean_finish(save_dir, variant_dir)
    finally:
        pg.close()


# ------------------------------------------------------------------- CVAT errors and timeouts
READ_TIMEOUT_S = 1.5
SLOW_S = 4.0  # an answer this late is given up on, then applied by the server anyway


@pytest.fixture()
def cvat_session(fake_cvat):
    """A session that waits ``READ_TIMEOUT_S`` for an answer and retries once."""
    from obdb.cvat import CvatCredentials, connect

    with connect(CvatCredentials.from_env(fake_cvat.env), retries=1, backoff_s=0.01,
                 timeout_s=(5.0, READ_TIMEOUT_S)) as session:
        yield session


def wait_answered(fake_cvat: Any, method: str, path_regex: str, count: int, timeout: float = 30.0) -> None:
    """Until ``count`` matching requests were handled (a late one is applied after its client left)."""
    import re

    pattern = re.compile(path_regex)
    deadline = time.monotonic() + timeout
    while sum(1 for e in fake_cvat.log if e["method"] == method and pattern.search(e["path"])
              and e["status"] is not None) < count:
        assert time.monotonic() < deadline, f"the fake CVAT never answered {count} {method} {path_regex}"
        time.sleep(0.05)


def test_cvat_timeouts_mid_upload_then_a_rerun_converges(fake_cvat, cvat_session, tmp_path: Path) -> None:
    """auto_annotate into a task: a read that times out is retried; a shape upload that times out
    is not (it may have been applied: here it was) and fails clearly. The task keeps every human
    shape and whole chunks only; the rerun adds exactly the rest, no duplicate."""
    from helpers.annotate import FixedDetector, key_image
    from obdb.annotate.function import ModelDetectionFunction
    from obdb.annotate.modes import annotate_tasks
    from obdb.cvat.push import RunOptions
    from obdb.cvat import CvatError
    from obdb.records import ClassMap

    frames = [key_image(tmp_path / "frames" / f"{k}.png", k) for k in (1, 2)]
    task_id = fake_cvat.add_task("field", ["red", "blue"], frames, shapes=[
        {"type": "rectangle", "frame": 0, "label": "red", "points": [0, 0, 20, 20], "source": "manual"}])
    human = [s for s in fake_cvat.annotations(task_id)["shapes"]]
    outputs = {1: [("red", 0.9, (30 + i, 0, 32 + i, 2)) for i in range(5)],
               2: [("blue", 0.8, (0, 30 + i, 3, 32 + i)) for i in range(5)]}
    function = ModelDetectionFunction(FixedDetector(outputs), ClassMap(("red", "blue")), threshold=0.5, batch_size=2,
                                      progress=False)
    options = RunOptions(out_dir=tmp_path / "out", chunk_size=3, progress=False)
    annotations = rf"^/api/tasks/{task_id}/annotations/?$"

    fake_cvat.delay("GET", annotations, SLOW_S, times=1)  # retried: the second try answers
    fake_cvat.delay("PATCH", annotations, SLOW_S, times=1)  # the first chunk: not retried
    with pytest.raises(CvatError, match=rf"CVAT at {fake_cvat.url} did not answer while .*ReadTimeoutError"):
        annotate_tasks(cvat_session, function, options, names=["field"])
    assert fake_cvat.count("PATCH", annotations) == 1  # no blind retry of a write that may have been applied
    wait_answered(fake_cvat, "PATCH", annotations, 1)
    shapes = fake_cvat.annotations(task_id)["shapes"]
    assert [s for s in shapes if s["source"] != "auto"] == human
    assert sum(s["source"] == "auto" for s in shapes) == 3  # the late chunk, whole

    (plan,) = annotate_tasks(cvat_session, function, options, names=["field"])
    assert (plan.added, plan.duplicates) == (7, 3)
    shapes = fake_cvat.annotations(task_id)["shapes"]
    autos = sorted((s["frame"], tuple(s["points"])) for s in shapes if s["source"] == "auto")
    assert len(autos) == 10 and len(set(autos)) == 10
    assert [s for s in shapes if s["source"] != "auto"] == human

    fake_cvat.delay("GET", annotations, SLOW_S, times=2)  # slower than every try: a clear error
    with pytest.raises(CvatError, match=r"did not answer while .* after 2 tries \(ReadTimeoutError"):
        annotate_tasks(cvat_session, function, options, names=["field"])


def test_sync_interrupted_by_cvat_errors_keeps_whole_tasks_and_a_rerun_converges(fake_cvat, cvat_session,
                                                                                  mongo_db) -> None:
    """obdb sync: one annotations read times out (retried), the next task's answers HTTP 500
    beyond the retries. Every stored task is whole; the rerun stores the rest; a third sync finds
    nothing to do."""
    from obdb.mongo import sync
    from obdb.cvat import CvatError

    frames = [(f"fielddata/cam1/video1/video1frame{i:04d}.png", 64, 48) for i in range(3)]
    names = ["gt_a", "gt_b", "gt_c"]
    for i, name in enumerate(names):
        fake_cvat.add_task(name, ["weed"], frames, status="completed", shapes=[
            {"type": "rectangle", "frame": f, "label": "weed", "points": [i, f, 10 + i, 10 + f]} for f in range(3)])
    annotations = r"^/api/tasks/\d+/annotations/?$"
    fake_cvat.delay("GET", annotations, SLOW_S, times=1)
    fake_cvat.fail("GET", annotations, status=500, times=2, after=1)

    def stored() -> dict[str, list]:
        return {name: sorted(d["points"] for d in mongo_db.annotation_data.find({"task_name": name}))
                for name in mongo_db.tasks.distinct("name")}

    with pytest.raises(CvatError, match="answered HTTP 500 while .* after 2 tries"):
        sync.apply_sync(cvat_session, mongo_db, sync.plan_sync(cvat_session, mongo_db), progress=False)
    partial = stored()
    assert list(partial) == ["gt_a"] and len(partial["gt_a"]) == 3  # whole, and nothing of gt_b
    assert mongo_db.meta.count_documents({}) == 1

    summary = sync.apply_sync(cvat_session, mongo_db, sync.plan_sync(cvat_session, mongo_db), progress=False)
    assert (summary.added, summary.updated) == (2, 0)
    assert stored() == {name: sorted([[float(i), float(f), 10.0 + i, 10.0 + f] for f in range(3)])
                        for i, name in enumerate(names)}
    again = sync.plan_sync(cvat_session, mongo_db)
    assert (again.add, again.update, [t.name for t in again.unchanged]) == ([], [], names)


# ------------------------------------------------------------------- full disk, read-only save_dir
def test_read_only_save_dir_is_refused_before_training(data: Path, tmp_path: Path) -> None:
    save_dir = tmp_path / "train"
    elsewhere = tmp_path / "tensorboard"
    settings = write_settings(data, tmp_path, writer_dir=str(elsewhere))
    with read_only_dir(save_dir):
        result = run_to_end(settings, tmp_path / "run.log", timeout=300)
        assert list(save_dir.iterdir()) == []
    assert result.process.returncode == 2, result.tail()
    assert f"error: save_dir {save_dir} is not writable" in result.text
    assert "Traceback" not in result.text and " epoch " not in result.text
    assert not elsewhere.exists()  # nothing written anywhere else either


@pytest.mark.slow
def test_a_full_disk_fails_cleanly_and_keeps_the_last_good_checkpoint(data: Path, tmp_path: Path) -> None:
    """The checkpoint volume fills up after the first epoch's checkpoint (a tmpfs shrunk to what it
    holds; where mounting is not allowed, a 1 MiB file size limit on the runner): the run stops with
    a message naming the file, the last good checkpoint still loads, and with room again the same
    command resumes from it."""
    settings = write_settings(data, tmp_path, max_train_epochs=2, max_plateau_count=10)
    save_dir, variant_dir = outputs(tmp_path)
    checkpoints = variant_dir / "checkpoints"
    last = checkpoints / "last.pt"
    on_tmpfs = can_mount_tmpfs()
    with tmpfs(checkpoints, 1 << 30) if on_tmpfs else contextlib.nullcontext():
        runner = Runner(settings, tmp_path / "full.log")
        runner.wait_until(lambda: last.exists() and (checkpoints / "best.pt").exists() and not temp_files(checkpoints),
                          "the first checkpoint", poll=0.02)
        if on_tmpfs:
            shrink_tmpfs(checkpoints, leave=1 << 20)
        else:
            resource.prlimit(runner.process.pid, resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
        good = torch.load(last, weights_only=True)["state"]["epoch"]
        assert good == 1, "the second epoch was written before the volume filled up"
        assert runner.finish() == 2, runner.tail()  # a full disk is for the user to fix
        reason = "No space left on device" if on_tmpfs else "File too large"
        assert f"error: cannot write {checkpoints}/" in runner.text and reason in runner.text, runner.tail()
        assert "Traceback" not in runner.text
        assert torch.load(last, weights_only=True)["state"]["epoch"] == good  # intact, still the resume point
        assert temp_files(checkpoints) == [] and not (variant_dir / "model.pt").exists()

        if on_tmpfs:
            assert subprocess.run(["mount", "-o", f"remount,size={1 << 30}", str(checkpoints)]).returncode == 0
        rerun = run_to_end(settings, tmp_path / "rerun.log")
        assert rerun.process.returncode == 0, rerun.tail()
        assert f"resumed from {last} after epoch {good}" in rerun.text
        assert epochs_trained(rerun.text) == [2]
        assert_clean_finish(save_dir, variant_dir)
