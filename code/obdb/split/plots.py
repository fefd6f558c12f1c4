"""Figures of the split report (matplotlib with the file-only Agg backend; PIL for thumbnails).

* ``tsne.png``: the t-SNE map twice, coloured by cluster and by split (or fold), with the
  near-duplicate pairs across sides drawn as red lines: leakage is visible at a glance.
* ``divergence.png``: each class's share of the boxes and each cluster's share of the images, train
  next to val, with the Jensen-Shannon divergence in the titles.
* ``thumbnails.png``: the map as a canvas of image thumbnails (one per grid cell, the image
  nearest the cell's centre), framed grey for train and orange for val.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image, ImageDraw

from ..fileio import write_with
from ..fullhd import crop_image
from ..imageio import open_rgb
from ..plotting import pyplot, save_figure
from ..records import ImageRecord
from .base import VAL, SplitManifest
from .tsne import Analysis

TRAIN_COLOUR, VAL_COLOUR, LEAK_COLOUR = "#9a9a9a", "#e4572e", "#d0021b"
MAX_LEAK_LINES = 300


def _marker_size(n: int) -> float:
    return float(np.clip(4000.0 / max(n, 1) ** 0.75, 0.4, 40.0))


def _legend_scale(size: float) -> float:
    """Legend markers of about 6 pt whatever the (area-sized) scatter markers are."""
    return float(max(1.0, math.sqrt(36.0 / size)))


def _cluster_colours(k: int) -> list[Any]:
    plt = pyplot()
    cmap = plt.get_cmap("tab20" if k <= 20 else "turbo")
    return [cmap(i if k <= 20 else i / max(k - 1, 1)) for i in range(k)]


def plot_tsne(path: Path, manifest: SplitManifest, analysis: Analysis, report: dict[str, Any]) -> Path:
    plt = pyplot()
    xy, n = analysis.coords, len(analysis.ids)
    size = _marker_size(n)
    names = analysis.cluster_names()
    colours = _cluster_colours(len(names))
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 6.4), dpi=110)
    for c, name in enumerate(names):
        mask = analysis.clusters == c
        left.scatter(xy[mask, 0], xy[mask, 1], s=size, color=colours[c], label=f"{name} ({int(mask.sum())})",
                     linewidths=0, rasterized=True)
    method = analysis.info.get("clustering", {}).get("method", "")
    left.set_title(f"t-SNE map by cluster ({len(names)} clusters, {method})")
    if len(names) <= 20:
        left.legend(loc="center right", bbox_to_anchor=(-0.01, 0.5), fontsize=8, markerscale=_legend_scale(size),
                    frameon=False)
    is_val = np.asarray([manifest.assignment[i] == VAL for i in analysis.ids])
    if manifest.folds:
        folds = np.asarray([manifest.folds[i] for i in analysis.ids])
        palette = _cluster_colours(max(int(folds.max()) + 1, 1))
        val_fold = manifest.params.get("fold")
        for k in sorted(set(folds.tolist())):
            mask = folds == k
            label = f"fold {k}{' (val)' if k == val_fold else ''} ({int(mask.sum())})"
            right.scatter(xy[mask, 0], xy[mask, 1], s=size, color=palette[k], label=label, linewidths=0,
                          rasterized=True)
    else:
        right.scatter(xy[~is_val, 0], xy[~is_val, 1], s=size, color=TRAIN_COLOUR,
                      label=f"train ({int((~is_val).sum())})", linewidths=0, rasterized=True)
        right.scatter(xy[is_val, 0], xy[is_val, 1], s=size * 1.3, color=VAL_COLOUR, label=f"val ({int(is_val.sum())})",
                      linewidths=0, rasterized=True)
    index = {image_id: i for i, image_id in enumerate(analysis.ids)}
    leak = report.get("leakage", {}).get("embedding", {})
    shown = leak.get("closest", [])[:MAX_LEAK_LINES]
    for j, pair in enumerate(shown):
        a, b = index[pair["a"]], index[pair["b"]]
        right.plot(xy[[a, b], 0], xy[[a, b], 1], color=LEAK_COLOUR, linewidth=0.8,
                   label=f"near-duplicate across sides ({leak.get('pairs', 0)})" if j == 0 else None)
    side_word = "fold" if manifest.folds else "split"
    div = report["divergence"]
    right.set_title(f"by {side_word}: {manifest.method} split {manifest.hash}, "
                    f"JSD classes {div['classes']:.3f} / clusters {div['clusters']:.3f}")
    right.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=8, markerscale=_legend_scale(size),
                 frameon=False)
    for axis in (left, right):
        axis.set_xticks([])
        axis.set_yticks([])
        axis.set_aspect("equal", adjustable="datalim")
    return save_figure(fig, path)


def _bars(axis: Any, names: Sequence[str], train: Sequence[float], val: Sequence[float], title: str, unit: str) -> None:
    t, v = np.asarray(train, dtype=np.float64), np.asarray(val, dtype=np.float64)
    t_share = t / t.sum() if t.sum() else t
    v_share = v / v.sum() if v.sum() else v
    x = np.arange(len(names))
    width = 0.4
    axis.bar(x - width / 2, t_share, width, color=TRAIN_COLOUR, label="train")
    axis.bar(x + width / 2, v_share, width, color=VAL_COLOUR, label="val")
    axis.set_xticks(x)
    crowded = len(names) > 8 or max((len(n) for n in names), default=0) * len(names) > 40
    axis.set_xticklabels(names, rotation=90 if crowded else 0, fontsize=8 if crowded else 9)
    axis.set_xlim(-0.7, len(names) - 0.3)
    axis.set_ylabel("share")
    axis.set_title(f"{title}\ntrain {int(t.sum())} / val {int(v.sum())} {unit}", fontsize=10)


def plot_divergence(path: Path, report: dict[str, Any]) -> Path:
    plt = pyplot()
    train, val = report["counts"]["train"], report["counts"]["val"]
    classes = list(train["classes"])
    clusters = list(train["clusters"])
    width = max(10.0, min(22.0, 5 + 0.22 * (len(classes) + len(clusters))))
    ratios = [max(len(classes), 3, len(clusters) / 3), max(len(clusters), 3)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(width, 4.8), dpi=110, gridspec_kw={"width_ratios": ratios})
    div = report["divergence"]
    _bars(left, classes, list(train["classes"].values()), list(val["classes"].values()),
          f"classes (share of boxes): JSD {div['classes']:.4f} bits", "boxes")
    _bars(right, clusters, list(train["clusters"].values()), list(val["clusters"].values()),
          f"clusters (share of images): JSD {div['clusters']:.4f} bits", "images")
    handles, labels = left.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncol=2, frameon=False, fontsize=9)
    fig.suptitle(f"{report['method']} split {report['split_hash']}: train vs val", fontsize=11, x=0.02, ha="left")
    fig.text(0.02, 0.005, "JSD: Jensen-Shannon divergence of the train and val distributions "
             "(0 = the same, 1 = disjoint)", fontsize=8, color="#555555")
    fig.tight_layout(rect=(0, 0.03, 1, 0.95))
    return save_figure(fig, path)


def plot_thumbnails(path: Path, manifest: SplitManifest, analysis: Analysis, records: Sequence[ImageRecord], *,
                    grid: int = 24, cell: int | None = None) -> Path:
    """One thumbnail per occupied grid cell over the map (at most ``grid``² images are read)."""
    xy = analysis.coords.astype(np.float64)
    n = len(xy)
    grid = int(max(2, min(grid, math.ceil(math.sqrt(n)) + 1)))
    cell = cell or int(max(40, min(96, 1000 // grid)))
    low, high = xy.min(axis=0), xy.max(axis=0)
    unit = (xy - low) / np.maximum(high - low, 1e-9) * (grid - 1e-6)
    cells = np.floor(unit).astype(int)
    centre_dist = np.linalg.norm(unit - (cells + 0.5), axis=1)
    best: dict[tuple[int, int], int] = {}
    for i in np.argsort(centre_dist, kind="stable"):
        best.setdefault((int(cells[i, 0]), int(cells[i, 1])), int(i))
    legend_height = 22
    canvas = Image.new("RGB", (grid * cell, grid * cell + legend_height), "white")
    draw = ImageDraw.Draw(canvas)
    for (cx, cy), i in best.items():
        thumb = crop_image(open_rgb(records[i].path), records[i])  # full_hd: the record's crop
        thumb = thumb.resize((cell - 4, cell - 4), Image.Resampling.BILINEAR)
        side = manifest.assignment[analysis.ids[i]]
        left, top = cx * cell, (grid - 1 - cy) * cell  # map y grows upwards, image rows downwards
        draw.rectangle([left, top, left + cell - 1, top + cell - 1], fill=VAL_COLOUR if side == VAL else TRAIN_COLOUR)
        canvas.paste(thumb, (left + 2, top + 2))
    y = grid * cell + 5
    draw.rectangle([6, y, 18, y + 12], fill=TRAIN_COLOUR)
    draw.text((24, y), "train", fill="black")
    draw.rectangle([70, y, 82, y + 12], fill=VAL_COLOUR)
    draw.text((88, y), f"val   ({len(best)} of {n} images shown, t-SNE layout)", fill="black")
    return write_with(path, lambda tmp: canvas.save(tmp, format="PNG"))
