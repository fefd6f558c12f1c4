"""Figures of the evaluation report: PR curves, confusion matrix, and image mosaics.

matplotlib runs with the file-only Agg backend (no display needed in containers); images are
drawn with PIL. Every figure is written atomically through :func:`obdb.fileio.write_with`.
The mosaic helpers (:class:`Tile`, :func:`save_mosaic`) are shared with the label review.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..fileio import write_with
from ..imageio import open_rgb
from ..plotting import pyplot, save_figure

log = logging.getLogger(__name__)

GT_COLOUR, PRED_COLOUR, MISS_COLOUR = (40, 200, 60), (230, 40, 40), (255, 170, 0)
TILE_SIZE = 320
CAPTION_HEIGHT = 34


def plot_pr_curves(path: Path, curves: dict[str, Any], metrics: dict[str, Any] | None = None) -> Path:
    """Precision over recall per class, at IoU 0.5 (left) and averaged over 0.5:0.95 (right);
    the legend carries each class's AP50 / AP so the figure reads without the table."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), dpi=100)
    recall = np.asarray(curves.get("recall") or [])
    per_class = curves.get("per_class") or {}
    metrics = metrics or {}
    for ax, key, title, ap_key in ((axes[0], "iou50", "IoU 0.5", "per_class_ap50"),
                                   (axes[1], "iou50_95", "IoU 0.5:0.95 (mean)", "per_class")):
        for name, curve in per_class.items():
            ap = (metrics.get(ap_key) or {}).get(name)
            label = name if ap is None else f"{name} (AP {ap:.3f})"
            ax.plot(recall, curve[key], label=label, linewidth=1.6)
        ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title=f"precision-recall, {title}")
        ax.grid(alpha=0.3)
        if per_class:
            ax.legend(fontsize=8, loc="lower left")
        else:
            ax.text(0.5, 0.5, "no curves: no predictions or no ground truth", ha="center", va="center")
    return save_figure(fig, path)


def plot_confusion_matrix(path: Path, matrix: np.ndarray, labels: Sequence[str]) -> Path:
    """Counts with colour by row share (each ground-truth class sums to 1), so a rare class's
    confusions are as visible as a frequent one's. The last row/column is the background:
    false positives (bottom row) and missed boxes (last column)."""
    plt = pyplot()
    matrix = np.asarray(matrix)
    n = len(labels)
    size = max(4.0, 0.7 * n + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1, size), dpi=100)
    rows = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, rows, out=np.zeros(matrix.shape, dtype=np.float64), where=rows > 0)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the row")
    for i in range(n):
        for j in range(n):
            if matrix[i, j]:
                ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", fontsize=9,
                        color="white" if share[i, j] > 0.6 else "black")
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set(xlabel="predicted", ylabel="ground truth", title="confusion matrix")
    return save_figure(fig, path)


@dataclass
class Tile:
    """One image of a mosaic: boxes to draw ``(xyxy, colour, text, width)``, a caption, and an
    optional ``crop`` (xyxy pixels) to show only the region around a small object."""

    path: Path
    caption: str
    boxes: list[tuple[Sequence[float], tuple[int, int, int], str, int]] = field(default_factory=list)
    crop: Sequence[float] | None = None


def _font(size: int = 11) -> Any:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size only
        return ImageFont.load_default()


def render_tile(tile: Tile, size: int = TILE_SIZE) -> Image.Image:
    """The image scaled to fit ``size`` with its boxes; unreadable images become a grey square
    that says so, so one missing file does not cost the whole mosaic."""
    try:
        image = open_rgb(tile.path)
    except (OSError, ValueError) as err:
        log.warning("mosaic: cannot read %s (%s)", tile.path, err)
        image = Image.new("RGB", (size, size), (90, 90, 90))
        ImageDraw.Draw(image).text((6, size // 2), "image not readable", fill=(255, 255, 255), font=_font())
        return _with_caption(image, tile.caption, size)
    dx = dy = 0.0
    if tile.crop is not None:
        x1, y1, x2, y2 = (int(round(float(v))) for v in tile.crop)
        x1, y1 = max(0, x1), max(0, y1)
        x2, y2 = min(image.width, max(x2, x1 + 1)), min(image.height, max(y2, y1 + 1))
        image, dx, dy = image.crop((x1, y1, x2, y2)), float(x1), float(y1)
    scale = size / max(image.width, image.height)
    image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    draw = ImageDraw.Draw(image)
    font = _font(10)
    for box, colour, text, width in tile.boxes:
        x1, y1, x2, y2 = ((float(v) - (dy if i % 2 else dx)) * scale for i, v in enumerate(box))
        draw.rectangle([x1, y1, max(x1, x2), max(y1, y2)], outline=colour, width=width)
        if text:
            ty = y1 - 12 if y1 >= 12 else y2 + 1
            left, top, right, bottom = draw.textbbox((x1, ty), text, font=font)
            draw.rectangle([left - 1, top - 1, right + 1, bottom + 1], fill=(0, 0, 0))
            draw.text((x1, ty), text, fill=colour, font=font)
    return _with_caption(image, tile.caption, size)


def fit_line(text: str, width: float, measure: Callable[[str], float]) -> str:
    """``text`` shortened in the middle (``start…end``) until ``measure`` says it fits ``width``:
    the end of a path (the file name) and its start (the task) are what tell images apart."""
    if measure(text) <= width:
        return text
    keep_end = max(1, len(text) * 2 // 3)
    head, tail = text[: len(text) - keep_end], text[len(text) - keep_end:]
    while head or len(tail) > 1:
        if len(head) >= len(tail) // 2 and head:
            head = head[:-1]
        else:
            tail = tail[1:]
        candidate = f"{head}…{tail}"
        if measure(candidate) <= width:
            return candidate
    return "…"


def _with_caption(image: Image.Image, caption: str, size: int) -> Image.Image:
    cell = Image.new("RGB", (size, size + CAPTION_HEIGHT), (255, 255, 255))
    cell.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    font = _font(11)
    draw = ImageDraw.Draw(cell)
    lines = [fit_line(line, size - 8, lambda t: draw.textlength(t, font=font)) for line in caption.splitlines()]
    draw.multiline_text((4, size + 2), "\n".join(lines), fill=(0, 0, 0), font=font, spacing=2)
    return cell


def save_mosaic(path: Path, tiles: Sequence[Tile], *, title: str = "", size: int = TILE_SIZE,
                columns: int | None = None) -> Path:
    """Tiles in a grid (about square) with an optional title strip; an empty list gives a small
    image that says there was nothing to show, so the report never links a missing file."""
    if not columns:
        columns = max(1, math.ceil(math.sqrt(len(tiles))))
    rows = max(1, math.ceil(len(tiles) / columns))
    header = 24 if title else 0
    cell_h = size + CAPTION_HEIGHT
    canvas = Image.new("RGB", (columns * (size + 4) + 4, rows * (cell_h + 4) + 4 + header), (235, 235, 235))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((6, 5), title, fill=(0, 0, 0), font=_font(14))
    if not tiles:
        draw.text((10, header + size // 2), "nothing to show", fill=(0, 0, 0), font=_font(14))
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        canvas.paste(render_tile(tile, size), (4 + c * (size + 4), header + 4 + r * (cell_h + 4)))
    return write_with(path, lambda tmp: canvas.save(tmp, format="PNG"))
