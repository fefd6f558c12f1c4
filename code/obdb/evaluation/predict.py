"""Running a detector over a loader, and the one-call ``evaluate`` used after training / per trial.

Predictions leave this module as numpy arrays on the CPU, so metric code, reports and JSON
export never depend on the device the model ran on.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, RandomSampler
from tqdm.auto import tqdm

from obdb.dataset import DetectionDataset, make_loader
from obdb.evaluation.coco import coco_metrics
from obdb.image_cache import detector_max_size, pad_thin
from obdb.records import ClassMap, ImageRecord


@torch.inference_mode()
def predict(
    model: torch.nn.Module,
    loader: DataLoader[Any],
    device: torch.device | str,
    *,
    progress: bool = True,
    desc: str = "predict",
) -> list[dict[str, np.ndarray]]:
    """Detections for every item of ``loader`` in iteration order (= dataset order, which is why a
    shuffling loader is refused): ``{"boxes": float32 N×4 xyxy, "scores": float32 N,
    "labels": int64 N}``.

    The model is switched to ``eval()`` (torchvision detectors only return detections then) and
    its previous train/eval mode is restored afterwards, even on error, so calling this between
    training epochs is safe. The loader must yield ``(images, targets)`` as :func:`collate` does.
    """
    if isinstance(getattr(loader, "sampler", None), RandomSampler):
        raise ValueError("predict() needs an unshuffled loader: results are matched to records by order")
    device = torch.device(device)
    was_training = model.training
    model.eval()
    results: list[dict[str, np.ndarray]] = []
    max_size = detector_max_size(model)
    try:
        total = len(loader) if hasattr(loader, "__len__") else None
        for images, _targets in tqdm(loader, desc=desc, total=total, disable=not progress,
                                     leave=False, dynamic_ncols=True):
            batch = [pad_thin(image, max_size).to(device, non_blocking=True) for image in images]
            outputs = model(batch)
            for image, output in zip(images, outputs):
                results.append({
                    "boxes": clip_boxes(output["boxes"], image),
                    "scores": output["scores"].detach().to("cpu", torch.float32).numpy().reshape(-1),
                    "labels": output["labels"].detach().to("cpu", torch.int64).numpy().reshape(-1),
                })
    finally:
        model.train(was_training)
    return results


def clip_boxes(boxes: torch.Tensor, image: torch.Tensor) -> np.ndarray:
    """Detections as a float32 N×4 array clipped to ``image``'s own size (a :func:`pad_thin`
    padding is not part of the image)."""
    height, width = int(image.shape[-2]), int(image.shape[-1])
    out = boxes.detach().to("cpu", torch.float32).numpy().reshape(-1, 4).copy()
    out[:, 0::2] = out[:, 0::2].clip(0, width)
    out[:, 1::2] = out[:, 1::2].clip(0, height)
    return out


def evaluate(
    model: torch.nn.Module,
    records: Sequence[ImageRecord],
    class_map: ClassMap,
    *,
    device: torch.device | str,
    batch_size: int = 2,
    workers: int = 0,
    progress: bool = True,
    max_dets: int = 100,
) -> dict[str, Any]:
    """COCO metrics of ``model`` on ``records``: :func:`predict` over an unaugmented
    :class:`DetectionDataset`, then :func:`~obdb.evaluation.coco.coco_metrics` (see there for the
    result keys and how undefined values are reported). ``max_dets`` only affects the metric; the
    model's own ``detections_per_img`` (torchvision default 100) still caps what it returns, so
    raise both for images with more than 100 objects."""
    records = list(records)
    dataset = DetectionDataset(records, class_map, train=False)
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False, workers=workers)
    predictions = predict(model, loader, device, progress=progress, desc="evaluate")
    return coco_metrics(records, predictions, class_map, max_dets=max_dets)
