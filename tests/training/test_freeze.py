"""Freeze, then unfreeze (model.freeze_backbone_epochs): the phases, the warm-up restart, resume
across the phase change, the searched value, and the wiring through fit()."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers.kill import Interrupt, KillAfter
from helpers.tiny_freeze import STEPS, TinyBackboneDetector, evaluate, loader
from obdb.hpo.space import suggest
from obdb.settings.schema import HyperParams
from obdb.training import BackboneFreezeHook, CheckpointHook, EvalHook, Hook, Trainer
from obdb.training.fit import FitConfig, freeze_epochs
from obdb.training.optim import build_optimizer, build_scheduler, warmup_factor

CPU = torch.device("cpu")
class Snapshots(Hook):
    def __init__(self) -> None:
        self.body: list[dict[str, torch.Tensor]] = []
        self.head: list[dict[str, torch.Tensor]] = []
        self.lrs: list[float] = []
        self.grad_flags: list[list[bool]] = []

    def before_train(self, trainer: Trainer) -> None:
        self.after_epoch(trainer)

    def after_step(self, trainer: Trainer, losses: dict[str, float]) -> None:
        self.lrs.append(trainer.optimizer.param_groups[0]["lr"])

    def after_epoch(self, trainer: Trainer) -> None:
        model = trainer.model
        self.body.append({k: v.clone() for k, v in model.backbone.body.state_dict().items()})
        self.head.append({k: v.clone() for k, v in model.head.state_dict().items()})
        self.grad_flags.append([p.requires_grad for p in model.backbone.body.parameters()])


def make(hooks: list[Hook], *, max_epochs: int = 3, freeze: int = 1, warmup: int = 2) -> Trainer:
    model = TinyBackboneDetector()
    hp = HyperParams(lr=0.05, momentum=0.9, weight_decay=1e-3, step_size=1, gamma=0.7)
    optimizer = build_optimizer(model, hp)
    all_hooks: list[Hook] = [BackboneFreezeHook(freeze)] if freeze else []
    all_hooks += [EvalHook(evaluate), *hooks]
    return Trainer(model, optimizer, build_scheduler(optimizer, hp), loader(), device=CPU, max_epochs=max_epochs,
                   hooks=all_hooks, warmup_iters=warmup, amp=False, name="tiny", progress=False)


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return all(torch.equal(a[k], b[k]) for k in a)


def test_freeze_phase_changes_no_backbone_tensor_and_unfreeze_does() -> None:
    snaps = Snapshots()
    trainer = make([snaps], freeze=1)
    trainer.train()
    assert same(snaps.body[1], snaps.body[0])  # epoch 1: weights and BatchNorm statistics untouched
    assert not same(snaps.head[1], snaps.head[0])  # ... while the head trained
    assert not same(snaps.body[2], snaps.body[1])  # epoch 2: the backbone trains
    # the backbone's own trainable_layers rule comes back: its first conv stays frozen throughout
    assert torch.equal(snaps.body[2]["0.weight"], snaps.body[0]["0.weight"])
    assert snaps.grad_flags[2] == [False, True, True, True, True, True]
    assert trainer.state.warmup_start == STEPS


def test_freeze_then_unfreeze_under_distributed_data_parallel(tmp_path: Path) -> None:
    """Two gloo ranks: DDP all-reduces only the parameters that train when it is built, so the hook
    rebuilds the wrapper at each phase change (without that, the frozen epoch fails waiting for
    backbone gradients that never come). Frozen epoch: no body tensor moves on any rank; after
    the unfreeze the body trains, and both ranks end with the same weights."""
    import socket

    import torch.multiprocessing as mp

    from helpers.tiny_freeze import ddp_freeze_worker

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.spawn(ddp_freeze_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for saved in ranks:
        assert same(saved["body"][1], saved["body"][0])
        assert not same(saved["body"][2], saved["body"][1])
        assert torch.equal(saved["body"][2]["0.weight"], saved["body"][0]["0.weight"])  # trainable_layers
    assert all(torch.equal(ranks[0]["model"][k], ranks[1]["model"][k]) for k in ranks[0]["model"]
               if not k.endswith(("running_mean", "running_var", "num_batches_tracked")))


def test_without_freezing_the_backbone_trains_from_the_first_epoch() -> None:
    snaps = Snapshots()
    make([snaps], freeze=0, max_epochs=1).train()
    assert not same(snaps.body[1], snaps.body[0])


def test_warmup_restarts_at_unfreeze() -> None:
    snaps = Snapshots()
    trainer = make([snaps], freeze=1, warmup=2)
    trainer.train()
    epoch_lr = [0.05, 0.05 * 0.7, 0.05 * 0.7 ** 2]
    expected = [epoch_lr[0] * warmup_factor(i, 2) for i in range(STEPS)]
    expected += [epoch_lr[1] * warmup_factor(i, 2) for i in range(STEPS)] + [epoch_lr[2]] * STEPS
    assert snaps.lrs == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("killed_after", [1, 2])
def test_resume_across_the_phase_change_continues_exactly(tmp_path: Path, killed_after: int) -> None:
    """Killed in the frozen phase (1) or just after the unfreeze (2): the resumed run is in the
    right phase, with the restarted warm-up, and ends with the straight run's weights."""
    straight_snaps = Snapshots()
    straight = make([CheckpointHook(tmp_path / "straight"), straight_snaps], freeze=1)
    straight.train()
    with pytest.raises(Interrupt):
        make([CheckpointHook(tmp_path / "resumed"), KillAfter(killed_after)], freeze=1).train()
    snaps = Snapshots()
    resumed = make([CheckpointHook(tmp_path / "resumed"), snaps], freeze=1)
    assert resumed.resume(tmp_path / "resumed" / "last.pt")
    assert resumed.state.warmup_start == (0 if killed_after == 1 else STEPS)
    resumed.train()
    assert snaps.lrs == pytest.approx(straight_snaps.lrs[killed_after * STEPS:], rel=1e-12)
    assert same(resumed.model.state_dict(), straight.model.state_dict())
    assert resumed.state.warmup_start == STEPS
    assert [h["score"] for h in resumed.state.history] == [h["score"] for h in straight.state.history]


def test_freeze_backbone_epochs_is_searchable_and_wins_over_the_setting() -> None:
    import optuna

    from obdb.models import ModelSpec
    from obdb.settings.schema import Settings

    settings = Settings.model_validate({"variants": ["resnet18"], "hpo_parameters": {
        "freeze_backbone_epochs": {"low": 0, "high": 3}}})
    trial = optuna.create_study().ask()
    params = suggest(trial, settings.hpo_parameters, [], HyperParams())
    assert isinstance(params.freeze_backbone_epochs, int) and 0 <= params.freeze_backbone_epochs <= 3
    assert trial.distributions["freeze_backbone_epochs"] == optuna.distributions.IntDistribution(0, 3)
    config = FitConfig(spec=ModelSpec("resnet18"), device=CPU, freeze_backbone_epochs=2)
    assert freeze_epochs(HyperParams(), config) == 2
    assert freeze_epochs(HyperParams(freeze_backbone_epochs=0), config) == 0
    with pytest.raises(ValueError, match="freeze_backbone_epochs"):
        Settings.model_validate({"variants": ["resnet18"], "hpo_parameters": {
            "freeze_backbone_epochs": {"low": -1, "high": 2}}})


def test_fit_trains_only_fpn_and_head_in_the_frozen_epoch(tiny_data: Path) -> None:
    from obdb.models import ModelSpec, build_detector
    from obdb.records import ClassMap
    from obdb.sources.local import load_local
    from obdb.training.fit import FitData, fit

    records = load_local(tiny_data / "annotations", images_dir=tiny_data / "images", progress=False).records
    data = FitData(records[:6], records[6:8], ClassMap(("red", "blue")))
    spec = ModelSpec("resnet18", num_classes=3, min_size=64, max_size=64)
    config = FitConfig(spec=spec, device=CPU, batch_size=3, workers=0, warmup_iters=1, progress=False,
                       freeze_backbone_epochs=1, amp=False)
    torch.manual_seed(config.seed)
    initial, _ = build_detector(spec)
    model, state, _ = fit(data, config, HyperParams(lr=0.01), max_epochs=1, name="frozen")
    assert state.iteration == 2
    assert same(model.backbone.body.state_dict(), initial.backbone.body.state_dict())
    assert not same(model.backbone.fpn.state_dict(), initial.backbone.fpn.state_dict())
