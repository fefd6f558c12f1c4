"""Hyperparameter search: the space, warm start, budgets across reruns, stale trials, pruning,
failed trials and storage URLs, with a cheap synthetic objective instead of training."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable, Sequence

import optuna
import pytest
import torch
from optuna.distributions import FloatDistribution, IntDistribution
from optuna.trial import TrialState
from torch import nn

from helpers.servers import PG_URL, postgres_up
from obdb.hpo import (PruneHook, SearchResult, build_pruner, build_sampler, n_startup_trials, open_storage, redact,
                      run_search, storage_url, study_name, suggest)
from obdb.hpo.storage import ENV_VAR
from obdb.settings.schema import DEFAULT_LOG_SCALE, HyperParams, ParamRange
from obdb.training import EpochResult, Hook, Trainer, TrainingDiverged

optuna.logging.set_verbosity(optuna.logging.WARNING)

SPACE = {
    "lr": ParamRange(low=1e-4, high=1e-1),
    "momentum": ParamRange(low=0.5, high=0.95, log=False),
    "step_size": ParamRange(low=1, high=4),
}
BASE = HyperParams(lr=0.01, momentum=0.9, weight_decay=3e-4, step_size=3, gamma=0.25)
LOG_SCALE = list(DEFAULT_LOG_SCALE)


def fake_trainer(epoch: int, score: float, max_epochs: int = 1000) -> Trainer:
    """A real Trainer (of a one-weight model) as hooks see it after evaluating ``epoch``."""
    model = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(model, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 1), [], device=torch.device("cpu"),
                      max_epochs=max_epochs, progress=False)
    trainer.state.epoch = epoch
    trainer.result = EpochResult(score, improved=True)
    return trainer


def quality(params: HyperParams) -> float:
    """A smooth synthetic objective in [0, 1], best at lr = 0.01."""
    return 1.0 / (1.0 + abs(math.log10(params.lr) + 2.0))


class Objective:
    """``objective(params, number, hooks)``: plays a per-epoch score curve through the hooks like
    a trainer would, and records what it was asked to do."""

    def __init__(self, curve: Callable[[HyperParams, int], Sequence[float]] | None = None,
                 diverge: Sequence[int] = ()) -> None:
        self.curve = curve or (lambda params, number: [quality(params) * f for f in (0.5, 0.8, 1.0)])
        self.diverge = set(diverge)
        self.calls: list[tuple[int, HyperParams]] = []
        self.epochs_run: dict[int, int] = {}

    def __call__(self, params: HyperParams, number: int, hooks: Sequence[Hook]) -> float:
        self.calls.append((number, params))
        if number in self.diverge:
            raise TrainingDiverged(f"trial {number}: loss is nan")
        best = -math.inf
        for epoch, score in enumerate(self.curve(params, number), start=1):
            self.epochs_run[number] = epoch
            trainer = fake_trainer(epoch, score)
            for hook in hooks:
                hook.after_epoch(trainer)  # type: ignore[arg-type]
            best = max(best, score)
        return best


@pytest.fixture(autouse=True)
def _no_env_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture()
def storage_path(tmp_path: Path) -> str:
    return storage_url(None, tmp_path / "hpo")


def search(objective: Objective, url: str, *, max_trials: int, pruner: str = "none", sampler: str = "random",
           warm_start: Sequence[HyperParams] = (), seed: int = 0, name: str = "exp-resnet18") -> SearchResult:
    return run_search(objective, name=name, storage=open_storage(url),
                      sampler=build_sampler(sampler, n_startup_trials=2, seed=seed),
                      pruner=build_pruner(pruner, warmup_epochs=1, max_epochs=3), space=SPACE, log_scale=LOG_SCALE,
                      base=BASE, warm_start=warm_start, max_trials=max_trials)


def load(url: str, name: str = "exp-resnet18") -> optuna.Study:
    return optuna.load_study(study_name=name, storage=open_storage(url))


# --- space -----------------------------------------------------------------------------------
def test_suggest_respects_integer_and_log_flags_and_keeps_base() -> None:
    space = {
        "lr": ParamRange(low=1e-4, high=1e-1),                       # log by default (log_scale)
        "gamma": ParamRange(low=0.1, high=0.9, log=False),           # explicit flag beats log_scale
        "momentum": ParamRange(low=0.5, high=0.9),                   # not in this log_scale: linear
        "step_size": ParamRange(low=1, high=6, log=True),            # integer by name, log by flag
    }
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    params = suggest(trial, space, ["lr", "gamma"], BASE)
    dists = trial.distributions
    assert dists["lr"] == FloatDistribution(1e-4, 1e-1, log=True)
    assert dists["gamma"] == FloatDistribution(0.1, 0.9, log=False)
    assert dists["momentum"] == FloatDistribution(0.5, 0.9, log=False)
    assert dists["step_size"] == IntDistribution(1, 6, log=True)
    assert isinstance(params.step_size, int)
    assert params.weight_decay == BASE.weight_decay  # not searched: the base value
    assert set(trial.params) == set(space)


def test_suggest_integer_flag_for_both_int_ranges() -> None:
    # the loader turns a legacy [2, 5] into integer=True; integer=False forces a float dimension
    space = {"step_size": ParamRange(low=2, high=5, integer=True),
             "gamma": ParamRange(low=0.2, high=0.8, integer=False, log=False)}
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(30):
        trial = study.ask()
        params = suggest(trial, space, [], BASE)
        assert trial.distributions["step_size"] == IntDistribution(2, 5)
        assert isinstance(trial.distributions["gamma"], FloatDistribution)
        assert 2 <= params.step_size <= 5 and 0.2 <= params.gamma <= 0.8
        seen.add(params.step_size)
        study.tell(trial, 0.0)
    assert seen == {2, 3, 4, 5}


def test_suggest_log_scale_samples_small_values() -> None:
    space = {"lr": ParamRange(low=1e-5, high=1e-1)}
    log_values, lin_values = [], []
    for values, log_scale in ((log_values, ["lr"]), (lin_values, [])):
        study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=2))
        for _ in range(200):
            trial = study.ask()
            values.append(suggest(trial, space, log_scale, BASE).lr)
            study.tell(trial, 0.0)
    # log-uniform puts ~3/4 of the draws below 1e-2; uniform only ~1/10
    assert sum(v < 1e-2 for v in log_values) > 120
    assert sum(v < 1e-2 for v in lin_values) < 50


@pytest.mark.parametrize(("setting", "space_size", "max_trials", "expected"), [
    ("infer", 5, 20, 10),      # twice the dimensions
    ("infer", 5, 8, 4),        # at most half the budget
    ("infer", 2, 100, 4),
    ("infer", 0, 20, 2),       # an empty space counts as one dimension
    ("infer", 5, 1, 1),        # at least one
    ("infer", 3, 3, 1),
    (7, 5, 20, 7),             # an explicit number is used as is
    (1, 5, 20, 1),
])
def test_n_startup_trials(setting: int | str, space_size: int, max_trials: int, expected: int) -> None:
    assert n_startup_trials(setting, space_size, max_trials) == expected


def test_builders_and_unknown_names() -> None:
    assert isinstance(build_sampler("tpe", n_startup_trials=3, seed=0), optuna.samplers.TPESampler)
    assert isinstance(build_sampler("random", n_startup_trials=3, seed=0), optuna.samplers.RandomSampler)
    assert isinstance(build_pruner("median", warmup_epochs=1, max_epochs=5), optuna.pruners.MedianPruner)
    assert isinstance(build_pruner("hyperband", warmup_epochs=0, max_epochs=5), optuna.pruners.HyperbandPruner)
    assert isinstance(build_pruner("none", warmup_epochs=1, max_epochs=5), optuna.pruners.NopPruner)
    with pytest.raises(ValueError, match="unknown sampler"):
        build_sampler("grid", n_startup_trials=1, seed=0)
    with pytest.raises(ValueError, match="unknown pruner"):
        build_pruner("asha", warmup_epochs=1, max_epochs=5)
    assert study_name("weeds", "resnet18_fcos") == "weeds-resnet18_fcos"


# --- run_search ------------------------------------------------------------------------------
def test_warm_start_params_are_trial_zero(storage_path: str) -> None:
    warm = HyperParams(lr=0.0123, momentum=0.777, weight_decay=0.5, step_size=2, gamma=0.5)
    objective = Objective()
    result = search(objective, storage_path, max_trials=3, warm_start=[warm])
    number, params = objective.calls[0]
    assert number == 0
    assert (params.lr, params.momentum, params.step_size) == (0.0123, 0.777, 2)
    # only the searched part is taken from the warm start; the rest is the base
    assert params.weight_decay == BASE.weight_decay and params.gamma == BASE.gamma
    trial0 = load(storage_path).trials[0]
    assert trial0.user_attrs["warm_start"] is True
    assert trial0.params == {"lr": 0.0123, "momentum": 0.777, "step_size": 2}
    assert trial0.user_attrs["params_full"] == params.model_dump()
    assert [n for n, _ in objective.calls] == [0, 1, 2]
    assert result.n_complete == 3


def test_warm_start_only_for_a_new_study(storage_path: str) -> None:
    warm = HyperParams(lr=0.0123, momentum=0.777, step_size=2)
    search(Objective(), storage_path, max_trials=1, warm_start=[warm])
    second = Objective()
    search(second, storage_path, max_trials=2, warm_start=[warm])
    assert len(second.calls) == 1 and second.calls[0][1].lr != 0.0123


def test_max_trials_counts_across_reruns(storage_path: str) -> None:
    first = Objective()
    result = search(first, storage_path, max_trials=3)
    assert len(first.calls) == 3 and result.n_complete == 3
    second = Objective()
    result = search(second, storage_path, max_trials=5, seed=1)
    assert [n for n, _ in second.calls] == [3, 4]
    study = load(storage_path)
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 5
    assert len(study.trials) == 5
    third = Objective()
    result = search(third, storage_path, max_trials=5, seed=2)
    assert third.calls == []  # budget already spent: nothing runs, the best is still reported
    assert result.n_complete == 5
    assert result.value == pytest.approx(max(t.value for t in study.trials))


def test_stale_running_trial_is_failed_and_rerun_with_its_params(storage_path: str) -> None:
    storage = open_storage(storage_path)
    study = optuna.create_study(study_name="exp-resnet18", storage=storage, direction="maximize",
                                sampler=optuna.samplers.RandomSampler(seed=5))
    killed = study.ask()
    killed_params = suggest(killed, SPACE, LOG_SCALE, BASE)  # a runner was killed while training this
    assert study.trials[0].state == TrialState.RUNNING

    objective = Objective()
    result = search(objective, storage_path, max_trials=2,
                    warm_start=[HyperParams(lr=0.05)])  # not a new study: no warm start
    study = load(storage_path)
    assert study.trials[0].state == TrialState.FAIL
    retry = study.trials[1]
    assert retry.user_attrs["retry_of"] == 0
    assert retry.state == TrialState.COMPLETE
    number, params = objective.calls[0]
    assert number == 1 and params == killed_params
    assert retry.params == killed.params
    assert len(objective.calls) == 2 and result.n_complete == 2 and result.n_failed == 1
    assert not study.get_trials(states=(TrialState.RUNNING, TrialState.WAITING))


def test_prune_hook_prunes_the_worst_curve_with_the_median_pruner(storage_path: str) -> None:
    curves = {0: [0.4, 0.5, 0.6], 1: [0.5, 0.6, 0.7], 2: [0.1, 0.1, 0.2], 3: [0.6, 0.7, 0.8]}
    objective = Objective(curve=lambda params, number: curves[number])
    result = search(objective, storage_path, max_trials=4, pruner="median")
    study = load(storage_path)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED, TrialState.COMPLETE]
    pruned = study.trials[2]
    assert pruned.user_attrs["pruned_at_epoch"] == 1 and objective.epochs_run[2] == 1
    assert pruned.intermediate_values == {1: 0.1}
    assert objective.epochs_run[3] == 3  # a better curve runs to the end
    assert study.trials[3].intermediate_values == {1: 0.6, 2: 0.7, 3: 0.8}
    assert study.trials[3].user_attrs["epochs_run"] == 3
    assert (result.n_complete, result.n_pruned, result.n_failed) == (3, 1, 0)
    assert result.trial_number == 3 and result.value == pytest.approx(0.8)


def test_median_pruner_waits_for_startup_trials(storage_path: str) -> None:
    curves = {0: [0.5, 0.6, 0.7], 1: [0.1, 0.1, 0.1], 2: [0.0, 0.0, 0.0]}
    objective = Objective(curve=lambda params, number: curves[number])
    search(objective, storage_path, max_trials=3, pruner="median")
    states = [t.state for t in load(storage_path).trials]
    # one finished trial is not enough to compare against; after two, the worst is pruned
    assert states == [TrialState.COMPLETE, TrialState.COMPLETE, TrialState.PRUNED]


def test_diverged_trial_fails_and_the_search_continues(storage_path: str) -> None:
    objective = Objective(diverge=[1])
    result = search(objective, storage_path, max_trials=4)
    study = load(storage_path)
    assert study.trials[1].state == TrialState.FAIL
    assert [n for n, _ in objective.calls][:3] == [0, 1, 2]
    assert study.trials[2].state == TrialState.COMPLETE
    assert result.n_failed == 1 and result.n_complete >= 2
    assert result.trial_number != 1


def test_search_where_every_trial_fails_raises(storage_path: str) -> None:
    with pytest.raises(RuntimeError, match="no trial completed"):
        search(Objective(diverge=[0, 1]), storage_path, max_trials=2)


def test_search_result_json(storage_path: str) -> None:
    objective = Objective()
    result = search(objective, storage_path, max_trials=4, sampler="tpe")
    values = {n: quality(p) for n, p in objective.calls}
    best_number = max(values, key=values.get)
    data = json.loads(json.dumps(result.to_json()))
    assert data["best_value"] == pytest.approx(values[best_number])
    assert data["trial_number"] == best_number == result.trial_number
    assert data["study_name"] == "exp-resnet18"
    assert data["trials"] == {"complete": 4, "pruned": 0, "failed": 0}
    best_params = dict(objective.calls[best_number][1].model_dump())
    assert data["params"] == best_params
    assert data["params"]["weight_decay"] == BASE.weight_decay and data["params"]["gamma"] == BASE.gamma


def test_prune_hook_reports_each_epoch() -> None:
    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.NopPruner())
    trial = study.ask()
    hook = PruneHook(trial)
    for epoch, score in enumerate([0.2, 0.3], start=1):
        hook.after_epoch(fake_trainer(epoch, score))  # type: ignore[arg-type]
    frozen = study.trials[0]
    assert frozen.intermediate_values == {1: 0.2, 2: 0.3}
    assert frozen.user_attrs["epochs_run"] == 2 and "pruned_at_epoch" not in frozen.user_attrs


# --- storage ---------------------------------------------------------------------------------
def test_storage_url_default_configured_and_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    default = storage_url(None, tmp_path / "save")
    assert default == f"sqlite:///{(tmp_path / 'save' / 'optuna.db').resolve()}"
    assert storage_url("", tmp_path) == f"sqlite:///{(tmp_path / 'optuna.db').resolve()}"
    assert storage_url("postgresql://u:p@db/optuna", tmp_path) == "postgresql://u:p@db/optuna"
    monkeypatch.setenv(ENV_VAR, "postgresql://worker:s3cret@db.example:5432/optuna")
    assert storage_url("postgresql://u:p@db/optuna", tmp_path) == "postgresql://worker:s3cret@db.example:5432/optuna"
    assert storage_url(None, tmp_path).startswith("postgresql://worker:")


def test_open_storage_creates_the_sqlite_folder(tmp_path: Path) -> None:
    url = storage_url(None, tmp_path / "deep" / "folder")
    storage = open_storage(url)
    optuna.create_study(study_name="s", storage=storage)
    assert (tmp_path / "deep" / "folder" / "optuna.db").is_file()


@pytest.mark.parametrize(("url", "expected"), [
    ("postgresql://worker:s3cret@db.example:5432/optuna", "postgresql://worker:***@db.example:5432/optuna"),
    ("postgresql+psycopg2://me:p%40ss:w0rd@host/db", "postgresql+psycopg2://me:***@host/db"),
    ("mysql://root:@localhost/db", "mysql://root:***@localhost/db"),
    ("postgresql://worker@db.example/optuna", "postgresql://worker@db.example/optuna"),
    ("sqlite:////tmp/save/optuna.db", "sqlite:////tmp/save/optuna.db"),
])
def test_redact_hides_passwords(url: str, expected: str) -> None:
    assert redact(url) == expected
    assert "s3cret" not in redact(url) and "w0rd" not in redact(url)


# --- PostgreSQL (the storage several workers share) -------------------------------------------

@pytest.mark.skipif(not postgres_up(), reason="no PostgreSQL on 127.0.0.1:5432 (CI starts one)")
def test_search_on_postgresql_continues_across_reruns() -> None:
    import uuid

    name = f"pg-{uuid.uuid4().hex[:8]}-resnet18"
    try:
        first = search(Objective(), PG_URL, max_trials=2, name=name, warm_start=[BASE])
        assert first.n_complete == 2
        second = search(Objective(), PG_URL, max_trials=4, name=name)
        assert second.n_complete == 4
        study = load(PG_URL, name)
        assert study.trials[0].params["lr"] == pytest.approx(BASE.lr)
        assert isinstance(open_storage(PG_URL), optuna.storages.RDBStorage)
        assert open_storage(PG_URL).heartbeat_interval == 30
    finally:
        optuna.delete_study(study_name=name, storage=PG_URL)
