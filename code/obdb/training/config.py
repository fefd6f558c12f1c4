"""Settings → what :func:`obdb.training.fit.fit` takes: the one place a :class:`~obdb.models.ModelSpec`,
a :class:`~obdb.training.fit.FitConfig` and a :class:`~obdb.training.fit.FitData` are made from a
settings file, for the runner, its searches and ``obdb review`` alike."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from ..models import ModelSpec, resolve_variant, variant_version
from ..records import ClassMap, ImageRecord
from ..settings import Settings
from .fit import FitConfig, FitData, resolve_device


def model_spec(settings: Settings, variant: str, num_classes: int) -> ModelSpec:
    block = settings.variant(variant)
    backbone, head = resolve_variant(variant, backbone=block.backbone, head=block.head or None)
    if block.head is None and head == "faster_rcnn":
        head = settings.model.head
    return ModelSpec(backbone=backbone, head=head, num_classes=num_classes, min_size=settings.model.min_size,
                     max_size=settings.model.max_size, trainable_layers=settings.model.trainable_layers)


def weights_dir(settings: Settings) -> Path | None:
    return Path(settings.model.weights_dir) if settings.model.weights_dir else None


def fit_config(settings: Settings, variant: str, spec: ModelSpec, progress: bool) -> FitConfig:
    block = settings.variant(variant)
    train = settings.train
    return FitConfig(spec=spec, device=resolve_device(train.device), batch_size=train.batch_size,
                     eval_batch_size=train.eval_batch_size, workers=train.workers, warmup_iters=train.warmup_iters,
                     amp=train.amp, metric=settings.hpo.metric, max_detections=train.max_detections,
                     weights_dir=weights_dir(settings), pretrained=settings.model.pretrained,
                     version=variant_version(variant), freeze_backbone_epochs=settings.model.freeze_backbone_epochs,
                     pretrained_model_path=Path(block.pretrained_model_path) if block.pretrained_model_path else None,
                     seed=settings.seed, progress=progress)


def image_cache_dir(settings: Settings) -> Path:
    return Path(settings.train.cache_dir) if settings.train.cache_dir else Path(settings.save_dir) / "image_cache"


def fit_data(settings: Settings, train: Sequence[ImageRecord], val: Sequence[ImageRecord], class_map: ClassMap,
             progress: bool, *, shared_cache: bool = True) -> FitData:
    """Train and validation records with the settings' augmentation and image cache: shared on disk
    (:func:`image_cache_dir`) or, without ``shared_cache`` (review folds, each on other images),
    in memory."""
    return FitData(train, val, class_map, hflip=settings.train.hflip, photometric=settings.train.photometric,
                   cache_images=settings.train.cache_images,
                   cache_dir=image_cache_dir(settings) if shared_cache else None, progress=progress)
