"""Spending search compute where it matters: pruning (synthetic curves and one real fit), warm
starts from settings, earlier searches and earlier studies, continuing a study."""
from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import torch
from optuna.trial import TrialState, create_trial

from hpo.test_hpo import BASE, LOG_SCALE, SPACE, Objective, fake_trainer, load, quality
from obdb.hpo import PruneHook, build_pruner, build_sampler, open_storage, run_search, storage_url
from obdb.hpo.storage import ENV_VAR
from obdb.hpo.warmstart import WarmStart, WarmStartError, from_study, previous_search, resolve
from obdb.settings.schema import HyperParams, ParamRange

optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture(autouse=True)
def _no_env_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)


@pytest.fixture()
def url(tmp_path: Path) -> str:
    return storage_url(None, tmp_path / "hpo")


def search(objective: Objective, url: str, *, max_trials: int, pruner: str = "none", epochs: int = 3,
           warm_start: list = (), name: str = "exp-resnet18", seed: int = 0):
    return run_search(objective, name=name, storage=open_storage(url),
                      sampler=build_sampler("tpe", n_startup_trials=2, seed=seed),
                      pruner=build_pruner(pruner, warmup_epochs=1, max_epochs=epochs), space=SPACE,
                      log_scale=LOG_SCALE, base=BASE, warm_start=warm_start, max_trials=max_trials)


# --- pruning ---------------------------------------------------------------------------------
class CurveObjective(Objective):
    """Plays each trial's curve through the hooks with a trainer that knows its last epoch."""

    def __call__(self, params, number, hooks):
        self.calls.append((number, params))
        curve = self.curve(params, number)
        for epoch, score in enumerate(curve, start=1):
            self.epochs_run[number] = epoch
            trainer = fake_trainer(epoch, score, max_epochs=len(curve))
            for hook in hooks:
                hook.after_epoch(trainer)
        return max(curve)


@pytest.mark.parametrize("pruner", ["median", "hyperband"])
def test_the_worst_curve_is_pruned_and_good_ones_run_to_the_end(url: str, pruner: str) -> None:
    curves = {0: [0.5, 0.6, 0.7, 0.8], 1: [0.6, 0.7, 0.8, 0.9], 2: [0.7, 0.8, 0.9, 0.95], 3: [0.05, 0.1, 0.1, 0.1]}
    objective = CurveObjective(curve=lambda params, number: curves[number])
    result = search(objective, url, max_trials=4, pruner=pruner, epochs=4)
    study = load(url)
    worst = study.trials[3]
    assert worst.state == TrialState.PRUNED and objective.epochs_run[3] == 1
    assert worst.user_attrs["pruned_at_epoch"] == 1
    assert study.trials[2].state == TrialState.COMPLETE and objective.epochs_run[2] == 4
    assert result.trial_number == 2


def test_the_last_epoch_is_never_pruned(url: str) -> None:
    # trial 2 is below the median only at its last epoch: stopping there would save nothing
    curves = {0: [0.1, 0.5], 1: [0.1, 0.7], 2: [0.2, 0.3]}
    objective = CurveObjective(curve=lambda params, number: curves[number])
    search(objective, url, max_trials=3, pruner="median", epochs=2)
    assert [t.state for t in load(url).trials] == [TrialState.COMPLETE] * 3


def test_prune_hook_marks_the_trainer_summary() -> None:
    study = optuna.create_study(direction="maximize", pruner=build_pruner("median", warmup_epochs=1, max_epochs=3,
                                                                          startup_trials=1))
    study.add_trial(create_trial(value=0.9, params={}, distributions={}, intermediate_values={1: 0.9, 2: 0.9}))
    trainer = fake_trainer(1, 0.1, max_epochs=3)
    with pytest.raises(optuna.TrialPruned):
        PruneHook(study.ask()).after_epoch(trainer)
    assert trainer.summary == {"trial/pruned_at_epoch": 1.0}


def test_a_real_fit_is_stopped_by_the_prune_hook(tiny_data: Path, tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from obdb.models import ModelSpec
    from training.test_data_pipeline import tiny_fit_data

    data = tiny_fit_data(tiny_data, cache_images=True, cache_dir=tmp_path / "cache")
    config = fit_config(ModelSpec("resnet18", num_classes=3, min_size=64, max_size=64))
    storage = open_storage(storage_url(None, tmp_path / "hpo"))
    study = optuna.create_study(study_name="real", storage=storage, direction="maximize")
    # earlier trials that reached a mAP of 0.9 after one epoch: a fresh random-init model cannot
    for value in (0.9, 0.95):
        study.add_trial(create_trial(value=value, params={"lr": 0.01}, intermediate_values={1: value, 2: value},
                                     distributions={"lr": optuna.distributions.FloatDistribution(1e-4, 0.1, log=True)}))
    runs = tmp_path / "runs"

    def objective(params: HyperParams, number: int, hooks: list) -> float:
        from obdb.training.fit import fit

        _, state, _ = fit(data, config, params, max_epochs=3, name=f"trial {number}", extra_hooks=hooks,
                          log_dir=runs / f"trial-{number:03d}", seed_offset=number)
        return state.best_score

    result = run_search(objective, name="real", storage=storage, sampler=build_sampler("random", n_startup_trials=1,
                        seed=0), pruner=build_pruner("median", warmup_epochs=1, max_epochs=3),
                        space={"lr": ParamRange(low=1e-4, high=0.1)}, log_scale=["lr"], base=BASE, max_trials=3)
    trial = load(storage_url(None, tmp_path / "hpo"), "real").trials[2]
    assert trial.state == TrialState.PRUNED and trial.user_attrs["pruned_at_epoch"] == 1
    assert list(trial.intermediate_values) == [1] and result.n_pruned == 1
    events = EventAccumulator(str(runs / "trial-002"))
    events.Reload()
    assert [(e.step, e.value) for e in events.Scalars("trial/pruned_at_epoch")] == [(1, 1.0)]
    assert [e.step for e in events.Scalars("val/map")] == [1]  # the epoch that was judged is logged too
    assert "TrialPruned" in events.Tensors("stop_reason/text_summary")[0].tensor_proto.string_val[0].decode()


def fit_config(spec):
    from obdb.training.fit import FitConfig

    return FitConfig(spec=spec, device=torch.device("cpu"), batch_size=3, workers=0, warmup_iters=2, progress=False)


# --- warm starts and continuation --------------------------------------------------------------
def test_warm_starts_run_first_in_order_without_duplicates(url: str) -> None:
    optimal = HyperParams(lr=0.02, momentum=0.9, step_size=2)
    earlier = WarmStart(HyperParams(lr=0.003, momentum=0.6, step_size=4), "earlier search")
    wide = WarmStart(HyperParams(lr=0.5, momentum=0.99, step_size=9), "study wide")  # outside SPACE
    objective = Objective()
    search(objective, url, max_trials=5, warm_start=[optimal, earlier, WarmStart(optimal, "dup"), wide])
    first = [(p.lr, p.momentum, p.step_size) for _, p in objective.calls[:3]]
    assert first == [(0.02, 0.9, 2), (0.003, 0.6, 4), (0.1, 0.95, 4)]  # the wide point is moved into range
    trials = load(url).trials
    assert [t.user_attrs.get("warm_start_source") for t in trials[:4]] == ["settings", "earlier search",
                                                                          "study wide", None]
    assert [n for n, _ in objective.calls] == [0, 1, 2, 3, 4]


def test_continuing_a_study_adds_only_the_new_trials(url: str) -> None:
    warm = [HyperParams(lr=0.02, momentum=0.9, step_size=2)]
    first = Objective()
    search(first, url, max_trials=3, warm_start=warm)
    before = [(t.number, t.params, t.value, t.datetime_complete) for t in load(url).trials]
    second = Objective()
    result = search(second, url, max_trials=5, warm_start=warm, seed=1)
    assert [n for n, _ in second.calls] == [3, 4]  # no warm start again, no finished trial repeated
    assert all(p.lr != 0.02 for _, p in second.calls)
    study = load(url)
    assert [(t.number, t.params, t.value, t.datetime_complete) for t in study.trials[:3]] == before
    assert len(study.trials) == 5 and result.n_complete == 5
    assert not study.get_trials(states=(TrialState.WAITING, TrialState.RUNNING))


def test_warm_start_from_an_earlier_study_and_a_best_params_file(url: str, tmp_path: Path) -> None:
    objective = Objective()
    search(objective, url, max_trials=4, name="old-resnet18")
    best_number = max(range(4), key=lambda n: quality(objective.calls[n][1]))
    from_old = from_study(open_storage(url), "old-resnet18", BASE)
    assert from_old.params == objective.calls[best_number][1] and f"trial {best_number}" in from_old.source
    saved = tmp_path / "best_params.json"
    saved.write_text(json.dumps({"source": "search", "params": HyperParams(lr=0.004).model_dump()}))
    points = resolve(["old-resnet18", str(saved)], open_storage(url), BASE)
    assert [p.params.lr for p in points] == [from_old.params.lr, 0.004]
    assert previous_search(saved).params.lr == 0.004
    saved.write_text(json.dumps({"source": "settings: optimal_hpo_settings", "params": HyperParams().model_dump()}))
    assert previous_search(saved) is None  # fixed parameters are not a search result
    assert previous_search(tmp_path / "missing.json") is None
    with pytest.raises(WarmStartError, match="no study named 'nope'"):
        resolve(["nope"], open_storage(url), BASE)
    with pytest.raises(WarmStartError, match="file not found"):
        resolve([str(tmp_path / "gone.json")], open_storage(url), BASE)


def test_pipeline_warm_starts_settings_then_earlier_search_then_named(tmp_path: Path, tiny_data: Path) -> None:
    from helpers.tiny_data import tiny_settings
    from obdb.pipeline import RunError, run_paths, warm_starts
    from obdb.settings import load_settings

    raw = tiny_settings(tiny_data, tmp_path)
    raw["resnet18"]["run_hpo"] = 1
    (tmp_path / "settings.json").write_text(json.dumps(raw))
    settings = load_settings(tmp_path / "settings.json")
    paths = run_paths(settings)
    storage_path = storage_url(None, paths.save_dir)
    search(Objective(), storage_path, max_trials=2, name="older-resnet18")
    saved = paths.best_params_file("resnet18")
    saved.parent.mkdir(parents=True, exist_ok=True)
    saved.write_text(json.dumps({"source": "search", "params": HyperParams(lr=0.0042).model_dump()}))
    with_named = settings.model_copy(
        update={"hpo": settings.hpo.model_copy(update={"warm_start_from": ["older-resnet18"]})})
    points = warm_starts(with_named, "resnet18", paths, open_storage(storage_path), BASE)
    assert [p.source.split(" ")[0] for p in points] == ["optimal_hpo_settings", "earlier", "study"]
    assert points[0].params == settings.variant("resnet18").optimal_hpo_settings and points[1].params.lr == 0.0042
    missing = settings.model_copy(update={"hpo": settings.hpo.model_copy(update={"warm_start_from": ["missing"]})})
    with pytest.raises(RunError, match="warm_start_from"):
        warm_starts(missing, "resnet18", paths, open_storage(storage_path), BASE)
