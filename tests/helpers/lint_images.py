"""Images and records for the lint tests: textured pictures, damaged files, records from files."""
from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from obdb.records import ImageRecord
from obdb.settings.schema import LintSettings


def texture(seed: int, size: tuple[int, int] = (96, 72)) -> np.ndarray:
    """A smooth random picture (a 6 x 8 grid of grey levels, bilinearly enlarged, in colour): clear
    structure at the 9 x 8 scale the dHash sees, values 50-190 so brightening does not saturate."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(50, 190, (6, 8, 3)).astype(np.uint8))
    return np.asarray(coarse.resize(size, Image.Resampling.BILINEAR))


def save(path: Path, array: np.ndarray, fmt: str | None = None, **options: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt, **options)
    return path


def truncate(path: Path, keep: float = 0.6) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return path


def corrupt_png_pixels(path: Path) -> Path:
    """Cut the compressed pixel data short but keep every chunk CRC valid: PIL's ``verify`` (the
    cheap check the source does) passes, only a real decode finds it."""
    data = path.read_bytes()
    out, pos = [data[:8]], 8
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind == b"IDAT":
            body = body[:max(8, len(body) // 3)]
        out.append(struct.pack(">I4s", len(body), kind) + body + struct.pack(">I", zlib.crc32(kind + body)))
        pos += 12 + length
    path.write_bytes(b"".join(out))
    return path


def record(path: Path, boxes: Sequence[Sequence[float]] = (), labels: Sequence[str] | None = None, *,
           image_id: str | None = None, group: str = "g", size: tuple[int, int] | None = None,
           meta: dict[str, Any] | None = None) -> ImageRecord:
    """A record for ``path``; its size is read from the file unless given (or the file is bad)."""
    if size is None:
        try:
            with Image.open(path) as image:
                size = image.size
        except Exception:  # noqa: BLE001 - damaged test files: any size will do
            size = (96, 72)
    labels = list(labels) if labels is not None else ["a"] * len(boxes)
    return ImageRecord(image_id=image_id or f"t/{path.name}", path=path, width=size[0], height=size[1],
                       boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4), labels=labels, group=group,
                       task="t", meta=dict(meta or {}))


def settings(**changes: Any) -> LintSettings:
    return LintSettings(**changes)


def rules(issues: Sequence[Any]) -> list[str]:
    return [i.rule for i in issues]
