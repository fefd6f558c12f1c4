"""``obdb``: one command with a subcommand per tool (the scripts in ``code/`` call the same code)."""
from __future__ import annotations

import sys
from typing import Sequence

from .common import EXIT_USAGE

COMMANDS = {
    "run": ("obdb.cli.runner", "train every variant of a settings file (same as torch_model_runner.py)"),
    "test": ("obdb.cli.test_model", "score a saved model (same as test_model.py)"),
    "split": ("obdb.cli.split", "make the train/val split of a settings file and its report, nothing else"),
    "annotate": ("obdb.cli.annotate", "push predictions / ground truth to CVAT (same as auto_annotate.py)"),
    "lint": ("obdb.cli.lint", "check the data set of a settings file (images, boxes, duplicates, labels)"),
    "review": ("obdb.cli.review", "rank suspected label errors with k-fold out-of-sample predictions"),
    "db": ("obdb.cli.db", "export/import the MongoDB annotations database as mongoexport-compatible JSON lines"),
    "sync": ("obdb.cli.sync", "pull CVAT tasks into MongoDB (incremental; deleted tasks removed)"),
    "weights": ("obdb.cli.weights", "fetch pretrained weight files ahead of time (air-gapped machines), list cached ones"),
}


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help") or args[0] not in COMMANDS:
        lines = [f"  {name:<6} {text}" for name, (_, text) in COMMANDS.items()]
        print("usage: obdb COMMAND [options]\n\ncommands:\n" + "\n".join(lines), file=sys.stderr)
        if args and args[0] not in ("-h", "--help"):
            print(f"error: unknown command {args[0]!r}", file=sys.stderr)
            return EXIT_USAGE
        return 0 if args else EXIT_USAGE
    import importlib

    module = importlib.import_module(COMMANDS[args[0]][0])
    return module.main(args[1:], prog=f"obdb {args[0]}")


if __name__ == "__main__":
    sys.exit(main())
