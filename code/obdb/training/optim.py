"""SGD + StepLR with a linear warm-up, built from one point of the search space."""
from __future__ import annotations

from typing import Protocol

import torch
from torch import nn


class HyperParamsLike(Protocol):
    lr: float
    momentum: float
    weight_decay: float
    step_size: int
    gamma: float
    freeze_backbone_epochs: int | None  # None: model.freeze_backbone_epochs


def build_optimizer(model: nn.Module, hp: HyperParamsLike) -> torch.optim.SGD:
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=hp.lr, momentum=hp.momentum, weight_decay=hp.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, hp: HyperParamsLike) -> torch.optim.lr_scheduler.StepLR:
    """Stepped once per epoch, so ``step_size`` is in epochs as in the original settings."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=int(hp.step_size), gamma=hp.gamma)


def warmup_factor(iteration: int, warmup_iters: int, start_factor: float = 0.001) -> float:
    """Linear ramp from ``start_factor`` to 1 over the first ``warmup_iters`` optimizer steps.

    Derived from the global iteration alone, so a resumed run continues the ramp exactly."""
    if warmup_iters <= 0 or iteration >= warmup_iters:
        return 1.0
    alpha = iteration / warmup_iters
    return start_factor * (1 - alpha) + alpha


def set_lr(optimizer: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler, factor: float) -> float:
    """Apply the warm-up factor on top of the scheduler's epoch learning rate; return the lr."""
    lrs = scheduler.get_last_lr()
    for group, base in zip(optimizer.param_groups, lrs):
        group["lr"] = base * factor
    return optimizer.param_groups[0]["lr"]
