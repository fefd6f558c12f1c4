"""What every command line shares: honest booleans, logging, and error → exit code mapping.

The original scripts parsed ``--flag False`` as true. Here a boolean option takes an explicit
value that must be one of a small set of spellings, or is a ``--flag/--no-flag`` pair.
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
    parser.add_argument("--tasks", metavar="KEY", help="use another task list of the file, e.g. annotations_list_4k")


def add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    parser.add_argument("--progress", type=parse_bool, default=True, metavar="BOOL",
                        help="show progress bars (default: true)")


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
    except Exception as err:  # noqa: BLE001 - last line of defence: show the bug, fail cleanly
        if isinstance(err, OSError) and err.errno in DISK_FULL:  # not a bug: say which file, keep it short
            print(f"error: cannot write {err.filename or 'an output'}: {err.strerror}. Free space on that volume "
                  f"and rerun the same command: completed trials and epochs are kept", file=sys.stderr)
            return EXIT_FAILURE
        traceback.print_exc()
        print("error: unexpected failure (traceback above); outputs written so far are complete files, "
              "rerun to resume", file=sys.stderr)
        return EXIT_FAILURE
