"""One runner per SQLite study (issue 20.4): a second runner stops at once with a message naming
the holder and touches nothing; a lock whose holder was killed is taken over; the final
training is never trained twice at once. Two real runner processes (``fake_worker.py``: the real
entry point with a sleeping ``fit``), plus fast in-process checks of the lock itself.
"""
from __future__ import annotations

import json
import logging
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from obdb.fileio import host_name, process_start
from obdb.hpo import coordination
from obdb.hpo.coordination import StudyBusy, lock_file, runner_lock
from obdb.hpo.storage import ENV_VAR

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("fake_worker.py")


def start(settings: Path, tmp_path: Path, name: str, **env: str) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    environ.update({"OBDB_WORKER_ID": name, "FAKE_LOG": str(tmp_path / f"{name}.jsonl"), "OMP_NUM_THREADS": "1",
                    "FAKE_SLEEP": "0.05", **env})
    return subprocess.Popen([sys.executable, str(WORKER), "-f", str(settings), "--progress", "false"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environ, cwd=ROOT, text=True)


def events(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    path = tmp_path / f"{name}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("phase", ["trial", "final"])
def test_a_second_runner_is_refused_and_a_killed_runners_lock_is_taken_over(settings_file: Any, tmp_path: Path,
                                                                             phase: str) -> None:
    searched = phase == "trial"
    settings = settings_file(resnet18={"run_hpo": int(searched), "use_settings_file": 0 if searched else 1,
                                       "optimal_hpo_settings": {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0001,
                                                                "step_size": 3, "gamma": 0.5}},
                             max_num_trials=3, search_epochs=1)
    hang = {"FAKE_HANG": "1"} if searched else {"FAKE_HANG_NAME": "final"}
    first = start(settings, tmp_path, "first", **hang)
    try:
        deadline = time.time() + 120
        while not events(tmp_path, "first") and first.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert events(tmp_path, "first"), first.communicate(timeout=30)
        second = start(settings, tmp_path, "second")
        out, err = second.communicate(timeout=180)
        assert second.returncode == 2, err[-3000:]
        message = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(message) == 1 and f"pid {first.pid}" in message[0] and f"host {host_name()}" in message[0]
        assert "in use by another runner" in message[0] and "started " in message[0]
        assert not events(tmp_path, "second")  # it trained nothing: no trial, no final model
        save_dir = tmp_path / "train"
        if searched:  # and it left the first runner's trial alone
            study = optuna.load_study(study_name="tiny-resnet18", storage=f"sqlite:///{save_dir / 'optuna.db'}")
            assert [t.state for t in study.trials] == [TrialState.RUNNING]
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=30)

    third = start(settings, tmp_path, "third")
    out, err = third.communicate(timeout=300)
    assert third.returncode == 0, err[-3000:]
    assert "taking over the lock of a runner that is gone" in err
    finals = [e for e in events(tmp_path, "third") if e["event"] == "start" and e["name"] == "resnet18 final"]
    assert len(finals) == 1
    assert json.loads((save_dir / "resnet18" / "metrics.json").read_text())["status"] == "complete"
    if searched:
        study = optuna.load_study(study_name="tiny-resnet18", storage=f"sqlite:///{save_dir / 'optuna.db'}")
        states = [t.state for t in study.trials]
        assert states.count(TrialState.COMPLETE) == 3 and states[0] == TrialState.FAIL, states


# --- the lock itself, in-process -----------------------------------------------------------------
def _hold(db: str, ready: Any, release: Any) -> None:
    with runner_lock(Path(db), "exp-variant"):
        ready.set()
        release.wait(60)


def test_runner_lock_names_its_holder_and_is_taken_over_after_a_kill(tmp_path: Path,
                                                                      caplog: pytest.LogCaptureFixture) -> None:
    context = multiprocessing.get_context("fork")
    ready, release = context.Event(), context.Event()
    holder = context.Process(target=_hold, args=(str(tmp_path / "optuna.db"), ready, release))
    holder.start()
    try:
        assert ready.wait(30)
        with pytest.raises(StudyBusy, match=rf"pid {holder.pid}, started "):
            with runner_lock(tmp_path / "optuna.db", "exp-variant"):
                pass
        with runner_lock(tmp_path / "optuna.db", "exp-other"):  # another study is free
            pass
    finally:
        os.kill(holder.pid, signal.SIGKILL)
        holder.join(30)
    with caplog.at_level(logging.WARNING, logger="obdb.hpo.coordination"):
        with runner_lock(tmp_path / "optuna.db", "exp-variant"):
            record = json.loads(lock_file(tmp_path / "optuna.db", "exp-variant").read_text())
            assert record["pid"] == os.getpid() and record["host"] == host_name()
    assert f"pid {holder.pid}" in caplog.text  # the dead holder was named when its lock was taken over
    assert not lock_file(tmp_path / "optuna.db", "exp-variant").exists()  # released: nothing left behind


def test_runner_lock_without_working_flock_decides_by_the_recorded_process(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Volumes without ``flock``: a record of a live process (host + pid + start time) holds; a record
    of a dead one, or of a pid now used by another process (PID 1 of a restarted container), not."""
    monkeypatch.setattr(coordination, "_flock", lambda fd: None)
    path = lock_file(tmp_path / "optuna.db", "s")
    live = {"host": host_name(), "pid": os.getpid(), "process_start": process_start(os.getpid()), "started": "t"}
    path.write_text(json.dumps(live))
    with pytest.raises(StudyBusy, match=f"pid {os.getpid()}"):
        with runner_lock(tmp_path / "optuna.db", "s"):
            pass
    for gone in ({**live, "process_start": "00000000-1"},  # same pid, another process (reused pid)
                 {**live, "pid": 4_000_000}):  # no such process
        path.write_text(json.dumps(gone))
        with runner_lock(tmp_path / "optuna.db", "s"):
            pass
    path.write_text(json.dumps({**live, "host": "elsewhere"}))  # another host's runner cannot be asked
    with pytest.raises(StudyBusy, match="host elsewhere"):
        with runner_lock(tmp_path / "optuna.db", "s"):
            pass
