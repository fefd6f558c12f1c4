"""``torch_model_runner.py`` / ``obdb run``: train every variant of a settings file."""
from __future__ import annotations

import argparse
import logging
from typing import Sequence

from .common import EXIT_OK, add_bool, add_common, add_settings_args, guarded, setup_logging

log = logging.getLogger("obdb")


def build_parser(prog: str = "torch_model_runner.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Search hyperparameters and train the final model for every variant of a "
        "settings file. Rerunning the same command resumes an interrupted run.")
    add_settings_args(parser, "train.batch_size=2 resnet18.run_hpo=0")
    parser.add_argument("--variants", metavar="A,B", help="train only these variants (comma separated names "
                        "from the settings' variants)")
    add_bool(parser, "--check", "make every check a run makes before training (settings, variants, storage, output "
             "folder, data, lint, split) and exit 2 where the run would fail; writes nothing")
    add_common(parser)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "torch_model_runner.py") -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.log_level)

    def body() -> int:
        from ..settings import load_settings

        # settings first: a broken file is reported in a second, before torch is imported
        settings = load_settings(args.settings, args.overrides, task_list=args.tasks)
        from .. import pipeline

        variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
        if args.check:  # every check the run makes before training, nothing written
            from ..preflight import preflight

            print(preflight(settings, variants, progress=args.progress).line())
            return EXIT_OK
        pipeline.run(settings, variants=variants, progress=args.progress)
        return EXIT_OK

    return guarded(body)
