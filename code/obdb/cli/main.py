"""``obdb``: one command with a subcommand per tool (the scripts in ``code/`` call the same code)."""
from __future__ import annotations

import sys
from typing import Sequence

from .common import EXIT_OK, EXIT_USAGE

COMMANDS = {
    "run": ("obdb.cli.runner", "train every variant of a settings file (same as torch_model_runner.py)"),
    "test": ("obdb.cli.test_model", "score a saved model (same as test_model.py)"),
    "split": ("obdb.cli.split", "make the train/val split of a settings file and its report, nothing else"),
    "annotate": ("obdb.cli.annotate", "push predictions / ground truth to CVAT (same as auto_annotate.py)"),
    "lint": ("obdb.cli.lint", "check the data set of a settings file (images, boxes, duplicates, labels)"),
    "review": ("obdb.cli.review", "rank suspected label errors with k-fold out-of-sample predictions"),
    "db": ("obdb.cli.db", "export/import the MongoDB annotations database as mongoexport-compatible JSON lines"),
    "sync": ("obdb.cli.sync", "pull CVAT tasks into MongoDB (incremental; deleted tasks removed)"),
    "weights": ("obdb.cli.weights", "fetch pretrained weights ahead of time (air-gapped machines); list cached ones"),
}


def version() -> str:
    """The installed obdb version (the checkout's pyproject version when run from source)."""
    from importlib import metadata

    try:
        return metadata.version("obdb")
    except metadata.PackageNotFoundError:
        return "unknown (not installed; run scripts/setup_env.sh)"


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {name:<{width}}  {text}" for name, (_, text) in COMMANDS.items()]
    return ("usage: obdb COMMAND [options]    (obdb COMMAND --help for its options)\n\ncommands:\n"
            + "\n".join(lines) + "\n\noptions:\n  -h, --help  show this help\n  --version   print the version\n")


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(usage(), end="")
        return EXIT_OK
    if args and args[0] == "--version":
        print(f"obdb {version()}")
        return EXIT_OK
    if not args or args[0] not in COMMANDS:
        print(usage(), end="", file=sys.stderr)
        if args:
            from difflib import get_close_matches

            near = get_close_matches(args[0], list(COMMANDS), n=1)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            print(f"error: unknown command {args[0]!r}{hint}", file=sys.stderr)
        return EXIT_USAGE
    import importlib

    module = importlib.import_module(COMMANDS[args[0]][0])
    return module.main(args[1:], prog=f"obdb {args[0]}")


if __name__ == "__main__":
    sys.exit(main())
