"""The review list as files: ``review.json``, ``review.csv`` and ``review_mosaic.png``.

``review.json`` is meant to be turned into CVAT shapes without looking anything else up: every
problem names its image (id, path, task, frame, size), the box (xyxy pixels), the label a
corrected shape would carry (``shape_label``), the kind and the suspicion score.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..evaluation.plots import GT_COLOUR, PRED_COLOUR, Tile, save_mosaic
from ..evaluation.report import csv_text
from ..fileio import write_json, write_text
from ..records import ImageRecord
from .problems import KINDS, Problem

REVIEW_FORMAT = "obdb-review"
CSV_COLUMNS = ("rank", "image_id", "kind", "score", "label", "predicted_label", "shape_label", "iou", "x1", "y1",
               "x2", "y2", "pred_x1", "pred_y1", "pred_x2", "pred_y2", "task", "frame", "fold", "image_path")
KIND_COLOURS = {"missing": (255, 150, 0), "spurious": (230, 0, 230), "mislocated": (0, 200, 230),
                "wrong_class": (255, 230, 0)}


def problem_rows(problems: Sequence[Problem], records: Sequence[ImageRecord],
                 folds: Mapping[str, int] | None = None) -> list[dict[str, Any]]:
    """One JSON-able dict per problem, ranked from 1, with the image's provenance."""
    by_id = {r.image_id: r for r in records}
    rows = []
    for rank, problem in enumerate(problems, 1):
        record = by_id[problem.image_id]
        rows.append({"rank": rank, **problem.to_json(), "shape_label": problem.shape_label,
                     "image_path": str(record.path), "task": record.task, "frame": record.frame,
                     "width": record.width, "height": record.height,
                     "fold": None if folds is None else folds.get(problem.image_id)})
    return rows


def _csv_row(row: Mapping[str, Any]) -> dict[str, Any]:
    flat = dict(row)
    flat.update(zip(("x1", "y1", "x2", "y2"), row["box"]))
    flat.update(zip(("pred_x1", "pred_y1", "pred_x2", "pred_y2"), row["predicted_box"] or [None] * 4))
    return flat


def _crop(row: Mapping[str, Any], context: float = 2.0, minimum: float = 96.0) -> list[float]:
    """A square around the problem's boxes, ``context`` times their size (at least ``minimum``)."""
    boxes = [row["box"]] + ([row["predicted_box"]] if row["predicted_box"] else [])
    x1, y1 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x2, y2 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    side = max(x2 - x1, y2 - y1, 1.0) * context
    side = max(side, minimum)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def problem_tile(row: Mapping[str, Any], record: ImageRecord) -> Tile:
    """The region around the problem: all ground truth thin green, the problem box thick in its
    kind's colour, the prediction behind the suspicion red."""
    caption = (f"#{row['rank']} {row['kind']} {row['score']:.2f}  {row['label'] or '-'} -> "
               f"{row['predicted_label'] or '-'}\n{row['image_id']}")
    tile = Tile(record.path, caption, crop=_crop(row))
    for box, label in zip(record.boxes, record.labels):
        tile.boxes.append((box.tolist(), GT_COLOUR, label, 1))
    if row["predicted_box"] and row["kind"] != "missing":
        tile.boxes.append((row["predicted_box"], PRED_COLOUR, f"{row['predicted_label']}", 1))
    tile.boxes.append((row["box"], KIND_COLOURS[row["kind"]], row["kind"], 3))
    return tile


def write_review(out: Path, problems: Sequence[Problem], records: Sequence[ImageRecord], *,
                 info: Mapping[str, Any], folds: Mapping[str, int] | None = None, top: int = 50,
                 plots: bool = True) -> dict[str, Path]:
    """Write the review files into ``out``: every problem in ``review.json``/``review.csv`` (most
    suspicious first), the ``top`` ones in ``review_mosaic.png``; ``info`` (settings, folds,
    thresholds, metrics) goes into review.json as is."""
    out = Path(out)
    rows = problem_rows(problems, records, folds)
    counts = Counter(p.kind for p in problems)
    payload = {"format": REVIEW_FORMAT, "version": 1, **info, "num_images": len(records),
               "num_problems": len(rows), "counts": {kind: counts.get(kind, 0) for kind in KINDS}, "problems": rows}
    files = {"json": write_json(out / "review.json", payload),
             "csv": write_text(out / "review.csv", csv_text([_csv_row(r) for r in rows], CSV_COLUMNS))}
    if plots:
        by_id = {r.image_id: r for r in records}
        tiles = [problem_tile(row, by_id[row["image_id"]]) for row in rows[:top]]
        files["mosaic"] = save_mosaic(out / "review_mosaic.png", tiles, size=256,
                                      title=f"top {len(tiles)} suspected label problems (of {len(rows)}) - "
                                            "green: ground truth, red: prediction")
    return files
