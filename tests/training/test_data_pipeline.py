"""The data side of training: the shared image cache inside fit(), evaluation in the records'
pixels when images come resized from the cache, and the loader throughput check."""
from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers.tiny_data import LABELS
from obdb.evaluation import coco_metrics
from obdb.image_cache import INDEX
from obdb.models import ModelSpec
from obdb.records import ClassMap
from obdb.settings.schema import HyperParams
from obdb.sources.local import load_local
from obdb.split import TRAIN, VAL, make_split
from obdb.training import Trainer, build_optimizer, build_scheduler
from obdb.training.fit import FitConfig, FitData, fit, to_record_pixels
from obdb.training.trainer import DATA_WAIT_WARN
from training.test_trainer import TinyDetector, fake_loader

CPU = torch.device("cpu")
CLASSES = ClassMap(LABELS)


def tiny_fit_data(tiny_data: Path, **kwargs: object) -> FitData:
    records = load_local(tiny_data / "annotations", images_dir=tiny_data / "images", progress=False).records
    manifest = make_split(records, "group", val_fraction=0.25, seed=0)
    return FitData([r for r in records if manifest.assignment[r.image_id] == TRAIN],
                   [r for r in records if manifest.assignment[r.image_id] == VAL], CLASSES, progress=False,
                   **kwargs)  # type: ignore[arg-type]


def test_predictions_on_cached_images_are_scored_in_record_pixels(tiny_data: Path, tmp_path: Path) -> None:
    data = tiny_fit_data(tiny_data, cache_images=True, cache_dir=tmp_path / "cache")
    data.use_size(64, 64)  # the 96 px images are served at 64 px
    val = data.val_set
    assert val.image_cache is not None and val[0][0].shape[-2:] == (64, 64)
    # a perfect detector on the images it is given: the resized ground truth, labels as the model sees them
    perfect = [{"boxes": val[i][1]["boxes"].numpy(), "scores": np.ones(len(val[i][1]["boxes"]), np.float32),
                "labels": val[i][1]["labels"].numpy()} for i in range(len(val))]
    assert coco_metrics(val.records, to_record_pixels(perfect, val), CLASSES)["map"] == pytest.approx(1.0)
    assert coco_metrics(val.records, perfect, CLASSES)["map"] < 0.5  # unmapped boxes would be wrong
    for index, prediction in enumerate(to_record_pixels(perfect, val)):
        np.testing.assert_allclose(prediction["boxes"], val.records[index].boxes, atol=1e-4)


def test_fit_builds_the_image_cache_once_for_all_trials(tiny_data: Path, tmp_path: Path) -> None:
    data = tiny_fit_data(tiny_data, cache_images=True, cache_dir=tmp_path / "cache")
    config = FitConfig(spec=ModelSpec("resnet18", num_classes=3, min_size=64, max_size=64), device=CPU, batch_size=3,
                       workers=0, warmup_iters=2, progress=False)
    params = HyperParams(lr=0.005)
    _, first, _ = fit(data, config, params, max_epochs=1, name="trial 0")
    folders = sorted(p for p in (tmp_path / "cache").iterdir())
    assert len(folders) == 2 and all((p / INDEX).is_file() for p in folders)  # train and val
    stamps = [(p / INDEX).stat().st_mtime_ns for p in folders]
    train_set = data.train_set
    _, second, _ = fit(data, config, params, max_epochs=1, name="trial 1", seed_offset=1)
    assert data.train_set is train_set  # the next trial reuses the datasets and their caches
    assert [(p / INDEX).stat().st_mtime_ns for p in sorted((tmp_path / "cache").iterdir())] == stamps
    for state in (first, second):
        assert state.epoch == 1 and 0.0 <= state.best_score <= 1.0
        assert math.isfinite(state.history[0]["train/loss"]) and state.history[0]["train/images"] == 9


class SlowLoader:
    """Batches that take ``delay`` seconds each to arrive (a loader the model waits on)."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.batches = fake_loader()

    def __iter__(self):
        for batch in self.batches:
            time.sleep(self.delay)
            yield batch

    def __len__(self) -> int:
        return len(self.batches)


class SteadyDetector(TinyDetector):
    """A step that takes at least 20 ms, like real training does, so the ratio is meaningful."""

    def forward(self, images, targets):
        time.sleep(0.02)
        return super().forward(images, targets)


def trainer_with(loader: object, epochs: int = 2) -> Trainer:
    model = SteadyDetector()
    params = HyperParams(lr=0.01)
    optimizer = build_optimizer(model, params)
    return Trainer(model, optimizer, build_scheduler(optimizer, params), loader, device=CPU, max_epochs=epochs,
                   progress=False, name="slow")


def test_waiting_on_the_loader_is_measured_and_warned_about_once(caplog: pytest.LogCaptureFixture) -> None:
    trainer = trainer_with(SlowLoader(0.03))
    with caplog.at_level(logging.WARNING, logger="obdb.training.trainer"):
        trainer.train()
    ratios = [h["train/data_wait"] for h in trainer.state.history]
    assert all(r > DATA_WAIT_WARN for r in ratios)
    warnings = [r for r in caplog.records if "waited on the data loader" in r.getMessage()]
    assert len(warnings) == 1 and "epoch 1" in warnings[0].getMessage()


def test_a_fast_loader_gives_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    trainer = trainer_with(fake_loader())
    with caplog.at_level(logging.WARNING, logger="obdb.training.trainer"):
        trainer.train()
    assert all(h["train/data_wait"] < DATA_WAIT_WARN for h in trainer.state.history)
    assert not [r for r in caplog.records if "waited on the data loader" in r.getMessage()]
