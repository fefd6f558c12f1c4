"""Trainer, hooks and optimiser schedule, on a tiny deterministic stand-in model; one real fit()."""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from torch import nn

from helpers.kill import Interrupt, KillAfter
from obdb.settings.schema import HyperParams
from obdb.training import (CheckpointHook, EarlyStopHook, EpochResult, EvalHook, Hook, TensorBoardHook, Trainer,
                           TrainingDiverged, build_optimizer, build_scheduler, warmup_factor)

CPU = torch.device("cpu")
STEPS_PER_EPOCH = 3


class TinyDetector(nn.Module):
    """``forward(images, targets) -> losses`` like a torchvision detector in train mode: a linear
    layer on per-channel mean pixels regressing a scalar target. No randomness anywhere."""

    def __init__(self, nan_at_call: int | None = None) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)
        with torch.no_grad():
            self.linear.weight.copy_(torch.tensor([[0.3, -0.2, 0.1]]))
            self.linear.bias.fill_(0.05)
        self.nan_at_call = nan_at_call
        self.calls = 0

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        self.calls += 1
        features = torch.stack([img.mean(dim=(1, 2)) for img in images])
        wanted = torch.stack([t["value"] for t in targets])
        pred = self.linear(features).squeeze(1)
        loss_reg = ((pred - wanted) ** 2).mean()
        if self.nan_at_call is not None and self.calls >= self.nan_at_call:
            loss_reg = loss_reg * float("nan")
        return {"loss_reg": loss_reg, "loss_l1": 0.1 * (pred - wanted).abs().mean()}


def fake_loader(steps: int = STEPS_PER_EPOCH, batch: int = 2) -> list[tuple[list[torch.Tensor], list[dict]]]:
    """A re-iterable list of deterministic batches (what a DataLoader yields)."""
    generator = torch.Generator().manual_seed(1234)
    batches = []
    for _ in range(steps):
        images = [torch.rand(3, 8, 8, generator=generator) for _ in range(batch)]
        targets = [{"value": img.mean() * 2.0 - 0.3, "labels": torch.tensor([1])} for img in images]
        batches.append((images, targets))
    return batches


def model_score(model: nn.Module) -> float:
    """A validation score that depends only on the weights (so it survives a resume)."""
    with torch.no_grad():
        losses = [sum(model(images, targets).values()) for images, targets in fake_loader(2)]
    return float(1.0 / (1.0 + sum(losses)))


def scripted_evaluate(scores: list[float]) -> Callable[[nn.Module], dict[str, Any]]:
    remaining = list(scores)

    def evaluate(model: nn.Module) -> dict[str, Any]:
        model.eval()
        score = remaining.pop(0)
        return {"map": score, "map50": score + 0.1, "per_class": {"a": 1.0}, "is_bool": True}

    return evaluate


def weight_evaluate(model: nn.Module) -> dict[str, Any]:
    model.eval()
    return {"map": model_score(model)}


def make_trainer(hooks: list[Hook] = (), *, max_epochs: int = 3, lr: float = 0.05, step_size: int = 1,
                 gamma: float = 0.5, warmup_iters: int = 0, model: nn.Module | None = None,
                 loader: Any = None) -> Trainer:
    model = model or TinyDetector()
    hp = HyperParams(lr=lr, momentum=0.9, weight_decay=1e-4, step_size=step_size, gamma=gamma)
    optimizer = build_optimizer(model, hp)
    scheduler = build_scheduler(optimizer, hp)
    return Trainer(model, optimizer, scheduler, loader if loader is not None else fake_loader(), device=CPU,
                   max_epochs=max_epochs, hooks=list(hooks), warmup_iters=warmup_iters, amp=False, name="tiny",
                   progress=False)


class Recorder(Hook):
    """Records the lr each optimizer step used and the lr/metrics seen after each epoch."""

    def __init__(self) -> None:
        self.step_lrs: list[float] = []
        self.step_losses: list[dict[str, float]] = []
        self.epoch_metrics: list[dict[str, float]] = []
        self.epoch_results: list[EpochResult | None] = []
        self.epoch_optimizer_lr: list[float] = []

    def after_step(self, trainer: Trainer, losses: dict[str, float]) -> None:
        self.step_lrs.append(trainer.optimizer.param_groups[0]["lr"])
        self.step_losses.append(dict(losses))

    def after_epoch(self, trainer: Trainer) -> None:
        self.epoch_metrics.append(dict(trainer.metrics))
        self.epoch_results.append(trainer.result)
        self.epoch_optimizer_lr.append(trainer.optimizer.param_groups[0]["lr"])


# --- schedule --------------------------------------------------------------------------------
def test_warmup_factor_ramps_linearly_to_one() -> None:
    factors = [warmup_factor(i, 10) for i in range(13)]
    assert factors[0] == pytest.approx(0.001)
    steps = [b - a for a, b in zip(factors[:10], factors[1:11])]
    assert all(s == pytest.approx(steps[0]) for s in steps)  # linear
    assert steps[0] == pytest.approx((1 - 0.001) / 10)
    assert factors[10:] == [1.0, 1.0, 1.0]
    assert all(a < b for a, b in zip(factors[:10], factors[1:11]))
    assert warmup_factor(0, 0) == 1.0 and warmup_factor(5, 0) == 1.0
    assert warmup_factor(2, 4, start_factor=0.5) == pytest.approx(0.75)


def test_lr_follows_warmup_then_steplr_from_the_base_lr() -> None:
    recorder = Recorder()
    base_lr, warmup = 0.1, 4
    trainer = make_trainer([recorder], max_epochs=3, lr=base_lr, step_size=1, gamma=0.5, warmup_iters=warmup)
    trainer.train()
    epoch_lr = [base_lr * 0.5 ** (i // STEPS_PER_EPOCH) for i in range(3 * STEPS_PER_EPOCH)]
    expected = [lr * warmup_factor(i, warmup) for i, lr in enumerate(epoch_lr)]
    assert recorder.step_lrs == pytest.approx(expected, rel=1e-9)
    # the warm-up spans the first epoch boundary, yet epoch 2 starts from 0.05, not 0.5 * a warmed-down lr
    assert recorder.step_lrs[STEPS_PER_EPOCH] == pytest.approx(0.05 * warmup_factor(STEPS_PER_EPOCH, warmup))
    assert recorder.step_lrs[warmup:] == pytest.approx(epoch_lr[warmup:])
    # per-epoch "lr" metric is the epoch's scheduled lr; the optimizer is left at the next epoch's
    assert [m["lr"] for m in recorder.epoch_metrics] == pytest.approx([0.1, 0.05, 0.025])
    assert recorder.epoch_optimizer_lr == pytest.approx([0.05, 0.025, 0.0125])
    assert trainer.scheduler.get_last_lr() == pytest.approx([0.0125])


def test_lr_without_warmup_and_step_size_two() -> None:
    recorder = Recorder()
    make_trainer([recorder], max_epochs=4, lr=0.2, step_size=2, gamma=0.1).train()
    assert [m["lr"] for m in recorder.epoch_metrics] == pytest.approx([0.2, 0.2, 0.02, 0.02])
    assert recorder.step_lrs == pytest.approx([0.2] * 6 + [0.02] * 6)


def test_trainer_counts_epochs_iterations_and_averages_losses() -> None:
    recorder = Recorder()
    trainer = make_trainer([recorder], max_epochs=2)
    state = trainer.train()
    assert state.epoch == 2 and state.iteration == 2 * STEPS_PER_EPOCH
    assert trainer.stop_reason == "reached 2 epochs"
    assert len(state.history) == 2 and [h["epoch"] for h in state.history] == [1.0, 2.0]
    first = recorder.step_losses[:STEPS_PER_EPOCH]
    assert first[0]["loss"] == pytest.approx(first[0]["loss_reg"] + first[0]["loss_l1"])
    for key in ("loss", "loss_reg", "loss_l1"):
        assert state.history[0][f"train/{key}"] == pytest.approx(sum(s[key] for s in first) / STEPS_PER_EPOCH)
    assert state.history[1]["train/loss"] < state.history[0]["train/loss"]  # it does learn


# --- hooks -----------------------------------------------------------------------------------
def test_eval_hook_tracks_best_and_plateau() -> None:
    recorder = Recorder()
    scores = [0.2, 0.5, 0.4, 0.5, 0.7]
    trainer = make_trainer([EvalHook(scripted_evaluate(scores)), recorder], max_epochs=5)
    seen: list[tuple[float, int, int]] = []

    class Watch(Hook):
        def after_epoch(self, t: Trainer) -> None:
            seen.append((t.state.best_score, t.state.best_epoch, t.state.plateau))
            assert t.model.training  # EvalHook puts the model back in train mode

    trainer.hooks.append(Watch())
    state = trainer.train()
    assert seen == [(0.2, 1, 0), (0.5, 2, 0), (0.5, 2, 1), (0.5, 2, 2), (0.7, 5, 0)]
    assert recorder.epoch_results == [EpochResult(s, i) for s, i in zip(scores, [True, True, False, False, True])]
    assert [h["improved"] for h in state.history] == [1.0, 1.0, 0.0, 0.0, 1.0]  # the history keeps both
    assert [h["score"] for h in state.history] == scores
    metrics = recorder.epoch_metrics[0]
    assert metrics["val/map"] == 0.2 and metrics["val/map50"] == pytest.approx(0.3)
    assert "val/per_class" not in metrics and "val/is_bool" not in metrics
    assert state.best_score == 0.7 and state.best_epoch == 5 and state.plateau == 0


def test_eval_hook_min_delta_and_other_metric() -> None:
    trainer = make_trainer([EvalHook(scripted_evaluate([0.3, 0.305, 0.4]), metric="map50", min_delta=0.01)],
                           max_epochs=3)
    state = trainer.train()
    # map50 is score + 0.1: 0.4, 0.405 (not enough of a gain), 0.5
    assert state.best_score == pytest.approx(0.5) and state.best_epoch == 3
    assert [h["improved"] for h in state.history] == [1.0, 0.0, 1.0]


def test_early_stop_after_patience() -> None:
    trainer = make_trainer([EvalHook(scripted_evaluate([0.1, 0.3, 0.2, 0.2, 0.2])), EarlyStopHook(2)],
                           max_epochs=10)
    state = trainer.train()
    assert state.epoch == 4
    assert trainer.should_stop
    assert "no improvement for 2 epochs" in trainer.stop_reason and "epoch 2" in trainer.stop_reason
    assert state.best_score == 0.3 and state.best_epoch == 2 and state.plateau == 2


def test_early_stop_honours_plateau_of_a_resumed_run() -> None:
    trainer = make_trainer([EvalHook(scripted_evaluate([0.9])), EarlyStopHook(2)], max_epochs=10)
    trainer.state.epoch, trainer.state.plateau, trainer.state.best_epoch, trainer.state.best_score = 5, 2, 3, 0.5
    state = trainer.train()
    assert state.epoch == 5 and state.iteration == 0
    assert trainer.should_stop


def test_checkpoint_hook_writes_loadable_last_and_best(tmp_path: Path) -> None:
    snapshots: list[dict[str, torch.Tensor]] = []

    class Snapshot(Hook):
        def after_epoch(self, t: Trainer) -> None:
            snapshots.append({k: v.clone() for k, v in t.model.state_dict().items()})

    checkpoint = CheckpointHook(tmp_path / "ckpt")
    trainer = make_trainer([EvalHook(scripted_evaluate([0.4, 0.6, 0.5])), checkpoint, Snapshot()], max_epochs=3)
    trainer.train()
    assert checkpoint.last_path == tmp_path / "ckpt" / "last.pt"
    last = torch.load(checkpoint.last_path, map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "scheduler", "state"} <= set(last)
    state = last["state"]
    assert state["epoch"] == 3 and state["iteration"] == 3 * STEPS_PER_EPOCH
    assert state["best_score"] == 0.6 and state["best_epoch"] == 2 and state["plateau"] == 1
    assert [h["score"] for h in state["history"]] == [0.4, 0.6, 0.5]
    assert last["scheduler"]["last_epoch"] == 3
    assert last["optimizer"]["param_groups"][0]["lr"] == pytest.approx(0.05 * 0.5 ** 3)
    for key, value in last["model"].items():
        assert torch.equal(value, snapshots[2][key])
    best = torch.load(checkpoint.best_path, map_location="cpu", weights_only=True)
    assert set(best) == set(snapshots[1])
    for key, value in best.items():
        assert torch.equal(value, snapshots[1][key])  # epoch 2's weights, not the last epoch's
    assert not torch.equal(best["linear.weight"], snapshots[2]["linear.weight"])
    assert not list((tmp_path / "ckpt").glob("*.tmp"))


@pytest.mark.parametrize("warmup_iters", [0, 5])
def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path: Path, warmup_iters: int) -> None:
    kwargs = dict(max_epochs=4, lr=0.05, step_size=1, gamma=0.7, warmup_iters=warmup_iters)
    straight_dir, resumed_dir = tmp_path / "straight", tmp_path / "resumed"
    straight = make_trainer([EvalHook(weight_evaluate), CheckpointHook(straight_dir)], **kwargs)
    straight_state = straight.train()

    first = make_trainer([EvalHook(weight_evaluate), CheckpointHook(resumed_dir), KillAfter(2)], **kwargs)
    with pytest.raises(Interrupt):
        first.train()

    recorder = Recorder()
    second = make_trainer([EvalHook(weight_evaluate), CheckpointHook(resumed_dir), recorder], **kwargs)
    assert second.resume(resumed_dir / "last.pt")
    assert second.state.epoch == 2 and second.state.iteration == 2 * STEPS_PER_EPOCH
    state = second.train()
    assert state.epoch == 4 and state.iteration == 4 * STEPS_PER_EPOCH
    assert len(recorder.step_lrs) == 2 * STEPS_PER_EPOCH  # only the missing epochs ran
    assert [h["epoch"] for h in state.history] == [1.0, 2.0, 3.0, 4.0]
    assert [h["score"] for h in state.history] == [h["score"] for h in straight_state.history]
    assert (state.best_score, state.best_epoch, state.plateau) == (
        straight_state.best_score, straight_state.best_epoch, straight_state.plateau)
    # Same data, same order, no randomness, CPU: the arithmetic is identical, so the weights are too.
    for (key, a), b in zip(straight.model.state_dict().items(), second.model.state_dict().values()):
        assert torch.equal(a, b), key
    assert second.optimizer.param_groups[0]["lr"] == straight.optimizer.param_groups[0]["lr"]
    for name in ("last.pt", "best.pt"):
        a = torch.load(straight_dir / name, weights_only=True)
        b = torch.load(resumed_dir / name, weights_only=True)
        weights_a, weights_b = (a["model"], b["model"]) if name == "last.pt" else (a, b)
        assert all(torch.equal(weights_a[k], weights_b[k]) for k in weights_a)


def test_resume_without_checkpoint_starts_fresh(tmp_path: Path) -> None:
    trainer = make_trainer(max_epochs=1)
    assert trainer.resume(tmp_path / "missing" / "last.pt") is False
    assert trainer.state.epoch == 0 and trainer.state.iteration == 0


@pytest.mark.parametrize("damage", ["truncated", "not_torch", "wrong_content"])
def test_damaged_checkpoint_is_a_clear_error_and_is_left_in_place(tmp_path: Path, damage: str) -> None:
    from obdb.training import CheckpointError

    make_trainer([CheckpointHook(tmp_path)], max_epochs=1).train()
    last = tmp_path / "last.pt"
    if damage == "truncated":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    elif damage == "not_torch":
        last.write_text('{"epoch": 3}')
    else:
        torch.save({"model": {}, "epoch": 3}, last)
    damaged = last.read_bytes()
    with pytest.raises(CheckpointError, match=f"checkpoint {last} .*move it away to start this model from scratch"):
        make_trainer(max_epochs=2).resume(last)
    assert last.read_bytes() == damaged


def test_resume_of_a_finished_run_trains_nothing(tmp_path: Path) -> None:
    make_trainer([EvalHook(weight_evaluate), CheckpointHook(tmp_path)], max_epochs=2).train()
    recorder = Recorder()
    again = make_trainer([EvalHook(weight_evaluate), recorder], max_epochs=2)
    assert again.resume(tmp_path / "last.pt")
    state = again.train()
    assert state.epoch == 2 and recorder.step_lrs == [] and recorder.epoch_metrics == []


@pytest.mark.parametrize("bad", ["nan", "inf"])
def test_non_finite_loss_raises_training_diverged(bad: str) -> None:
    model = TinyDetector(nan_at_call=2 if bad == "nan" else None)
    if bad == "inf":
        with torch.no_grad():
            model.linear.bias.fill_(float("inf"))
    trainer = make_trainer(model=model, max_epochs=2)
    with pytest.raises(TrainingDiverged, match=rf"tiny: loss is {bad} at epoch 1, iteration"):
        trainer.train()
    assert trainer.state.iteration == (1 if bad == "nan" else 0)
    assert trainer.state.epoch == 0


def test_diverged_step_does_not_update_weights() -> None:
    model = TinyDetector(nan_at_call=1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(TrainingDiverged):
        make_trainer(model=model).train()
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_tensorboard_hook_writes_losses_metrics_and_lr(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log_dir = tmp_path / "runs" / "trial-0"
    hooks = [EvalHook(scripted_evaluate([0.25, 0.5])), TensorBoardHook(log_dir, every=2)]
    trainer = make_trainer(hooks, max_epochs=2, lr=0.1, step_size=1, gamma=0.5)
    trainer.train()
    assert list(log_dir.glob("events.out.tfevents.*"))
    events = EventAccumulator(str(log_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/loss", "loss/loss_reg", "val/map", "val/map50", "lr", "train/loss"} <= tags
    assert [(e.step, round(e.value, 6)) for e in events.Scalars("val/map")] == [(1, 0.25), (2, 0.5)]
    assert [e.value for e in events.Scalars("lr")] == pytest.approx([0.1, 0.05])
    assert [e.step for e in events.Scalars("loss/loss")] == [2, 4, 6]  # every 2nd of 6 steps
    assert not any(math.isnan(e.value) for e in events.Scalars("loss/loss"))
    assert hooks[1].writer is None  # closed after training


# --- one real detector -----------------------------------------------------------------------
def test_fit_trains_a_real_detector_for_one_epoch(tiny_data: Path, tmp_path: Path) -> None:
    from obdb.models import ModelSpec
    from obdb.records import ClassMap
    from obdb.sources.local import load_local
    from obdb.split import TRAIN, VAL, make_split
    from obdb.training.fit import FitConfig, FitData, fit

    records = load_local(tiny_data / "annotations", images_dir=tiny_data / "images", progress=False).records
    manifest = make_split(records, "group", val_fraction=0.25, seed=0)
    data = FitData([r for r in records if manifest.assignment[r.image_id] == TRAIN],
                   [r for r in records if manifest.assignment[r.image_id] == VAL], ClassMap(("red", "blue")))
    config = FitConfig(spec=ModelSpec("resnet18", num_classes=3, min_size=96, max_size=96), device=CPU,
                       batch_size=3, workers=0, warmup_iters=2, progress=False)
    model, state, spec = fit(data, config, HyperParams(), max_epochs=1, name="tiny-fit",
                             checkpoint_dir=tmp_path / "ckpt")
    assert state.epoch == 1 and state.iteration == 3
    assert 0.0 <= state.best_score <= 1.0 and state.best_epoch == 1
    assert spec.backbone == "resnet18" and spec.num_classes == 3
    assert math.isfinite(state.history[0]["train/loss"])
    assert (tmp_path / "ckpt" / "last.pt").is_file() and (tmp_path / "ckpt" / "best.pt").is_file()


@pytest.mark.parametrize("cache_images", [False, True])
def test_fit_trains_on_an_image_thinner_than_one_to_max_size(tiny_data: Path, tmp_path: Path,
                                                             cache_images: bool) -> None:
    """A 400×2 strip at max_size 96: the detector's own resize would make it 0 px high (a crash
    in interpolate). The image cache resizes it to >= 1 px; without the cache the trainer pads it."""
    from PIL import Image

    from obdb.models import ModelSpec
    from obdb.records import ClassMap, ImageRecord
    from obdb.sources.local import load_local
    from obdb.training.fit import FitConfig, FitData, fit

    records = load_local(tiny_data / "annotations", images_dir=tiny_data / "images", progress=False).records
    strip = tmp_path / "strip.png"
    Image.new("RGB", (400, 2), (200, 30, 30)).save(strip)
    thin = ImageRecord("strip", strip, 400, 2, [[10, 0, 60, 2]], ["red"], group="strip")
    data = FitData([thin], records[:2], ClassMap(("red", "blue")), hflip=0.0, cache_images=cache_images,
                   cache_dir=tmp_path / "cache" if cache_images else None, progress=False)
    config = FitConfig(spec=ModelSpec("resnet18", num_classes=3, min_size=96, max_size=96), device=CPU,
                       batch_size=1, workers=0, warmup_iters=1, progress=False, amp=False)
    model, state, _ = fit(data, config, HyperParams(lr=0.001), max_epochs=1, name="thin")
    assert state.iteration == 1 and math.isfinite(state.history[0]["train/loss"])
