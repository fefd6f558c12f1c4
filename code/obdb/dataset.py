"""The adapter from :class:`~obdb.records.ImageRecord` to torch tensors.

This is the only module that turns records into torch data: sources stay torch-free, and the
training and evaluation code only ever see what :class:`DetectionDataset` yields. Keeping the
conversion in one place means the label-index convention (``ClassMap.index``, background = 0)
and the box layout (absolute ``x1, y1, x2, y2`` pixels) cannot drift between training and
evaluation.
"""
from __future__ import annotations

import logging
from typing import Any, Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms import v2

from obdb.fullhd import crop_tensor, shape_after_crop
from obdb.image_cache import ImageCache, decode_rgb, image_size_on_disk, network_size, resize_to
from obdb.records import ClassMap, ImageRecord

log = logging.getLogger(__name__)
__all__ = ["DetectionDataset", "EarlySubsetSampler", "collate", "decode_rgb", "make_loader"]

Target = dict[str, Tensor]

# Mild on purpose: detectors for aerial / camera-trap data are sensitive to colour cues, and the
# HPO search should not have to fight an aggressive default. Factors are drawn from [1-x, 1+x].
PHOTOMETRIC_STRENGTH = {"brightness": 0.2, "contrast": 0.2, "saturation": 0.2}


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

    ``size=(min_size, max_size)`` returns every image already resized to what the detector's own
    transform would make of it (:func:`~obdb.image_cache.network_size`), with boxes scaled to
    match; the model then passes it through unchanged. Predictions on such images are in resized
    pixels: :meth:`scale` gives the per-image factors to map them back to the record's pixels, in
    which evaluation is always done. ``image_cache`` (an :class:`~obdb.image_cache.ImageCache` of
    these records at this size) serves those images without decoding; it returns exactly what the
    uncached resized path computes.

    ``cache_images=True`` keeps decoded uint8 tensors in memory (about ``3·H·W`` bytes per image;
    meant for small data sets). With ``workers > 0`` every worker holds its own cache, filled
    during the first epoch; :func:`make_loader` keeps workers alive so it survives epochs. The
    shared ``image_cache`` is the better choice for a search: built once, shared by all trials.
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
        size: tuple[int, int] | None = None,
        image_cache: ImageCache | None = None,
    ) -> None:
        if not 0.0 <= hflip_prob <= 1.0:
            raise ValueError(f"hflip_prob must be in [0, 1], got {hflip_prob}")
        if image_cache is not None:
            if size is None:
                size = (image_cache.min_size, image_cache.max_size)
            if (image_cache.min_size, image_cache.max_size) != tuple(size) or len(image_cache) != len(records):
                raise ValueError(f"image cache of {len(image_cache)} images at {image_cache.min_size}/"
                                 f"{image_cache.max_size} does not match {len(records)} records at size {size}")
        self.records = list(records)
        self.class_map = class_map
        self.train = train
        self.hflip_prob = hflip_prob
        self.photometric = photometric
        self.cache_images = cache_images
        self.size = tuple(size) if size is not None else None
        self.image_cache = image_cache
        self._cache: dict[int, Tensor] = {}
        self._original_sizes: dict[int, tuple[int, int]] = {}
        self._boxes: list[Tensor] = []
        self._labels: list[Tensor] = []
        for record in self.records:
            self._labels.append(torch.tensor(self._label_indices(record), dtype=torch.int64))
            self._boxes.append(torch.from_numpy(self._checked_boxes(record)))
        self._jitter = v2.ColorJitter(**PHOTOMETRIC_STRENGTH)
        self._size_warned = False
        if image_cache is not None:  # the decoded sizes are known already: check them all now
            for index, record in enumerate(self.records):
                height, width = image_cache.original_size(index)
                self._check_size(record, height, width)

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

    def original_size(self, index: int) -> tuple[int, int]:
        """``(height, width)`` of record ``index``'s image file as decoded (header only)."""
        if self.image_cache is not None:
            return self.image_cache.original_size(index)
        if index not in self._original_sizes:
            self._original_sizes[index] = shape_after_crop(self.records[index],
                                                           *image_size_on_disk(self.records[index].path))
        return self._original_sizes[index]

    def scale(self, index: int) -> tuple[float, float]:
        """``(x, y)`` factors from the record's pixels to the pixels this dataset yields."""
        if self.size is None:
            return 1.0, 1.0
        height, width = self.original_size(index)
        new_height, new_width = network_size(height, width, *self.size)
        return new_width / width, new_height / height

    def load_image(self, index: int) -> Tensor:
        """The decoded uint8 image of record ``index`` (resized with ``size``; from a cache when
        enabled).

        Callers must not modify the result in place: it may be the cached tensor.
        """
        cached = self._cache.get(index)
        if cached is not None:
            return cached
        if self.image_cache is not None:
            return self.image_cache.image(index)  # a fresh tensor each time
        record = self.records[index]
        image = crop_tensor(decode_rgb(record.path), record)  # full_hd: the record's crop (obdb.fullhd)
        height, width = image.shape[-2:]
        self._original_sizes[index] = (int(height), int(width))
        if self.size is not None:
            image = resize_to(image, network_size(int(height), int(width), *self.size))
        self._check_size(record, int(height), int(width))
        if self.cache_images:
            self._cache[index] = image
        return image

    def _check_size(self, record: ImageRecord, height: int, width: int) -> None:
        if (record.width, record.height) != (width, height) and record.width > 0 and not self._size_warned:
            self._size_warned = True  # once per dataset (and worker): a source-wide issue otherwise floods logs
            log.warning(
                "record %r says %dx%d but %s decodes to %dx%d; boxes may not line up "
                "(further mismatches are not reported)",
                record.image_id, record.width, record.height, record.path, width, height,
            )

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        if index < 0:
            index += len(self)
        image_u8 = self.load_image(index)
        boxes = self._boxes[index].clone()
        labels = self._labels[index].clone()
        if self.size is not None and len(boxes):
            sx, sy = self.scale(index)
            boxes = boxes * torch.tensor([sx, sy, sx, sy], dtype=torch.float32)

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


class EarlySubsetSampler(Sampler[int]):
    """Shuffled indices of a data set of ``size`` items; in each of the first ``epochs`` epochs
    only a random ``fraction`` of them (another subset every epoch), then all of them.

    The order depends on ``seed`` and the epoch alone (the trainer calls :meth:`set_epoch`), so a
    resumed run sees the same batches. This is the cheap-fidelity option of a search trial: early
    epochs only have to tell promising trials from hopeless ones for the pruner.
    """

    def __init__(self, size: int, *, epochs: int, fraction: float, seed: int) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {fraction}")
        self.size = size
        self.epochs = epochs
        self.fraction = fraction
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        if self.epoch < self.epochs:
            return max(1, round(self.size * self.fraction)) if self.size else 0
        return self.size

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator()
        generator.manual_seed(self.seed + 7919 * self.epoch)
        order = torch.randperm(self.size, generator=generator)
        return iter(order[:len(self)].tolist())


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
