"""Markdown helpers for the reports (evaluation, lint): text from data placed in a table cell.

Labels, image ids and file names come from annotation files and servers; a ``|`` or a line break
in one would end the cell or the row and shift every column after it. :func:`cell` makes any
text one safe cell.
"""
from __future__ import annotations

import unicodedata
from typing import Any


def cell(value: Any) -> str:
    """``value`` as one Markdown table cell: ``|`` and backslashes escaped, line breaks and other
    control characters shown as one space each (the cell stays on its row)."""
    text = str(value).replace("\\", "\\\\").replace("|", "\\|")
    text = text.replace("\r\n", " ")
    return "".join(" " if unicodedata.category(ch) == "Cc" or ch in "\u2028\u2029" else ch for ch in text)
