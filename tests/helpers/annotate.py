"""Helpers for the auto-annotation tests: a detector whose output the test decides, and a CVAT
XML sample with every kind of shape.

:class:`FixedDetector` is called exactly like a torchvision detector (list of ``3×H×W`` float
tensors in, list of ``{"boxes", "scores", "labels"}`` out) and answers by the image's *key*: the
red value of its top-left pixel. :func:`key_image` writes an image with a given key, so a test
knows which detections every frame gets, whichever order the frames are uploaded or read in.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

CLASS_NAMES = ("red", "blue")
Det = tuple[str, float, Sequence[float]]  # (class name, score, xyxy box)


class FixedDetector(torch.nn.Module):
    """Returns ``outputs[key]`` for an image whose top-left red value is ``key`` (nothing for
    unknown keys); counts the calls and the batch sizes it saw."""

    def __init__(self, outputs: dict[int, list[Det]], names: Sequence[str] = CLASS_NAMES) -> None:
        super().__init__()
        self.outputs = outputs
        self.names = list(names)
        self.batches: list[int] = []

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        self.batches.append(len(images))
        results = []
        for image in images:
            key = int(round(float(image[0, 0, 0]) * 255))
            dets = self.outputs.get(key, [])
            results.append({
                "boxes": torch.tensor([list(d[2]) for d in dets], dtype=torch.float32).reshape(-1, 4),
                "scores": torch.tensor([d[1] for d in dets], dtype=torch.float32),
                "labels": torch.tensor([self.names.index(d[0]) + 1 for d in dets], dtype=torch.int64),
            })
        return results


def key_image(path: Path, key: int, size: tuple[int, int] = (64, 48), seed: int = 0) -> Path:
    """A PNG whose top-left pixel's red value is ``key`` (noise elsewhere)."""
    rng = np.random.default_rng(seed * 1000 + key)
    array = rng.integers(60, 200, (size[1], size[0], 3)).astype(np.uint8)
    array[0, 0] = (key, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


XML = """<?xml version="1.0" encoding="utf-8"?>
<annotations>
  <version>1.1</version>
  <meta><task><name>field 7</name><labels>
    <label><name>weed</name><type>rectangle</type><attributes>
      <attribute><name>species</name><mutable>False</mutable><input_type>select</input_type>
        <default_value>thistle</default_value><values>thistle
dock</values></attribute>
    </attributes></label>
    <label><name>crop</name><type>any</type><attributes/></label>
  </labels></task></meta>
  <image id="0" name="a.png" width="64" height="48">
    <box label="weed" occluded="1" source="manual" xtl="1.5" ytl="2" xbr="10" ybr="12.25" z_order="2" rotation="15">
      <attribute name="species">dock</attribute>
    </box>
    <polygon label="weed" occluded="0" points="1,1;9,1;9,9" z_order="0" group_id="3"/>
    <points label="crop" points="4,5;6,7" source="auto"/>
    <ellipse label="crop" cx="20" cy="20" rx="4" ry="3"><attribute name="note">round</attribute></ellipse>
    <tag label="crop"/>
    <mask label="crop" rle="1,2" left="0" top="0" width="1" height="3"/>
  </image>
  <image id="1" name="sub/b.png" width="64" height="48"/>
</annotations>
"""
