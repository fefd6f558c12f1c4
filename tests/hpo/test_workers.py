"""Several workers on one PostgreSQL study, through the real runner with a fake (sleeping) fit:
the trial budget holds exactly, no trial runs twice, one worker trains the final model, and a
worker killed mid-trial leads to a retry by the other worker instead of a hang.

Needs the PostgreSQL server on 127.0.0.1:5432 (CI starts it); skipped without one. Every study
has a unique name and is deleted afterwards; every wait is bounded.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from helpers.servers import PG_URL, postgres_up
from helpers.tiny_data import tiny_settings
from obdb.hpo import open_storage
from obdb.hpo.coordination import DatabaseLock, claim_final
from obdb.hpo.storage import ENV_VAR

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(__file__).with_name("fake_worker.py")



pytestmark = pytest.mark.skipif(not postgres_up(), reason="no PostgreSQL on 127.0.0.1:5432 (CI starts one)")


@pytest.fixture()
def experiment() -> Any:
    name = f"wk{uuid.uuid4().hex[:10]}"
    yield name
    for summary in optuna.get_all_study_summaries(storage=PG_URL):
        if summary.study_name.startswith(name + "-"):
            optuna.delete_study(study_name=summary.study_name, storage=PG_URL)


def write_settings(tiny_data: Path, tmp_path: Path, experiment: str, grace_period: int = 3, **changes: Any) -> Path:
    settings = tiny_settings(tiny_data, tmp_path, experiment=experiment,
                             resnet18={"run_hpo": 1, "use_settings_file": 0}, search_epochs=2,
                             hpo={"pruner": "none", "sampler": "tpe", "storage": PG_URL,
                                  "heartbeat_interval": 1, "grace_period": grace_period}, **changes)
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(settings))
    return path


def start_worker(settings: Path, tmp_path: Path, worker: str, **env: str) -> subprocess.Popen[str]:
    environ = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    environ.update({"OBDB_WORKER_ID": worker, "FAKE_LOG": str(tmp_path / f"{worker}.jsonl"),
                    "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "code"), **env})
    log = open(tmp_path / f"{worker}.log", "w")
    return subprocess.Popen([sys.executable, str(WORKER), "-f", str(settings), "--progress", "false"],
                            stdout=log, stderr=subprocess.STDOUT, env=environ, cwd=ROOT, text=True)


def calls(tmp_path: Path, event: str = "start") -> list[dict[str, Any]]:
    out = []
    for path in sorted(tmp_path.glob("*.jsonl")):
        out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [c for c in out if c["event"] == event]


def wait_all(processes: list[subprocess.Popen[str]], tmp_path: Path, timeout: float = 150) -> None:
    deadline = time.time() + timeout
    for process in processes:
        try:
            process.wait(timeout=max(1.0, deadline - time.time()))
        except subprocess.TimeoutExpired:
            for other in processes:
                other.kill()
            logs = "\n".join(p.read_text()[-2000:] for p in tmp_path.glob("*.log"))
            pytest.fail(f"a worker did not finish within {timeout} s (hang):\n{logs}")


def log_text(tmp_path: Path, worker: str) -> str:
    return (tmp_path / f"{worker}.log").read_text()


def test_two_workers_share_one_study_exactly(tiny_data: Path, tmp_path: Path, experiment: str) -> None:
    settings = write_settings(tiny_data, tmp_path, experiment, max_num_trials=6)
    rendezvous = tmp_path / "rendezvous"
    rendezvous.mkdir()
    workers = [start_worker(settings, tmp_path, f"w{i}", FAKE_SLEEP="0.3", FAKE_RENDEZVOUS=str(rendezvous))
               for i in range(2)]
    wait_all(workers, tmp_path)
    for i, process in enumerate(workers):
        assert process.returncode == 0, log_text(tmp_path, f"w{i}")[-3000:]

    study = optuna.load_study(study_name=f"{experiment}-resnet18", storage=PG_URL)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 6 and len(states) == 6, states  # exactly the budget

    trials = [c for c in calls(tmp_path) if "trial" in c["name"]]
    numbers = [int(c["name"].rsplit(" ", 1)[1]) for c in trials]
    assert sorted(numbers) == list(range(6))  # every trial ran once, none twice
    assert {c["worker"] for c in trials} == {"w0", "w1"}  # both workers searched
    points = {tuple(sorted(c["params"].items())) for c in trials}
    assert len(points) == 6  # no two trials tried the same hyperparameters
    assert {t.user_attrs["worker"] for t in study.trials} == {"w0", "w1"}

    finals = [c for c in calls(tmp_path) if c["name"] == "resnet18 final"]
    assert len(finals) == 1, finals  # one worker trained the final model
    winner = finals[0]["worker"]
    other = "w1" if winner == "w0" else "w0"
    other_log = log_text(tmp_path, other)
    assert ("another worker is training the final model" in other_log
            or "final model already trained" in other_log), other_log[-3000:]
    metrics = json.loads((tmp_path / "train" / "resnet18" / "metrics.json").read_text())
    assert metrics["status"] == "complete"
    best = json.loads((tmp_path / "train" / "resnet18" / "best_params.json").read_text())
    assert best["trial_number"] == study.best_trial.number and best["trials"]["complete"] == 6
    assert metrics["params"] == best["params"]


def test_killed_worker_trial_is_retried_not_hung(tiny_data: Path, tmp_path: Path, experiment: str) -> None:
    # a grace period of 6 heartbeats: a live worker starved of CPU for a few seconds is not taken for dead
    settings = write_settings(tiny_data, tmp_path, experiment, grace_period=6, max_num_trials=4)
    doomed = start_worker(settings, tmp_path, "doomed", FAKE_HANG="1")
    deadline = time.time() + 90
    while not calls(tmp_path) and doomed.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    started = calls(tmp_path)
    assert started, log_text(tmp_path, "doomed")[-3000:]
    survivor = start_worker(settings, tmp_path, "survivor", FAKE_SLEEP="0.2")
    while (len(calls(tmp_path)) < 2 and survivor.poll() is None and doomed.poll() is None
           and time.time() < deadline + 60):
        time.sleep(0.1)
    assert len(calls(tmp_path)) >= 2, log_text(tmp_path, "survivor")[-3000:]  # both are mid-trial now
    os.kill(doomed.pid, signal.SIGKILL)  # its trial stays RUNNING until its heartbeat goes stale
    doomed.wait(timeout=30)
    wait_all([survivor], tmp_path, timeout=120)
    assert survivor.returncode == 0, log_text(tmp_path, "survivor")[-3000:]

    study = optuna.load_study(study_name=f"{experiment}-resnet18", storage=PG_URL)
    by_state = {s: [t for t in study.trials if t.state == s] for s in TrialState}
    assert len(by_state[TrialState.COMPLETE]) == 4
    assert len(by_state[TrialState.FAIL]) == 1 and not by_state[TrialState.RUNNING]
    killed = by_state[TrialState.FAIL][0]
    assert killed.user_attrs["worker"] == "doomed"
    retries = [t for t in study.trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].state == TrialState.COMPLETE
    assert retries[0].params == killed.params  # the same point, run again
    assert retries[0].user_attrs["worker"] == "survivor"
    # outcomes only (no log lines, no timing): every completed trial, the retry included, ran on the survivor
    assert {t.user_attrs["worker"] for t in by_state[TrialState.COMPLETE]} == {"survivor"}
    assert [c["name"] for c in calls(tmp_path) if c["name"].endswith("final")] == ["resnet18 final"]
    assert (tmp_path / "train" / "resnet18" / "metrics.json").exists()


def test_database_locks_exclude_each_other_and_die_with_their_holder(experiment: str) -> None:
    storage = open_storage(PG_URL)
    first = DatabaseLock(storage, f"{experiment}-lock")
    second = DatabaseLock(storage, f"{experiment}-lock")
    assert first.try_acquire()
    assert not second.try_acquire()
    with pytest.raises(TimeoutError):
        second.acquire(timeout=0.3)
    first.release()
    assert second.try_acquire()
    second.release()

    claim = claim_final(storage, f"{experiment}-resnet18")
    assert claim.held and not claim_final(storage, f"{experiment}-resnet18").held
    claim.release()
    assert claim_final(storage, f"{experiment}-resnet18").held  # released (and the next one GC-closed)

    # a holder that dies releases its lock with its connection
    code = ("import time; from obdb.hpo import open_storage; "
            "from obdb.hpo.coordination import DatabaseLock; "
            f"lock = DatabaseLock(open_storage({PG_URL!r}), {experiment + '-held'!r}); "
            "assert lock.try_acquire(); print('held', flush=True); time.sleep(60)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**os.environ, "PYTHONPATH": str(ROOT / "code")})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert not DatabaseLock(storage, f"{experiment}-held").try_acquire()
    finally:
        holder.kill()
        holder.wait(timeout=30)
    lock = DatabaseLock(storage, f"{experiment}-held")
    lock.acquire(timeout=10)
    lock.release()


def test_sqlite_claims_and_locks_are_always_free(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'optuna.db'}")
    assert DatabaseLock(storage, "x").try_acquire() and DatabaseLock(storage, "x").try_acquire()
    assert claim_final(None, "exp-resnet18").held


def test_open_storage_heartbeat_settings() -> None:
    storage = open_storage(PG_URL, heartbeat_interval=1, grace_period=3, max_retry=5)
    assert (storage.heartbeat_interval, storage.grace_period) == (1, 3)
    retry = storage.get_heartbeat_stale_trial_callback()
    assert isinstance(retry, optuna.storages.RetryHeartbeatStaleTrialCallback) and retry._max_retry == 5
    with pytest.raises(ValueError, match="grace_period"):
        open_storage(PG_URL, heartbeat_interval=5, grace_period=5)
