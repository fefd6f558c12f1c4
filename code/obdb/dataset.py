"""The adapter from :class:`~obdb.records.ImageRecord` to torch tensors.

This is the only module that turns records into torch data: sources stay torch-free, and the
training and evaluation code only ever see what :class:`DetectionDataset` yields. Keeping the
conversion in one place means the label-index convention (``ClassMap.index``, background = 0)
and the box layout (absolute ``x1, y1, x2, y2`` pixels) cannot drift between training and
evaluation.
"""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset
try:
    from torchvision.io import ImageReadMode, decode_image
except ImportError:  # pragma: no cover - future torchvision without its own decoders
    ImageReadMode = decode_image = None  # type: ignore[assignment,misc]
from torchvision.transforms import v2

from obdb.records import ClassMap, ImageRecord

log = logging.getLogger(__name__)

Target = dict[str, Tensor]

# Mild on purpose: detectors for aerial / camera-trap data are sensitive to colour cues, and the
# HPO search should not have to fight an aggressive default. Factors are drawn from [1-x, 1+x].
PHOTOMETRIC_STRENGTH = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2}


def decode_rgb(path: Path) -> Tensor:
    """Decode an image file to a uint8 ``3×H×W`` RGB tensor.

    ``torchvision.io.decode_image`` (libjpeg-turbo / libpng, no PIL round trip) is tried first
    because it is markedly faster (~1.7× on a 1080p JPEG); formats it cannot read (TIFF, ...)
    fall back to PIL. EXIF orientation is *not* applied by either
    path, so pixels match what annotation tools that ignore EXIF showed.

    torchvision 0.29 deprecates its decoders in favour of TorchCodec and warns on every call; the
    pinned version still ships them, so that one warning is silenced here instead of flooding
    logs. Should they be removed, the PIL path takes over.
    """
    if decode_image is not None:
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*image decoding.*deprecated",
                                        category=DeprecationWarning)
                return decode_image(str(path), mode=ImageReadMode.RGB)
        except (RuntimeError, ValueError):
            pass  # unsupported format: PIL below
    from PIL import Image

    with Image.open(path) as image:
        array = np.array(image.convert("RGB"), dtype=np.uint8)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


class DetectionDataset(Dataset[tuple[Tensor, Target]]):
    """Records as ``(image, target)`` pairs in the format torchvision detection models expect.

    ``image`` is a float32 ``C×H×W`` tensor in ``[0, 1]`` (RGB); ``target`` holds ``boxes``
    (float32 ``N×4`` xyxy pixels), ``labels`` (int64 ``N``, ``class_map.index``) and ``image_id``
    (int64 scalar: the position ``i`` in ``records``, so predictions can be matched back to their
    record). Images without boxes get ``boxes`` of shape ``(0, 4)``; torchvision models train on
    such negatives.

    Labels are resolved and boxes validated once, at construction, so a bad record fails before
    any training time is spent rather than in a worker process halfway through an epoch.

    ``train=True`` enables augmentation: a horizontal flip with probability ``hflip_prob`` and,
    if ``photometric``, mild brightness / contrast / saturation jitter. Randomness comes from
    torch's RNG, which :func:`make_loader` seeds per worker from its generator.

    ``cache_images=True`` keeps decoded uint8 tensors in memory (about ``3·H·W`` bytes per image;
    meant for small data sets). With ``workers > 0`` every worker holds its own cache, filled
    during the first epoch; :func:`make_loader` keeps workers alive so it survives epochs.
    """

    def __init__(
        self,
        records: Sequence[ImageRecord],
        class_map: ClassMap,
        *,
        train: bool,
        hflip_prob: float = 0.5,
        photometric: bool = True,
        cache_images: bool = False,
    ) -> None:
        if not 0.0 <= hflip_prob <= 1.0:
            raise ValueError(f"hflip_prob must be in [0, 1], got {hflip_prob}")
        self.records = list(records)
        self.class_map = class_map
        self.train = train
        self.hflip_prob = hflip_prob
        self.photometric = photometric
        self.cache_images = cache_images
        self._cache: dict[int, Tensor] = {}
        self._boxes: list[Tensor] = []
        self._labels: list[Tensor] = []
        for record in self.records:
            self._labels.append(torch.tensor(self._label_indices(record), dtype=torch.int64))
            self._boxes.append(torch.from_numpy(self._checked_boxes(record)))
        self._jitter = v2.ColorJitter(**PHOTOMETRIC_STRENGTH)
        self._size_warned = False

    def _label_indices(self, record: ImageRecord) -> list[int]:
        indices = []
        for label in record.labels:
            try:
                indices.append(self.class_map.index(label))
            except KeyError:
                raise KeyError(
                    f"record {record.image_id!r} ({record.path}) has label {label!r}, which is not "
                    f"in the class map {list(self.class_map.names)}; filter labels before building "
                    "the dataset"
                ) from None
        return indices

    @staticmethod
    def _checked_boxes(record: ImageRecord) -> np.ndarray:
        """Boxes as a fresh float32 (N, 4) array; degenerate ones raise, because torchvision
        aborts training on them with a message that does not say which image is at fault."""
        boxes = np.array(record.boxes, dtype=np.float32).reshape(-1, 4)
        bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1]) | ~np.isfinite(boxes).all(1)
        if bad.any():
            first = boxes[np.argmax(bad)].tolist()
            raise ValueError(
                f"record {record.image_id!r} ({record.path}) has {int(bad.sum())} degenerate or "
                f"non-finite box(es), e.g. {first}; boxes must satisfy x2 > x1 and y2 > y1"
            )
        return boxes

    def __len__(self) -> int:
        return len(self.records)

    def load_image(self, index: int) -> Tensor:
        """The decoded uint8 image of record ``index`` (from the cache when enabled).

        Callers must not modify the result in place: it may be the cached tensor.
        """
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        record = self.records[index]
        image = decode_rgb(record.path)
        height, width = image.shape[-2:]
        if (record.width, record.height) != (width, height) and record.width > 0 and not self._size_warned:
            self._size_warned = True  # once per dataset (and worker): a source-wide issue otherwise floods logs
            log.warning(
                "record %r says %dx%d but %s decodes to %dx%d; boxes may not line up "
                "(further mismatches are not reported)",
                record.image_id, record.width, record.height, record.path, width, height,
            )
        if self.cache_images:
            self._cache[index] = image
        return image

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        if index < 0:
            index += len(self)
        image_u8 = self.load_image(index)
        boxes = self._boxes[index].clone()
        labels = self._labels[index].clone()

        if self.train and self.hflip_prob > 0 and torch.rand(()).item() < self.hflip_prob:
            image_u8 = image_u8.flip(-1)  # new tensor: the cached image stays untouched
            width = image_u8.shape[-1]
            boxes = torch.stack(
                (width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]), dim=1
            ) if len(boxes) else boxes
        # Jitter on uint8 before the float conversion: same result up to rounding, 1/4 the memory.
        if self.train and self.photometric:
            image_u8 = self._jitter(image_u8)
        image = image_u8.to(torch.float32).div_(255.0)

        target: Target = {
            "boxes": boxes.reshape(-1, 4),
            "labels": labels,
            "image_id": torch.tensor(index, dtype=torch.int64),
        }
        return image, target


def collate(batch: Sequence[tuple[Tensor, Target]]) -> tuple[list[Tensor], list[Target]]:
    """Keep images and targets as lists: detection images differ in size, so they cannot be
    stacked, and torchvision models take lists anyway."""
    images = [item[0] for item in batch]
    targets = [item[1] for item in batch]
    return images, targets


def make_loader(
    dataset: Dataset[Any],
    *,
    batch_size: int,
    shuffle: bool,
    workers: int,
    seed: int | None = None,
    sampler: Any = None,
) -> DataLoader[Any]:
    """A :class:`DataLoader` with :func:`collate` and reproducible randomness.

    With ``seed`` the loader gets its own seeded generator, which fixes the shuffle order of
    every epoch and, when ``workers > 0``, the per-worker torch seeds (hence augmentation). With
    ``workers == 0`` augmentation draws from torch's global RNG in the main process, so seed that
    too (``torch.manual_seed``) for identical augmentations. Workers are persistent, so worker
    start-up and image caches are paid once per run, not once per epoch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    generator: torch.Generator | None = None
    if seed is not None:
        generator = torch.Generator()
        generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle if sampler is None else False,  # a sampler (DistributedSampler) shuffles itself
        sampler=sampler,
        num_workers=workers,
        collate_fn=collate,
        generator=generator,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),  # lets the trainer's non_blocking copies overlap
    )
