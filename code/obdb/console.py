"""Terminal colour for the few messages that must not scroll by unseen (a leaking split).

Colour only where a person looks: a terminal, or ``FORCE_COLOR`` set; never with ``NO_COLOR``
(https://no-color.org), so log files and CI logs stay plain text.
"""
from __future__ import annotations

import os
import sys
from typing import TextIO

RED, RESET = "\033[1;31m", "\033[0m"


def wants_colour(stream: TextIO | None = None) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    stream = stream if stream is not None else sys.stderr
    return bool(getattr(stream, "isatty", lambda: False)())


def red(text: str, stream: TextIO | None = None) -> str:
    """``text`` in bold red when :func:`wants_colour`, else unchanged."""
    return f"{RED}{text}{RESET}" if wants_colour(stream) else text
