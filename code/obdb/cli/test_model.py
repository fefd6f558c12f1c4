"""``test_model.py`` / ``obdb test``: COCO metrics of a saved model and its evaluation report.

Writes the metrics JSON (``--metrics-json``; default ``<model dir>/eval/<split>_metrics.json``)
and the report folder (``-o``/``--out``; default ``<model dir>/eval/<split>/``): metrics.json,
per_box.csv, per_image.csv, pr_curves.png, confusion_matrix.png, mosaic_<case>.png, report.md.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from .common import EXIT_OK, add_bool, add_common, guarded, setup_logging, whole_number, without_downloads


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def _iou(text: str) -> float:
    value = _fraction(text)
    if value == 0.0:
        raise argparse.ArgumentTypeError("the IoU threshold must be above 0")
    return value


def build_parser(prog: str = "test_model.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Score a saved model: COCO mAP@[.5:.95], mAP50, "
                                     "mAP75, per-class AP and the evaluation report (PR curves, confusion "
                                     "matrix, best/worst images, per-box TP/FP/FN tables), on the run's split "
                                     "or on given annotation files.")
    parser.add_argument("-m", "--model", required=True, type=Path, help="model.pt written by the runner")
    parser.add_argument("-f", "--settings", help="settings JSON of the run (to score on its split)")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="settings overrides")
    parser.add_argument("--split", choices=["val", "train", "all"], default="val",
                        help="with -f: which side of the run's split to score (default: val, the set the model "
                        "was selected on)")
    parser.add_argument("--annotations", nargs="+", type=Path, default=[],
                        help="annotation files/folders (CVAT XML, COCO JSON, VOC) instead of the run's split")
    parser.add_argument("--images", type=Path, help="image folder for --annotations")
    parser.add_argument("--metrics-json", type=Path, metavar="FILE", help="metrics JSON file to write (default: "
                        "next to the model, eval/<split>_metrics.json)")
    parser.add_argument("-o", "--out", type=Path, metavar="DIR",
                        help="report folder (default: next to the model, eval/<split>/)")
    parser.add_argument("--show-case", choices=["pass", "fail", "both"], default="both",
                        help="mosaics of the best (pass), worst (fail) or both sets of images (default: both)")
    parser.add_argument("--num-disp", type=whole_number(0), default=16, metavar="N",
                        help="images per mosaic (default 16; 0: no mosaics)")
    parser.add_argument("--iou", type=_iou, default=0.5,
                        help="IoU a prediction needs to match a ground-truth box in the tables (default 0.5)")
    parser.add_argument("--score-threshold", type=_fraction, default=0.5,
                        help="lowest score counted in the tables and mosaics (default 0.5); the COCO metrics "
                        "always use every prediction")
    add_bool(parser, "--plots", "write the figures (off: tables, metrics.json and report.md only)", default=True,
             takes_value=True)
    add_bool(parser, "--store-results", "with data.source mongo: write per-box results to evaluation_results",
             default=True, takes_value=True)
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default: auto)")
    parser.add_argument("--batch-size", type=whole_number(1), metavar="N",
                        help="images per inference batch (default: the run's train.eval_batch_size or "
                        "train.batch_size with -f, else 2)")
    parser.add_argument("--max-detections", type=whole_number(1), metavar="N",
                        help="detections per image (default: the run's train.max_detections with -f, else 100)")
    add_common(parser)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "test_model.py") -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.log_level)

    def body() -> int:
        from ..evaluation.report import ReportOptions
        from ..fileio import write_json
        from ..scoring import score
        from ..settings import load_settings
        from ..settings.loader import SettingsError

        if not args.model.is_file():
            raise FileNotFoundError(f"model file not found: {args.model}")
        if args.overrides and not args.settings:
            raise SettingsError(f"{' '.join(args.overrides)!r}: key.path=value overrides change a settings file, "
                             "but no -f SETTINGS was given")
        settings = load_settings(args.settings, args.overrides) if args.settings else None
        name = "files" if args.annotations else args.split
        out = args.out or args.model.parent / "eval" / name
        options = ReportOptions(show_case=args.show_case, num_disp=args.num_disp, iou_threshold=args.iou,
                                score_threshold=args.score_threshold, plots=args.plots)
        result = score(args.model, settings=settings, split=args.split, annotations=args.annotations,
                       images_dir=args.images, device=args.device, batch_size=args.batch_size,
                       max_detections=args.max_detections, progress=args.progress, out=out, report=options,
                       store_results=args.store_results)
        output = args.metrics_json or args.model.parent / "eval" / f"{name}_metrics.json"
        write_json(output, result)
        m = result["metrics"]
        print(f"{result['num_images']} images: mAP {m['map']:.4f}  mAP50 {m['map50']:.4f}  mAP75 {m['map75']:.4f}")
        for label, ap in m["per_class"].items():
            print(f"  {label:<20} AP {'-' if ap is None else f'{ap:.4f}'}")
        print(f"written: {output}")
        print(f"report:  {result['report']['report']}")
        return EXIT_OK

    return guarded(without_downloads("test_model.py", body))  # reads saved models: never downloads weights
