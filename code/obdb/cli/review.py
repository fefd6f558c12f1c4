"""``obdb review``: rank suspected label errors with out-of-fold predictions.

Trains one model per fold on the other folds (the run's settings and parameters), predicts the
held-out fold, and compares every image's labels with its out-of-sample prediction. Writes
``review.json``, ``review.csv`` and ``review_mosaic.png`` (default ``<save_dir>/review/``);
finished folds are kept there, so rerunning the same command resumes.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from .common import (EXIT_OK, add_bool, add_common, add_settings_args, guarded, setup_logging, whole_number,
                     without_downloads)

if TYPE_CHECKING:
    from ..settings import Settings


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number between 0 and 1, got {text!r}")
    return value


def build_parser(prog: str = "obdb review") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Review the labels of a settings file's data: k-fold out-of-sample predictions "
        "for every image, then a ranked list of suspected missing, spurious, mislocated and wrong-class boxes.")
    add_settings_args(parser, "train.device=cuda max_train_epochs=10")
    parser.add_argument("--folds", type=whole_number(1), metavar="K",
                        help="number of folds (default: split.tsne.folds of a k-fold tsne split, else 5); "
                        "with a k-fold split of the same K its folds are used")
    parser.add_argument("--epochs", type=whole_number(1), metavar="N",
                        help="epochs per fold (default: max_train_epochs)")
    parser.add_argument("--variant", help="variant to train (default: the first of the settings' variants)")
    parser.add_argument("-o", "--out", type=Path, metavar="DIR", help="output folder (default: <save_dir>/review)")
    parser.add_argument("--top", type=whole_number(1), default=50, metavar="N",
                        help="problems shown in the mosaic, printed and pushed (default 50); the files list all")
    parser.add_argument("--min-score", type=_fraction, default=0.5,
                        help="score from which a prediction counts as the model's opinion (default 0.5)")
    add_bool(parser, "--plots", "write review_mosaic.png", default=True, takes_value=True)
    add_bool(parser, "--push-cvat", "add the top N problems' proposed fixes to their CVAT tasks as source=auto "
             "shapes with review=unreviewed (CVAT_URL and credentials from the environment)", takes_value=True)
    add_bool(parser, "--dry-run", "with --push-cvat: print what would be added, write nothing to CVAT",
             takes_value=True)
    add_common(parser)
    return parser


def check_credentials(settings: Settings) -> None:
    from ..cvat import CvatCredentials, CvatError
    from ..pipeline import RunError

    try:
        CvatCredentials.from_env(url=settings.data.cvat.url)
    except CvatError as err:
        raise RunError(f"--push-cvat: {err}") from err


def push(settings: Settings, json_file: Path, top: int, dry_run: bool, progress: bool) -> None:
    """The top problems of ``review.json`` to CVAT through auto_annotate's write path."""
    from ..cvat import AnnotateError, RunOptions, format_plans
    from ..cvat import CvatCredentials, CvatError, connect
    from ..fileio import read_json
    from ..pipeline import RunError
    from ..review.cvat_push import push_review

    cvat = settings.data.cvat
    rows = read_json(json_file)["problems"][:top]
    options = RunOptions(out_dir=json_file.parent, dry_run=dry_run, progress=progress)
    try:
        credentials = CvatCredentials.from_env(url=cvat.url)
        with connect(credentials, allow_version_mismatch=cvat.allow_version_mismatch) as session:
            plans = push_review(session, rows, options)
    except (AnnotateError, CvatError) as err:
        raise RunError(f"the review is written ({json_file}), but pushing it to CVAT failed: {err}") from err
    print(format_plans(plans, dry_run=dry_run))


def main(argv: Sequence[str] | None = None, prog: str = "obdb review") -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.log_level)

    def body() -> int:
        from ..review import ReviewThresholds
        from ..review.service import run_review
        from ..settings import load_settings

        settings = load_settings(args.settings, args.overrides, task_list=args.tasks)
        if args.push_cvat:  # missing credentials must fail now, not after hours of training
            check_credentials(settings)
        outcome = run_review(settings, folds=args.folds, epochs=args.epochs, out=args.out, top=args.top,
                             variant=args.variant, thresholds=ReviewThresholds(min_score=args.min_score),
                             plots=args.plots, progress=args.progress)
        counts = ", ".join(f"{k} {v}" for k, v in outcome.info.get("counts", {}).items())
        metrics = outcome.info["out_of_fold_metrics"]
        print(f"{len(outcome.records)} images in {outcome.info['folds']['count']} folds; out-of-fold mAP "
              f"{metrics['map']:.4f}, mAP50 {metrics['map50']:.4f}")
        print(f"{len(outcome.problems)} suspected problem(s){': ' + counts if counts else ''}")
        for rank, problem in enumerate(outcome.problems[:args.top], 1):
            labels = f"{problem.label or '-'} -> {problem.predicted_label or '-'}"
            box = ", ".join(f"{v:.0f}" for v in problem.box)
            print(f"  {rank:>3}. {problem.score:.3f} {problem.kind:<11} {labels:<24} {problem.image_id} [{box}]")
        for name, path in outcome.files.items():
            print(f"{name + ':':<8} {path}")
        if args.push_cvat:
            push(settings, outcome.files["json"], args.top, args.dry_run, args.progress)
        return EXIT_OK

    return guarded(without_downloads("obdb review", body))  # reads saved models: never downloads weights
