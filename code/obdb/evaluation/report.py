"""The evaluation report folder: metrics, box/image tables, figures and a Markdown summary.

Files written into the output folder (all atomically, so an interrupted run leaves complete files
or none)::

    metrics.json          COCO metrics, TP/FP/FN totals at the report's thresholds, options, file list
    per_box.csv           one row per TP / FP / FN box (see obdb.evaluation.matching.BOX_COLUMNS)
    per_image.csv         one row per image, worst (most FP + FN) first
    pr_curves.png         precision-recall per class, IoU 0.5 and 0.5:0.95
    confusion_matrix.png  classes + background
    mosaic_pass.png       the best images (highest F1), predictions and ground truth drawn
    mosaic_fail.png       the worst images (most false positives + false negatives)
    report.md             headline and per-class tables, the figures embedded by relative path

The COCO numbers use every prediction (AP integrates over scores); the tables and mosaics only
use predictions at or above ``score_threshold``, because that is what a user of the model sees.
"""
from __future__ import annotations

import csv
import io
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..fileio import write_json, write_text
from ..fullhd import record_crop, to_frame
from ..markdown import cell
from ..records import ImageRecord
from .matching import BOX_COLUMNS, FN, IMAGE_COLUMNS, MatchResult
from .plots import GT_COLOUR, MISS_COLOUR, PRED_COLOUR, Tile, plot_confusion_matrix, plot_pr_curves, save_mosaic

log = logging.getLogger(__name__)

SHOW_CASES = ("pass", "fail", "both")


@dataclass
class ReportOptions:
    """What the report shows: ``show_case`` picks the mosaics, ``num_disp`` their size,
    ``iou_threshold``/``score_threshold`` the box matching; ``plots`` off writes tables only."""

    show_case: str = "both"
    num_disp: int = 16
    iou_threshold: float = 0.5
    score_threshold: float = 0.5
    plots: bool = True

    def __post_init__(self) -> None:
        if self.show_case not in SHOW_CASES:
            raise ValueError(f"show_case must be one of {', '.join(SHOW_CASES)}, got {self.show_case!r}")
        if self.num_disp < 0:
            raise ValueError(f"num_disp must be >= 0, got {self.num_disp}")
        if not 0.0 < self.iou_threshold <= 1.0:
            raise ValueError(f"iou_threshold must be in (0, 1], got {self.iou_threshold}")
        if not 0.0 <= self.score_threshold <= 1.0:
            raise ValueError(f"score_threshold must be in [0, 1], got {self.score_threshold}")


def csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """CSV with a header; None becomes an empty cell so spreadsheets sort numbers as numbers."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buffer.getvalue()


def pick_cases(images: Sequence[Mapping[str, Any]], case: str, count: int) -> list[Mapping[str, Any]]:
    """``pass``: highest F1 first (images with found objects before empty ones); ``fail``: most
    FP + FN first, only images with at least one error."""
    if case == "pass":
        ranked = sorted(images, key=lambda r: (-r["f1"], r["errors"], -r["tp"], r["image_id"]))
    elif case == "fail":
        ranked = sorted((r for r in images if r["errors"]), key=lambda r: (-r["errors"], r["f1"], r["image_id"]))
    else:
        raise ValueError(f"case must be 'pass' or 'fail', got {case!r}")
    return list(ranked[:count])


def image_tile(record: ImageRecord, image_row: Mapping[str, Any], boxes: Sequence[Mapping[str, Any]]) -> Tile:
    """Ground truth green (orange where missed), drawn wider than the predictions (red, with
    their score) so a box under a matching prediction stays visible."""
    tile = Tile(record.path, f"{record.image_id}\nTP={image_row['tp']} | FP={image_row['fp']} | FN={image_row['fn']}"
                             f" | F1={image_row['f1']:.2f}")
    missed = {int(b["gt_index"]) for b in boxes if b["kind"] == FN}
    rect = record_crop(record)  # full_hd: show the crop; ground truth to frame pixels like the rows
    tile.crop = rect
    for g, (box, label) in enumerate(zip(to_frame(record.boxes, rect[:2]) if rect else record.boxes, record.labels)):
        tile.boxes.append((box.tolist(), MISS_COLOUR if g in missed else GT_COLOUR, "", 3))
    for b in boxes:
        if b["kind"] != FN:
            tile.boxes.append(([b["pred_x1"], b["pred_y1"], b["pred_x2"], b["pred_y2"]], PRED_COLOUR,
                               f"{b['label']} {b['score']:.2f}", 1))
    return tile


def write_mosaic(path: Path, case: str, records: Sequence[ImageRecord], matching: MatchResult, count: int) -> Path:
    by_id = {r.image_id: r for r in records}
    boxes_of: dict[str, list[Mapping[str, Any]]] = {}
    for row in matching.boxes:
        boxes_of.setdefault(row["image_id"], []).append(row)
    chosen = pick_cases(matching.images, case, count)
    tiles = [image_tile(by_id[r["image_id"]], r, boxes_of.get(r["image_id"], [])) for r in chosen]
    word = "best" if case == "pass" else "worst"
    title = (f"{word} {len(tiles)} images - green: ground truth, orange: missed, red: predictions "
             f">= {matching.score_threshold:g} (IoU {matching.iou_threshold:g})")
    return save_mosaic(path, tiles, title=title)


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown(result: Mapping[str, Any], totals: Mapping[str, Any], images: Sequence[Mapping[str, Any]],
             files: Mapping[str, str]) -> str:
    """report.md: what was scored, the headline numbers, per-class AP and counts, worst images."""
    m = result["metrics"]
    data = ", ".join(f"{k} `{v}`" for k, v in (result.get("data") or {}).items())
    lines = [f"# Evaluation of {result.get('variant') or 'model'}", "",
             f"- model: `{result.get('model')}`", f"- data: {data}",
             f"- images: {result.get('num_images')}, ground-truth boxes: {m.get('num_gt_boxes')}, "
             f"predictions: {m.get('num_predictions')}", f"- evaluated: {result.get('evaluated')}", "",
             "## COCO metrics (all scores)", "",
             "| mAP@[.5:.95] | mAP50 | mAP75 | mAP small | mAP medium | mAP large | AR@max_dets |",
             "|---|---|---|---|---|---|---|",
             "| " + " | ".join(_fmt(m.get(k)) for k in ("map", "map50", "map75", "map_small", "map_medium",
                                                       "map_large", "mar_100")) + " |", "",
             f"Ground-truth boxes by size: {m.get('num_gt_by_size')} (a size without boxes reads 0).", "",
             f"## Boxes at score >= {totals['score_threshold']:g}, IoU >= {totals['iou_threshold']:g}", "",
             "| TP | FP | FN | precision | recall | F1 |", "|---|---|---|---|---|---|",
             f"| {totals['tp']} | {totals['fp']} | {totals['fn']} | {_fmt(totals['precision'])} | "
             f"{_fmt(totals['recall'])} | {_fmt(totals['f1'])} |", "",
             "## Per class", "", "| class | AP | AP50 | TP | FP | FN |", "|---|---|---|---|---|---|"]
    for name, ap in m.get("per_class", {}).items():
        counts = totals["per_class"].get(name, {})
        lines.append(f"| {cell(name)} | {_fmt(ap)} | {_fmt(m.get('per_class_ap50', {}).get(name))} | "
                     f"{counts.get('tp', 0)} | {counts.get('fp', 0)} | {counts.get('fn', 0)} |")
    lines.append("")
    worst = [r for r in images if r["errors"]][:10]
    if worst:
        lines += ["## Images with the most errors", "", "| image | TP | FP | FN | F1 |", "|---|---|---|---|---|"]
        lines += [f"| {cell(r['image_id'])} | {r['tp']} | {r['fp']} | {r['fn']} | {_fmt(r['f1'], 3)} |" for r in worst]
        lines.append("")
    titles = {"pr_curves": "Precision-recall curves", "confusion_matrix": "Confusion matrix",
              "mosaic_pass": "Best images", "mosaic_fail": "Worst images"}
    for key, title in titles.items():
        if key in files:
            lines += [f"## {title}", "", f"![{title}]({files[key]})", ""]
    lines += ["Tables: " + ", ".join(f"[{files[k]}]({files[k]})" for k in ("per_box", "per_image") if k in files), ""]
    return "\n".join(lines)


def write_report(out: Path, result: dict[str, Any], records: Sequence[ImageRecord], matching: MatchResult,
                 curves: Mapping[str, Any], options: ReportOptions) -> dict[str, Path]:
    """Write the report folder (see the module docstring) and return ``{name: path}``.

    ``result`` is what :func:`obdb.scoring.score` returns (``metrics`` inside); it is written to
    ``metrics.json`` together with the matching totals, the options and the file names."""
    out = Path(out)
    files: dict[str, Path] = {}
    images = sorted(matching.images, key=lambda r: (-r["errors"], -r["fp"], r["image_id"]))
    files["per_box"] = write_text(out / "per_box.csv", csv_text(matching.boxes, BOX_COLUMNS))
    files["per_image"] = write_text(out / "per_image.csv", csv_text(images, IMAGE_COLUMNS))
    if options.plots:
        files["pr_curves"] = plot_pr_curves(out / "pr_curves.png", dict(curves), result["metrics"])
        files["confusion_matrix"] = plot_confusion_matrix(out / "confusion_matrix.png", matching.confusion,
                                                          matching.confusion_labels)
        cases = ("pass", "fail") if options.show_case == "both" else (options.show_case,)
        if options.num_disp:
            for case in cases:
                files[f"mosaic_{case}"] = write_mosaic(out / f"mosaic_{case}.png", case, records, matching,
                                                       options.num_disp)
    relative = {k: p.name for k, p in files.items()}
    relative.update(report="report.md", metrics="metrics.json")
    totals = matching.totals()
    files["report"] = write_text(out / "report.md", markdown(result, totals, images, relative))
    payload = {**result, "matching": totals,
               "confusion_matrix": {"labels": matching.confusion_labels,
                                    "rows_ground_truth_columns_predicted": np.asarray(matching.confusion).tolist()},
               "options": asdict(options), "files": relative}
    files["metrics"] = write_json(out / "metrics.json", payload)
    log.info("evaluation report: %s", files["report"])
    return files
