"""Image feature extractors for the t-SNE split: what makes two images "look alike".

Two kinds, behind one small interface (:class:`FeatureExtractor`):

* ``backbone``: a torchvision classification network (default ``resnet18``) with its classifier
  removed and global average pooling, on the ImageNet weights the detector uses too: same lookup
  (``model.weights_dir``, ``$OBDB_WEIGHTS_DIR``, torch hub cache) and the same one-time download
  (:mod:`obdb.models.hub`); a file that cannot be had stops the split with the download message.
* ``pixels``: a fixed extractor that needs no weights at all: a joint RGB colour histogram
  (4 levels per channel = 64 bins, square-rooted so it is unit length: the Hellinger embedding)
  plus an 8 × 8 colour thumbnail with its mean removed (192 values, unit length); the two blocks
  are weighted equally (256 values, unit length). Colour and coarse layout are exactly what
  neighbouring video frames share, so near-duplicates stay near in this space.

A backbone from random init maps images to noise-dominated vectors, so ``pixels`` is used when it
is asked for and when ``model.pretrained`` is ``none`` (a run that wants no pretrained weights at
all); never as a silent fallback. Each extractor's ``source`` says which it is, for the report.

A third extractor, :class:`DHashExtractor`, computes the 64-bit difference hash (dHash) used by
the leakage check as a perceptual hash independent of any model.

Every extractor has an ``id`` that changes whenever its output would change (name, weights file,
input size), because cached features are keyed by it (see :mod:`obdb.split.cache`).
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .base import SplitError

log = logging.getLogger(__name__)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class FeatureExtractor(ABC):
    """Maps RGB PIL images to fixed-length vectors (one row per image)."""

    #: cache key component; must change whenever the output for the same image would change
    id: str = ""
    #: images per call of :meth:`extract` (a backbone wants batches, the pixel extractor does not care)
    batch_size: int = 32
    #: dtype of the returned rows
    dtype: Any = np.float32
    #: one line for the split report: which features these are and why
    source: str = ""

    @abstractmethod
    def extract(self, images: Sequence[Image.Image]) -> np.ndarray:
        """``(len(images), dim)`` array for RGB images of any size."""


class PixelExtractor(FeatureExtractor):
    """Colour histogram + tiny thumbnail (256 values). Needs no weights, a few ms per image."""

    id = "pixels-v1"
    batch_size = 64
    source = "pixels (colour histogram + 8x8 thumbnail)"

    def __init__(self, reason: str = "") -> None:
        if reason:
            self.source = f"{PixelExtractor.source}: {reason}"

    def extract(self, images: Sequence[Image.Image]) -> np.ndarray:
        return np.stack([self._one(image) for image in images]).astype(np.float32)

    @staticmethod
    def _one(image: Image.Image) -> np.ndarray:
        small = np.asarray(image.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR), dtype=np.uint8)
        levels = (small >> 6).reshape(-1, 3).astype(np.int64)  # 4 levels per channel
        hist = np.bincount(levels[:, 0] * 16 + levels[:, 1] * 4 + levels[:, 2], minlength=64).astype(np.float64)
        hist = np.sqrt(hist / hist.sum())
        thumb = np.asarray(image.convert("RGB").resize((8, 8), Image.Resampling.BOX), dtype=np.float64) / 255.0
        thumb = (thumb - thumb.mean()).ravel()
        norm = np.linalg.norm(thumb)
        thumb = thumb / norm if norm > 1e-9 else thumb
        return np.concatenate([hist, thumb]) / np.sqrt(2.0)


class DHashExtractor(FeatureExtractor):
    """64-bit difference hash: grey 9 × 8 thumbnail, one bit per "left pixel brighter than right".
    Robust to rescaling, compression and small brightness changes; returned as 8 bytes."""

    id = "dhash-v1"
    batch_size = 64
    dtype = np.uint8

    def extract(self, images: Sequence[Image.Image]) -> np.ndarray:
        rows = []
        for image in images:
            grey = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
            bits = (grey[:, :-1] > grey[:, 1:]).ravel()
            rows.append(np.packbits(bits))
        return np.stack(rows).astype(np.uint8)


class BackboneExtractor(FeatureExtractor):
    """A classification backbone without its classifier: global-average-pooled last feature map.

    Images are resized to ``image_size`` squared and normalised with the ImageNet statistics the
    weights were trained with. Runs in eval mode under ``torch.inference_mode``.
    """

    def __init__(self, backbone: str, weights_path: Path, *, image_size: int = 224, device: str = "auto",
                 batch_size: int = 16) -> None:
        import torch
        import torchvision
        from torch import nn

        from ..models.backbones import RESNET_PREFIXES, check_backbone_name
        from ..models.weights import ModelError, load_backbone_weights

        try:
            check_backbone_name(backbone)
        except ModelError as err:
            raise SplitError(f"split.tsne.backbone: {err}") from err
        model = torchvision.models.get_model(backbone, weights=None)
        try:
            load_backbone_weights(model, weights_path)
        except ModelError as err:
            raise SplitError(f"split.tsne.backbone {backbone!r}: {err}") from err
        if backbone.startswith(RESNET_PREFIXES):
            model.fc = nn.Identity()  # type: ignore[assignment]  # resnet: avgpool + flatten remain
            body: nn.Module = model
        else:
            body = nn.Sequential(model.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())  # type: ignore[arg-type]
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = torch.device(device)
        self.body = body.eval().to(self.device)
        self.image_size = image_size
        self.batch_size = batch_size
        self.id = f"{backbone}-{Path(weights_path).stem}-{image_size}px-gap"
        self.source = (f"{backbone} pretrained features ({Path(weights_path).name}, {image_size} px, "
                       f"global average pool)")
        self._mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def extract(self, images: Sequence[Image.Image]) -> np.ndarray:
        import torch

        size = (self.image_size, self.image_size)
        arrays = [np.asarray(im.convert("RGB").resize(size, Image.Resampling.BILINEAR), dtype=np.uint8)
                  for im in images]
        batch = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float().div_(255.0)
        batch = (batch - self._mean) / self._std
        with torch.inference_mode():
            out = self.body(batch.to(self.device))
        return out.float().cpu().numpy().reshape(len(images), -1)


def make_extractor(kind: str, *, backbone: str = "resnet18", weights_dir: str | Path | None = None,
                   pretrained: str = "imagenet", image_size: int = 224, device: str = "auto",
                   batch_size: int = 16, progress: bool = False) -> FeatureExtractor:
    """The extractor ``split.tsne.features`` asks for. ``backbone`` runs on ImageNet weights (looked
    up, else downloaded once) unless ``pretrained`` (``model.pretrained``) is ``none``: then the
    run wants no pretrained weights anywhere and ``pixels`` is used, with a log line saying so."""
    if kind == "pixels":
        return PixelExtractor("asked for (split.tsne.features)")
    if kind != "backbone":
        raise SplitError(f"split.tsne.features: unknown feature extractor {kind!r}; use 'backbone' or 'pixels'")
    from ..models.backbones import check_backbone_name
    from ..models.hub import imagenet_weights
    from ..models.weights import ModelError

    try:
        check_backbone_name(backbone)  # a typo is an error even where no weights are needed
    except ModelError as err:
        raise SplitError(f"split.tsne.backbone: {err}") from err
    if pretrained == "none":
        log.info("split.tsne.features: model.pretrained is 'none', so the split uses 'pixels' features (colour "
                 "histogram + thumbnail) instead of a random-init %s", backbone)
        return PixelExtractor("model.pretrained is none")
    try:
        path = imagenet_weights(backbone, weights_dir, progress=progress)
    except ModelError as err:
        raise SplitError(f"split.tsne.features 'backbone' needs ImageNet weights for {backbone}: {err}") from err
    return BackboneExtractor(backbone, path, image_size=image_size, device=device, batch_size=batch_size)


def crop_boxes(image: Image.Image, boxes: np.ndarray, *, margin: float = 0.1, min_size: int = 8) -> list[Image.Image]:
    """Box crops with ``margin`` of context on each side, at least ``min_size`` pixels wide/high
    (a few pixels of object say little on their own), clipped to the image."""
    crops = []
    width, height = image.size
    for x1, y1, x2, y2 in np.asarray(boxes, dtype=np.float64).reshape(-1, 4):
        w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        half_w = max(w * (1 + 2 * margin), min_size) / 2
        half_h = max(h * (1 + 2 * margin), min_size) / 2
        left, top = int(max(0, np.floor(cx - half_w))), int(max(0, np.floor(cy - half_h)))
        right, bottom = int(min(width, np.ceil(cx + half_w))), int(min(height, np.ceil(cy + half_h)))
        if right - left >= 1 and bottom - top >= 1:
            crops.append(image.crop((left, top, right, bottom)))
    return crops
