"""``obdb lint``: check the data set of a settings file, print the summary, write the report.

Loads the data exactly as the runner does and runs every lint rule (whatever ``lint.enabled``
says: asking for a lint means wanting one). Exit codes: 0 no issue at or above ``--fail-on``,
1 such issues found (or nothing usable left), 2 bad arguments or settings.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from .common import EXIT_FAILURE, EXIT_OK, add_common, add_settings_args, guarded, setup_logging


def build_parser(prog: str = "obdb lint") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Check the images and annotations of a settings file (unreadable or truncated "
        "images, size limits, degenerate/out-of-bounds/duplicate boxes, exact and near-duplicate images, labels "
        "missing from the class map) and write report.json and report.md.")
    add_settings_args(parser, "lint.near_duplicate_hamming=6 lint.min_image_size=64")
    parser.add_argument("-o", "--out", metavar="DIR", help="report folder (default: <save_dir>/lint)")
    parser.add_argument("--fail-on", choices=["warn", "error"], default="error",
                        help="exit 1 when an issue of this severity or worse is found (default: error)")
    add_common(parser)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "obdb lint") -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.log_level)

    def body() -> int:
        from ..lint import lint_annotations
        from ..prepare import load_annotations
        from ..settings import load_settings

        settings = load_settings(args.settings, args.overrides, task_list=args.tasks)
        out_dir = Path(args.out) if args.out else Path(settings.save_dir) / "lint"
        annotations = load_annotations(settings, args.progress)
        result = lint_annotations(annotations, settings, out_dir=out_dir, progress=args.progress,
                                  log_summary=False)
        print("\n".join(result.summary()))
        print(f"report: {result.files['md']}")
        print(f"        {result.files['json']}")
        if not result.records:
            print(f"error: {result.nothing_left()}")
            return EXIT_FAILURE
        failing = result.at_least(args.fail_on)
        if failing:
            print(f"{len(failing)} issue(s) at or above '{args.fail_on}'")
            return EXIT_FAILURE
        return EXIT_OK

    return guarded(body)
