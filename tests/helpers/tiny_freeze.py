"""A detector-shaped toy for the freeze/unfreeze tests: ``backbone.body`` with a frozen first conv
and a trainable BatchNorm, a head, and the ``forward(images, targets) -> losses`` of a detector;
plus a worker that trains it under DistributedDataParallel on gloo (spawned by the DDP test, so
it lives in an importable module)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

STEPS = 3


class TinyBackboneDetector(nn.Module):
    """``backbone.body`` (conv + trainable BatchNorm, its first conv frozen as by
    ``trainable_layers``) and a head, with a detector's ``forward(images, targets) -> losses``."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.backbone = nn.Module()
        self.backbone.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 1))
        self.backbone.body[0].weight.requires_grad_(False)
        self.head = nn.Linear(4, 1)

    def forward(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        features = self.backbone.body(torch.stack(images)).mean(dim=(2, 3))
        pred = self.head(features).squeeze(1)
        return {"loss": ((pred - torch.stack([t["value"] for t in targets])) ** 2).mean()}


def loader(rank: int = 0) -> list[tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]]:
    generator = torch.Generator().manual_seed(1 + rank)
    batches = []
    for _ in range(STEPS):
        images = [torch.rand(3, 8, 8, generator=generator) for _ in range(2)]
        batches.append((images, [{"value": img.mean() * 3.0} for img in images]))
    return batches


def evaluate(model: nn.Module) -> dict[str, Any]:
    model.eval()
    with torch.no_grad():
        loss = sum(float(model(i, t)["loss"]) for i, t in loader())
    return {"map": 1.0 / (1.0 + loss)}


def ddp_freeze_worker(rank: int, world_size: int, port: int, out: str) -> None:
    """One rank: 3 epochs, the first with a frozen backbone, on gloo; saves the body's tensors
    after every epoch and the whole model at the end to ``out/rank<rank>.pt``."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    from obdb.settings.schema import HyperParams
    from obdb.training import BackboneFreezeHook, EvalHook, Hook, Trainer
    from obdb.training.distributed import unwrap
    from obdb.training.optim import build_optimizer, build_scheduler

    class BodyPerEpoch(Hook):
        def __init__(self) -> None:
            self.body: list[dict[str, torch.Tensor]] = []

        def before_train(self, trainer: Trainer) -> None:
            self.after_epoch(trainer)

        def after_epoch(self, trainer: Trainer) -> None:
            self.body.append({k: v.clone() for k, v in unwrap(trainer.model).backbone.body.state_dict().items()})

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    try:
        model = TinyBackboneDetector()
        hp = HyperParams(lr=0.05, momentum=0.9, weight_decay=1e-3, step_size=1, gamma=0.7)
        optimizer = build_optimizer(model, hp)
        snaps = BodyPerEpoch()
        hooks: list[Hook] = [BackboneFreezeHook(1, rewrap=DistributedDataParallel), EvalHook(evaluate), snaps]
        trainer = Trainer(DistributedDataParallel(model), optimizer, build_scheduler(optimizer, hp), loader(rank),
                          device=torch.device("cpu"), max_epochs=3, hooks=hooks, warmup_iters=2, amp=False,
                          name=f"rank{rank}", progress=False)
        trainer.train()
        torch.save({"body": snaps.body, "model": unwrap(trainer.model).state_dict()}, Path(out) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()
