"""A saved obdb model as a ``cvat_sdk.auto_annotation`` detection function, plus batched inference.

The SDK's protocol is tiny: a ``spec`` (the labels the function can output, built from the model's
:class:`~obdb.records.ClassMap` by :func:`obdb.cvat.detection.detection_spec`) and
``detect(context, image)`` returning ``rectangle(...)`` shapes. An
object of :class:`ModelDetectionFunction` therefore works with ``cvat_sdk.auto_annotation.
annotate_task`` and ``cvat-cli task auto-annotate`` as it is.

Our own modes do *not* call ``annotate_task``, and use :meth:`ModelDetectionFunction.predict_images`
instead, because ``annotate_task``:

* calls ``detect`` once per frame (no batching on the accelerator);
* uploads every shape of a task in one request (no chunks: a 500 loses everything) and its only
  alternative, ``clear_existing=True``, deletes the human annotations too;
* knows nothing of backups, reruns (it adds the same shapes again), dry runs, or the review
  attributes.

So the function object is the interchange format (spec + detect); the modes take its batched
detections and write them with :mod:`obdb.cvat` under our safety rules.
"""
from __future__ import annotations

import logging
import re
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence, Union

import numpy as np
import PIL.Image
import torch
from tqdm.auto import tqdm

from ..cvat import AnnotateError
from ..cvat.detection import detection_shapes, detection_spec
from ..fullhd import crop_frame, to_frame
from ..evaluation.predict import clip_boxes
from ..image_cache import detector_max_size, pad_thin
from ..imageio import open_rgb, to_rgb8
from ..models import load_model
from ..records import ClassMap

log = logging.getLogger(__name__)

# What predict_images accepts: a file, encoded bytes (a downloaded frame), a decoded image, or a
# callable producing one of those (so frames are fetched batch by batch, not all up front).
ImageSource = Union[str, os.PathLike, bytes, PIL.Image.Image, Callable[[], Any]]


@dataclass
class Detections:
    """Detections on one image: ``boxes`` float32 N×4 xyxy pixels, ``scores`` float32 N, and
    ``labels`` the N class names (names, not indices, so task label ids never leak in)."""

    boxes: np.ndarray
    scores: np.ndarray
    labels: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def above(self, threshold: float) -> "Detections":
        keep = np.flatnonzero(self.scores >= threshold)
        return Detections(self.boxes[keep], self.scores[keep], [self.labels[i] for i in keep])


NO_DETECTIONS = Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), [])


class UndecodableImage(AnnotateError):
    """An image that does not decode; ``reason`` is the decoder's message without the image's name."""

    def __init__(self, what: str, reason: str) -> None:
        super().__init__(f"{what}: cannot decode the image: {reason}")
        self.reason = reason


def _decode(source: ImageSource) -> PIL.Image.Image:
    """The frame as CVAT shows it (EXIF orientation applied, 8-bit RGB), so boxes land in the
    frame annotators see; a file that does not decode is an :class:`UndecodableImage` naming it."""
    if callable(source) and not isinstance(source, PIL.Image.Image):
        source = source()
    if isinstance(source, PIL.Image.Image):
        return to_rgb8(source)
    try:
        return open_rgb(source if isinstance(source, (bytes, bytearray)) else Path(source))
    except (OSError, ValueError, SyntaxError, PIL.Image.DecompressionBombError) as err:
        if isinstance(source, (bytes, bytearray)):  # PIL names a BytesIO object: say what it held instead
            reason = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", f"({len(source)} bytes)", str(err))
            raise UndecodableImage("downloaded frame", reason) from err
        raise UndecodableImage(str(source), str(err)) from err


def _to_tensor(image: PIL.Image.Image) -> torch.Tensor:
    array = np.asarray(image, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).to(torch.float32).div_(255.0)


class ModelDetectionFunction:
    """A torchvision detector and its class map behind the SDK's ``DetectionFunction`` protocol.

    ``model`` is anything called like a torchvision detector in eval mode: a list of float
    ``3×H×W`` tensors in, a list of ``{"boxes", "scores", "labels"}`` out, labels being class map
    indices (``i + 1`` is ``class_map.names[i]``). ``threshold`` is the default minimum score;
    ``detect`` uses the SDK context's ``conf_threshold`` when one is given.
    """

    def __init__(self, model: Any, class_map: ClassMap, *, threshold: float = 0.5, batch_size: int = 4,
                 device: str | torch.device = "cpu", progress: bool = True, full_hd: bool = False) -> None:
        if not 0.0 <= threshold <= 1.0:
            raise ValueError(f"score threshold must be within [0, 1], got {threshold}")
        if batch_size < 1:
            raise ValueError(f"batch size must be >= 1, got {batch_size}")
        self.model = model
        self.class_map = class_map
        self.threshold = threshold
        self.batch_size = batch_size
        self.device = torch.device(device)
        self.progress = progress
        self.full_hd = full_hd  # frames larger than full HD: predict on the bottom-centre crop (obdb.fullhd)
        self._spec = detection_spec(class_map.names)

    @classmethod
    def from_file(cls, path: str | os.PathLike[str], *, device: str = "cpu", max_detections: int | None = None,
                  **options: Any) -> "ModelDetectionFunction":
        """Load an obdb model file (``weights_only``; see :func:`obdb.models.load_model`)."""
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        torch_device = torch.device(device)
        model, _spec, class_map, _header = load_model(path, map_location=torch_device)
        if max_detections is not None and hasattr(model, "roi_heads"):
            model.roi_heads.detections_per_img = max_detections
        elif max_detections is not None and hasattr(model, "detections_per_img"):
            model.detections_per_img = max_detections
        return cls(model, class_map, device=torch_device, **options)

    @property
    def spec(self) -> Any:
        """The SDK's ``DetectionFunctionSpec``."""
        return self._spec

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.class_map.names

    # --- the SDK protocol ----------------------------------------------------------------------
    def detect(self, context: Any, image: PIL.Image.Image) -> list[Any]:
        """One frame, as ``annotate_task`` calls it (``context``: the SDK's
        ``DetectionFunctionContext``): rectangles with review/score attributes."""
        threshold = self.threshold if context.conf_threshold is None else context.conf_threshold
        found = self._predict([to_rgb8(image)])[0].above(threshold)
        return detection_shapes(found.boxes, found.scores, found.labels, self.class_map.index)

    # --- batched inference for our modes --------------------------------------------------------
    @torch.inference_mode()
    def _run(self, tensors: list[torch.Tensor]) -> list[Detections]:
        if hasattr(self.model, "eval"):
            self.model.eval()
        max_size = detector_max_size(self.model)
        outputs = self.model([pad_thin(t, max_size).to(self.device) for t in tensors])
        results = []
        for tensor, output in zip(tensors, outputs):
            labels = output["labels"].detach().to("cpu", torch.int64).numpy().reshape(-1)
            keep = [i for i, index in enumerate(labels) if 0 < index <= len(self.class_map.names)]
            if len(keep) != len(labels):
                log.warning("model returned %d label index(es) outside its class map; ignored", len(labels) - len(keep))
            results.append(Detections(
                boxes=clip_boxes(output["boxes"], tensor)[keep],
                scores=output["scores"].detach().to("cpu", torch.float32).numpy().reshape(-1)[keep],
                labels=[self.class_map.name(int(labels[i])) for i in keep]))
        return results

    def predict_images(self, images: Sequence[ImageSource] | Iterable[ImageSource], *, total: int | None = None,
                       threshold: float | None = None, desc: str = "predict",
                       undecodable: list[tuple[int, str]] | None = None) -> list[Detections]:
        """Detections (score >= ``threshold``, default the function's) for each image, in order.

        Images are decoded ``batch_size`` at a time right before their batch runs, so a
        10 000-frame task never sits in memory at once. An image that does not decode stops the
        run (an :class:`UndecodableImage` naming it), unless ``undecodable`` is given: then its
        position and the decoder's reason are appended there and it gets no detections."""
        threshold = self.threshold if threshold is None else threshold
        if total is None and hasattr(images, "__len__"):
            total = len(images)  # type: ignore[arg-type]
        results: list[Detections] = []
        batch: list[PIL.Image.Image] = []
        slots: list[int] = []  # positions in ``results`` of the images in ``batch``

        def run_batch() -> None:
            for slot, found in zip(slots, self._predict(batch), strict=True):
                results[slot] = found.above(threshold)
            bar.update(len(batch))
            batch.clear()
            slots.clear()

        with tqdm(total=total, desc=desc, disable=not self.progress, leave=False, dynamic_ncols=True) as bar:
            for position, source in enumerate(images):
                results.append(NO_DETECTIONS)
                try:
                    batch.append(_decode(source))
                except UndecodableImage as err:
                    if undecodable is None:
                        raise
                    undecodable.append((position, err.reason))
                    bar.update(1)
                    continue
                slots.append(position)
                if len(batch) == self.batch_size:
                    run_batch()
            if batch:
                run_batch()
        return results

    def _predict(self, images: list[PIL.Image.Image]) -> list[Detections]:
        """Detections in frame pixels; with ``full_hd`` the model sees each frame's full-HD crop
        and its boxes are mapped back to the frame."""
        if not self.full_hd:
            return self._run([_to_tensor(image) for image in images])
        crops = [crop_frame(image) for image in images]
        found = self._run([_to_tensor(crop) for crop, _ in crops])
        return [Detections(to_frame(d.boxes, offset), d.scores, d.labels) for d, (_, offset) in zip(found, crops)]
