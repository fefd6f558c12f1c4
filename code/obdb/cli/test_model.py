"""``test_model.py`` / ``obdb test``: COCO metrics of a saved model, written as JSON."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from .common import EXIT_OK, add_common, guarded, setup_logging


def build_parser(prog: str = "test_model.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Score a saved model: COCO mAP@[.5:.95], mAP50, "
                                     "mAP75 and per-class AP, on the run's split or on given annotation files.")
    parser.add_argument("-m", "--model", required=True, type=Path, help="model.pt written by the runner")
    parser.add_argument("-f", "--settings", help="settings JSON of the run (to score on its split)")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value", help="settings overrides")
    parser.add_argument("--split", choices=["val", "train", "all"], default="val")
    parser.add_argument("--annotations", nargs="+", type=Path, default=[],
                        help="annotation files/folders (CVAT XML, COCO JSON, VOC) instead of the run's split")
    parser.add_argument("--images", type=Path, help="image folder for --annotations")
    parser.add_argument("-o", "--output", type=Path, help="JSON file to write (default: next to the model, "
                        "eval/<split>_metrics.json)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--max-detections", type=int, default=100)
    add_common(parser)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "test_model.py") -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.log_level)

    def body() -> int:
        from ..fileio import write_json
        from ..scoring import score
        from ..settings import load_settings

        if not args.model.is_file():
            raise FileNotFoundError(f"model file not found: {args.model}")
        settings = load_settings(args.settings, args.overrides) if args.settings else None
        result = score(args.model, settings=settings, split=args.split, annotations=args.annotations,
                       images_dir=args.images, device=args.device, batch_size=args.batch_size,
                       max_detections=args.max_detections, progress=args.progress)
        name = "files" if args.annotations else args.split
        output = args.output or args.model.parent / "eval" / f"{name}_metrics.json"
        write_json(output, result)
        m = result["metrics"]
        print(f"{result['num_images']} images: mAP {m['map']:.4f}  mAP50 {m['map50']:.4f}  mAP75 {m['map75']:.4f}")
        for label, ap in m["per_class"].items():
            print(f"  {label:<20} AP {'-' if ap is None else f'{ap:.4f}'}")
        print(f"written: {output}")
        return EXIT_OK

    return guarded(body)
