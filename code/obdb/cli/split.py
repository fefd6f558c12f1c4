"""``obdb split``: make (or check) the split of a settings file alone, with its report.

Runs load → split → report, exactly as the runner would split, and prints a summary. The report
is written for every ``split.method`` (for ``group``/``random``/``file`` too), so a split can be
judged for balance and leakage before training on it.
"""
from __future__ import annotations

import argparse
from typing import Sequence

from .common import EXIT_OK, add_bool, add_common, add_settings_args, guarded, setup_logging


def build_parser(prog: str = "obdb split") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Split the images of a settings file into train/val (or folds) and write the "
        "manifest and its report (class/cluster counts, divergences, leakage check, t-SNE figures) under "
        "<save_dir>/splits/.")
    add_settings_args(parser, "split.method=tsne split.tsne.folds=5")
    add_bool(parser, "--fail-on-leak", "exit 2 when groups or neighbouring frames straddle train and val; "
             "unset: the setting split.fail_on_leak decides", default=None)  # type: ignore[arg-type]
    add_common(parser)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "obdb split") -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.log_level)

    def body() -> int:
        from .. import pipeline
        from ..lint import LintError, lint_for_run
        from ..fileio import remove_stale_temps
        from ..outputs import check_writable
        from ..settings import load_settings
        from ..split import split_for_run
        from ..split.report import summary_lines

        settings = load_settings(args.settings, args.overrides, task_list=args.tasks)
        paths = pipeline.run_paths(settings)
        check_writable(paths.save_dir)
        remove_stale_temps(paths.splits_dir())  # what a killed earlier `obdb split` left (ours only)
        annotations = pipeline.load_annotations(settings, args.progress)
        try:  # lint as the runner does, so this is the split the runner would make
            lint_for_run(annotations, settings, save_dir=paths.save_dir, progress=args.progress)
        except LintError as err:
            raise pipeline.RunError(str(err)) from None
        pipeline.require_records(annotations)
        pipeline.choose_class_map(settings, annotations)  # count only the boxes a model would train on
        outcome = split_for_run(annotations.records, settings, save_dir=paths.save_dir, progress=args.progress,
                                report=True, log_summary=False, fail_on_leak=False)
        assert outcome.report is not None
        print("\n".join(summary_lines(outcome.report)))
        if outcome.manifest.folds:
            print(f"  k-fold: {outcome.manifest.params.get('folds')} folds, fold "
                  f"{outcome.manifest.params.get('fold')} is val")
        print(f"manifest: {outcome.manifest_file}")
        print(f"report:   {outcome.report_files['report']}")
        figures = [str(outcome.report_files[k]) for k in ("tsne", "divergence", "thumbnails")
                   if k in outcome.report_files]
        print(f"figures:  {', '.join(figures)}")
        fail = settings.split.fail_on_leak if args.fail_on_leak is None else args.fail_on_leak
        if fail and outcome.leak_count:  # after the summary, so the user sees what leaks
            from ..split.service import SplitLeakError

            raise SplitLeakError(f"{outcome.leak_message()}; failing because of --fail-on-leak / split.fail_on_leak")
        return EXIT_OK

    return guarded(body)
