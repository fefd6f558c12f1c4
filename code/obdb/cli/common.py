"""What every command line shares: one set of conventions, logging, and error → exit code mapping.

Conventions of every obdb command (README, "Command-line conventions"):

* a boolean option is a ``--x`` / ``--no-x`` pair; ``--x VALUE`` with an explicit ``true``/``false``
  (``yes``/``no``, ``1``/``0``) also works, and any other value is an error (the original scripts
  parsed ``--flag False`` as true);
* ``--tasks KEY`` picks a task list of the settings file, ``--task NAME`` (repeatable) names tasks exactly;
* ``-o``/``--out`` is always a folder; a single output file has an option of its own;
* every option has help text, and ``-f``/``--settings`` always names the settings file.
"""
from __future__ import annotations

import argparse
import errno
import logging
import sys
import traceback
from typing import Callable

from obdb.errors import EXIT_FAILURE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USAGE, UserError  # noqa: F401 - re-exported

DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})  # out of space, quota, or file size limit
TRUE_WORDS = {"1", "true", "yes", "on", "y", "t"}
FALSE_WORDS = {"0", "false", "no", "off", "n", "f"}


def parse_bool(text: str) -> bool:
    """argparse ``type=`` for booleans: ``False``, ``0``, ``no`` mean false; anything unknown is an error."""
    value = text.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise argparse.ArgumentTypeError(f"expected a boolean (true/false, yes/no, 1/0), got {text!r}")


class BoolAction(argparse.Action):
    """``--x`` (true); with ``takes_value`` also ``--x VALUE`` with an explicit boolean word
    (options that took a value before keep working); without it a value after the flag is
    refused, so ``--dry-run False`` can never mean "true". The ``--no-x`` twin takes no value, so
    ``--no-progress key=value`` leaves the override alone."""

    def __init__(self, option_strings: list[str], dest: str, default: bool = False, help: str | None = None,
                 takes_value: bool = False, negative: bool = False, **kwargs: object) -> None:
        self.negative = negative
        super().__init__(option_strings, dest, nargs="?" if takes_value and not negative else 0, default=default,
                         metavar="BOOL" if takes_value and not negative else None, help=help)

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        if values in (None, []):
            setattr(namespace, self.dest, not self.negative)
            return
        try:
            setattr(namespace, self.dest, parse_bool(str(values)))
        except argparse.ArgumentTypeError as err:
            parser.error(f"{option_string}: {err}")


def add_bool(parser: argparse.ArgumentParser | argparse._ArgumentGroup, name: str, help_text: str,
             default: bool = False, takes_value: bool = False) -> None:
    """Add a boolean option ``--name`` and its ``--no-name`` twin (the one convention for booleans)."""
    negative = "--no-" + name[2:]
    action = parser.add_argument(name, action=BoolAction, default=default, takes_value=takes_value,
                                 help=f"{help_text} (default: {'on' if default else 'off'}; {negative} turns it off)")
    parser.add_argument(negative, action=BoolAction, dest=action.dest, default=default, negative=True,
                        help=argparse.SUPPRESS)


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=getattr(logging, level.upper(), logging.INFO), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("PIL", "matplotlib", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def add_settings_args(parser: argparse.ArgumentParser, example: str) -> None:
    """``-f SETTINGS``, ``key.path=value`` overrides and ``--tasks``: how every command that
    works on a settings file reads it. ``example`` shows overrides that fit the command."""
    parser.add_argument("-f", "--settings", required=True, help="settings JSON file")
    parser.add_argument("overrides", nargs="*", metavar="key.path=value",
                        help=f"override settings, e.g. {example} (value parsed as JSON)")
    add_task_list(parser)


def add_task_list(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--tasks KEY``: a task list of the settings file (``annotations_list_4k``, ``first_year_tasks``)."""
    parser.add_argument("--tasks", metavar="KEY",
                        help="use another task list of the settings file, e.g. annotations_list_4k")


def add_task_names(parser: argparse.ArgumentParser | argparse._ArgumentGroup, what: str = "only this task") -> None:
    """``--task NAME`` (repeatable): exact task names, which may contain spaces."""
    parser.add_argument("--task", dest="task_names", action="append", default=[], metavar="NAME",
                        help=f"{what} (exact name; repeat for several)")


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="how much to log on stderr (default: INFO)")
    add_bool(parser, "--progress", "show progress bars", default=True, takes_value=True)


def whole_number(minimum: int) -> Callable[[str], int]:
    """An argparse ``type`` for a whole number of at least ``minimum`` (counts, sizes, folds)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a whole number >= {minimum}, got {text!r}")
        return value

    parse.__name__ = f"whole number >= {minimum}"
    return parse


def without_downloads(command: str, main: Callable[[], int]) -> Callable[[], int]:
    """``main`` with weight downloads forbidden: for commands that read saved models only."""
    def run() -> int:
        from ..models.hub import downloads_forbidden

        with downloads_forbidden(command):
            return main()

    return run


def guarded(main: Callable[[], int]) -> int:
    """Run ``main``; turn known errors into a one-paragraph message and an exit code."""
    try:
        return main()
    except KeyboardInterrupt:
        print("\ninterrupted: rerun the same command to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return err.exit_code
    except (PermissionError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except ModuleNotFoundError as err:  # a Python without obdb's packages: no traceback, say how to fix it
        if err.name and err.name.split(".")[0] == "obdb":
            raise
        from .environment import setup_hint

        print(f"error: package {err.name!r} is not installed in {sys.executable}: {setup_hint()}", file=sys.stderr)
        return EXIT_USAGE
    except Exception as err:  # noqa: BLE001 - last line of defence: show the bug, fail cleanly
        if isinstance(err, OSError) and err.errno in DISK_FULL:  # not a bug: say which file, keep it short
            print(f"error: cannot write {err.filename or 'an output'}: {err.strerror}. Free space on that volume "
                  f"and rerun the same command: completed trials and epochs are kept", file=sys.stderr)
            return EXIT_USAGE
        traceback.print_exc()
        print("error: unexpected failure (traceback above); outputs written so far are complete files, "
              "rerun to resume", file=sys.stderr)
        return EXIT_FAILURE
