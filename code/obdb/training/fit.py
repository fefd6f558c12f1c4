"""Train one model with one set of hyperparameters: the unit a search trial and a final run share.

``fit`` builds the detector, data loaders, optimizer and the standard hooks, resumes from a
checkpoint when there is one, and returns the trained model with its state. Callers add hooks
(pruning) and choose where checkpoints and TensorBoard logs go.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

from ..dataset import DetectionDataset, EarlySubsetSampler, make_loader
from ..evaluation import coco_metrics, predict
from ..image_cache import ImageCache, estimated_bytes, fits_on_disk
from ..models import ModelSpec, build_detector
from ..records import ClassMap, ImageRecord
from . import distributed
from .hooks import BackboneFreezeHook, CheckpointHook, EarlyStopHook, EvalHook, TensorBoardHook
from .optim import HyperParamsLike, build_optimizer, build_scheduler
from .trainer import Hook, Trainer, TrainState

log = logging.getLogger(__name__)


@dataclass
class FitData:
    """Train and validation records with the class map; the datasets are built once per run and
    shared by every trial.

    ``cache_images``: decode every image once, at the network's input size, into an
    :class:`~obdb.image_cache.ImageCache` under ``cache_dir`` (a memory map every process and
    later run shares; in memory without ``cache_dir``). :func:`fit` sets ``size`` from the model
    spec. Evaluation maps predictions back to the records' pixels, so metrics keep their meaning.
    Without enough room (half the free disk, or half the free memory) it warns and decodes from
    the files as before.
    """

    train_records: Sequence[ImageRecord]
    val_records: Sequence[ImageRecord]
    class_map: ClassMap
    hflip: float = 0.5
    photometric: bool = True
    cache_images: bool = False
    cache_dir: Path | None = None
    size: tuple[int, int] | None = None
    progress: bool = True
    _train_set: DetectionDataset | None = field(default=None, repr=False)
    _val_set: DetectionDataset | None = field(default=None, repr=False)

    def use_size(self, min_size: int, max_size: int) -> None:
        """Serve images at this network input size from the cache (a no-op without caching)."""
        if self.cache_images and self.size != (min_size, max_size):
            self.size = (min_size, max_size)
            self._train_set = self._val_set = None

    def _cache(self, records: Sequence[ImageRecord]) -> ImageCache | None:
        if not self.cache_images or self.size is None or not records:
            return None
        if self.cache_dir is not None:
            found = ImageCache.find(records, *self.size, root=self.cache_dir)
            if found is not None:
                return found
        needed = estimated_bytes(records, *self.size)
        roomy = fits_on_disk(self.cache_dir, needed) if self.cache_dir is not None else fits_in_memory(needed)
        if not roomy:
            log.warning("image cache of %.1f GB does not fit %s; images are decoded from their files every epoch",
                        needed / 1e9, self.cache_dir or "in memory")
            return None
        return ImageCache.build(records, *self.size, root=self.cache_dir, progress=self.progress)

    def _dataset(self, records: Sequence[ImageRecord], train: bool) -> DetectionDataset:
        cache = self._cache(records)
        return DetectionDataset(records, self.class_map, train=train, hflip_prob=self.hflip,
                                photometric=self.photometric, image_cache=cache,
                                size=self.size if cache is not None else None)

    @property
    def train_set(self) -> DetectionDataset:
        if self._train_set is None:
            self._train_set = self._dataset(self.train_records, train=True)
        return self._train_set

    @property
    def val_set(self) -> DetectionDataset:
        if self._val_set is None:
            self._val_set = self._dataset(self.val_records, train=False)
        return self._val_set


def fits_in_memory(needed: int, share: float = 0.5) -> bool:
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: assume small data sets fit
        return True
    return needed <= available * share


@dataclass(frozen=True)
class EarlySubset:
    """Cheap first epochs of a search trial: a random ``fraction`` of the training images in each
    of the first ``epochs`` epochs (validation always on the whole validation set)."""

    epochs: int
    fraction: float


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
    pretrained: str = "none"        # model.pretrained: imagenet | coco | none | a backbone weights file
    version: int = 1                # 2: torchvision's "_v2" COCO detector (variant name ending in v2)
    freeze_backbone_epochs: int = 0  # model.freeze_backbone_epochs (a searched value in params wins)
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


def to_record_pixels(predictions: list[dict[str, np.ndarray]],
                     dataset: DetectionDataset) -> list[dict[str, np.ndarray]]:
    """Predictions on resized (cached) images mapped back to each record's own pixels, the
    coordinates of the ground truth that metrics are computed against."""
    if dataset.size is None:
        return predictions
    mapped = []
    for index, prediction in enumerate(predictions):
        sx, sy = dataset.scale(index)
        boxes = prediction["boxes"] / np.array([sx, sy, sx, sy], dtype=np.float32)
        mapped.append({**prediction, "boxes": boxes.astype(np.float32)})
    return mapped


def make_evaluator(data: FitData, config: FitConfig) -> Any:
    """``evaluate(model) -> metrics`` over the validation set, with one loader for all epochs.
    Under torchrun rank 0 evaluates and the other ranks receive its numbers."""
    loader = make_loader(data.val_set, batch_size=config.eval_batch_size or config.batch_size, shuffle=False,
                         workers=0)

    def evaluate(model: nn.Module) -> dict[str, Any]:
        predictions = predict(distributed.unwrap(model), loader, config.device, progress=config.progress,
                              desc="validate")
        return coco_metrics(data.val_set.records, to_record_pixels(predictions, data.val_set), data.class_map,
                            max_dets=config.max_detections)

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
        extra_hooks: Sequence[Hook] = (), seed_offset: int = 0,
        early_subset: EarlySubset | None = None) -> tuple[nn.Module, TrainState, ModelSpec]:
    """Train and return ``(model, state, spec)``. With ``checkpoint_dir`` the run writes
    ``last.pt``/``best.pt`` every epoch and resumes from ``last.pt`` when it exists.
    ``early_subset`` makes the first epochs cheaper (search trials only, not under torchrun)."""
    ddp = config.distributed and distributed.is_active()
    if ddp:
        config = replace(config, device=distributed.device_for(config.device))
        if early_subset is not None:
            raise ValueError("early_subset is for search trials, not for distributed final training")
    data.use_size(config.spec.min_size, config.spec.max_size)
    torch.manual_seed(config.seed + seed_offset)
    model, spec = build_detector(config.spec, pretrained=config.pretrained, weights_dir=config.weights_dir,
                                 pretrained_model_path=config.pretrained_model_path, version=config.version,
                                 progress=config.progress)
    frozen_epochs = freeze_epochs(params, config)
    set_max_detections(model, config.max_detections)
    model.to(config.device)
    optimizer = build_optimizer(model, params)
    scheduler = build_scheduler(optimizer, params)
    sampler = distributed.sampler_for(data.train_set, seed=config.seed + seed_offset) if ddp else None
    if early_subset is not None and early_subset.epochs > 0 and early_subset.fraction < 1.0:
        sampler = EarlySubsetSampler(len(data.train_set), epochs=early_subset.epochs,
                                     fraction=early_subset.fraction, seed=config.seed + seed_offset)
    loader = make_loader(data.train_set, batch_size=config.batch_size, shuffle=True, workers=config.workers,
                         seed=config.seed + seed_offset, sampler=sampler)
    main = distributed.is_main() or not ddp  # only rank 0 writes checkpoints and TensorBoard
    rewrap = (lambda bare: distributed.wrap(bare, config.device)) if ddp else None
    hooks: list[Hook] = [BackboneFreezeHook(frozen_epochs, rewrap)] if frozen_epochs else []
    hooks.append(EvalHook(make_evaluator(data, config), metric=config.metric))
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


def freeze_epochs(params: HyperParamsLike, config: FitConfig) -> int:
    """Epochs with a frozen backbone: the trial's searched value, else ``model.freeze_backbone_epochs``."""
    searched = params.freeze_backbone_epochs
    return int(searched) if searched is not None else config.freeze_backbone_epochs


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"train.device is {name!r} but no CUDA device is available")
    return device
