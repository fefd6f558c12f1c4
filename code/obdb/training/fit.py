"""Train one model with one set of hyperparameters: the unit a search trial and a final run share.

``fit`` builds the detector, data loaders, optimizer and the standard hooks, resumes from a
checkpoint when there is one, and returns the trained model with its state. Callers add hooks
(pruning) and choose where checkpoints and TensorBoard logs go.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from ..dataset import DetectionDataset, make_loader
from ..evaluation import coco_metrics, predict
from ..models import ModelSpec, build_detector
from ..records import ClassMap, ImageRecord
from . import distributed
from .hooks import CheckpointHook, EarlyStopHook, EvalHook, TensorBoardHook
from .optim import HyperParamsLike, build_optimizer, build_scheduler
from .trainer import Hook, Trainer, TrainState

log = logging.getLogger(__name__)


@dataclass
class FitData:
    """Train and validation records with the class map; the train dataset is built once per run."""

    train_records: Sequence[ImageRecord]
    val_records: Sequence[ImageRecord]
    class_map: ClassMap
    hflip: float = 0.5
    photometric: bool = True
    cache_images: bool = False
    _train_set: DetectionDataset | None = field(default=None, repr=False)
    _val_set: DetectionDataset | None = field(default=None, repr=False)

    @property
    def train_set(self) -> DetectionDataset:
        if self._train_set is None:
            self._train_set = DetectionDataset(self.train_records, self.class_map, train=True, hflip_prob=self.hflip,
                                               photometric=self.photometric, cache_images=self.cache_images)
        return self._train_set

    @property
    def val_set(self) -> DetectionDataset:
        if self._val_set is None:
            self._val_set = DetectionDataset(self.val_records, self.class_map, train=False,
                                             cache_images=self.cache_images)
        return self._val_set


@dataclass
class FitConfig:
    """How to train, independent of the hyperparameters being tried."""

    spec: ModelSpec
    device: torch.device
    batch_size: int = 4
    eval_batch_size: int | None = None
    workers: int = 0
    warmup_iters: int = 100
    amp: bool = True
    metric: str = "map"
    max_detections: int = 100
    weights_dir: Path | None = None
    pretrained_model_path: Path | None = None
    seed: int = 0
    progress: bool = True
    distributed: bool = False  # final training under torchrun: DDP on every rank (see training.distributed)


def set_max_detections(model: nn.Module, count: int) -> None:
    """Aerial and field images often hold more than torchvision's default 100 objects."""
    if hasattr(model, "roi_heads"):
        model.roi_heads.detections_per_img = count
    elif hasattr(model, "detections_per_img"):
        model.detections_per_img = count


def make_evaluator(data: FitData, config: FitConfig) -> Any:
    """``evaluate(model) -> metrics`` over the validation set, with one loader for all epochs.
    Under torchrun rank 0 evaluates and the other ranks receive its numbers."""
    loader = make_loader(data.val_set, batch_size=config.eval_batch_size or config.batch_size, shuffle=False,
                         workers=0)

    def evaluate(model: nn.Module) -> dict[str, Any]:
        predictions = predict(distributed.unwrap(model), loader, config.device, progress=config.progress,
                              desc="validate")
        return coco_metrics(data.val_set.records, predictions, data.class_map, max_dets=config.max_detections)

    if config.distributed and distributed.is_active():
        return lambda model: distributed.on_rank0(evaluate, model)
    return evaluate


class BarrierHook(Hook):
    """Last hook under torchrun: no rank goes on (next epoch, or reading ``best.pt`` at the end)
    before rank 0 wrote its checkpoint. Not in ``after_train``: a rank that failed must exit (and
    torchrun stop the others) instead of waiting for them."""

    def after_epoch(self, trainer: Trainer) -> None:
        distributed.barrier()


def fit(data: FitData, config: FitConfig, params: HyperParamsLike, *, max_epochs: int, name: str,
        patience: int | None = None, checkpoint_dir: Path | None = None, log_dir: Path | None = None,
        extra_hooks: Sequence[Hook] = (), seed_offset: int = 0) -> tuple[nn.Module, TrainState, ModelSpec]:
    """Train and return ``(model, state, spec)``. With ``checkpoint_dir`` the run writes
    ``last.pt``/``best.pt`` every epoch and resumes from ``last.pt`` when it exists."""
    ddp = config.distributed and distributed.is_active()
    if ddp:
        config = replace(config, device=distributed.device_for(config.device))
    torch.manual_seed(config.seed + seed_offset)
    model, spec = build_detector(config.spec, weights_dir=config.weights_dir,
                                 pretrained_model_path=config.pretrained_model_path)
    set_max_detections(model, config.max_detections)
    model.to(config.device)
    optimizer = build_optimizer(model, params)
    scheduler = build_scheduler(optimizer, params)
    sampler = distributed.sampler_for(data.train_set, seed=config.seed + seed_offset) if ddp else None
    loader = make_loader(data.train_set, batch_size=config.batch_size, shuffle=True, workers=config.workers,
                         seed=config.seed + seed_offset, sampler=sampler)
    main = distributed.is_main() or not ddp  # only rank 0 writes checkpoints and TensorBoard
    hooks: list[Hook] = [EvalHook(make_evaluator(data, config), metric=config.metric)]
    if patience is not None:
        hooks.append(EarlyStopHook(patience))
    checkpoint = CheckpointHook(checkpoint_dir) if checkpoint_dir is not None and main else None
    if checkpoint is not None:
        hooks.append(checkpoint)
    if log_dir is not None and main:
        hooks.append(TensorBoardHook(log_dir))
    hooks.extend(extra_hooks)
    if ddp:
        hooks.append(BarrierHook())
        torch.manual_seed(config.seed + seed_offset + 1000 * distributed.state().rank)  # own augmentation draws
    trainer = Trainer(distributed.wrap(model, config.device) if ddp else model, optimizer, scheduler, loader,
                      device=config.device, max_epochs=max_epochs, hooks=hooks, warmup_iters=config.warmup_iters,
                      amp=config.amp, name=name, progress=config.progress, seed=config.seed + seed_offset)
    if checkpoint_dir is not None:  # every rank resumes from rank 0's checkpoint
        trainer.resume(CheckpointHook(checkpoint_dir).last_path)
    state = trainer.train()
    best_path = CheckpointHook(checkpoint_dir).best_path if checkpoint_dir is not None else None
    if best_path is not None and best_path.exists():
        best = torch.load(best_path, map_location="cpu", weights_only=True)
        model.load_state_dict(best)
    log.info("%s: %s; best %s %.4f at epoch %d", name, trainer.stop_reason, config.metric, state.best_score,
             state.best_epoch)
    return model, state, spec


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device is {name!r} but no CUDA device is available")
    return device
