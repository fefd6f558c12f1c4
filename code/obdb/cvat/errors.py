"""The error of planned CVAT writes (annotate's modes and review's push share it)."""
from __future__ import annotations

from obdb.errors import UserError


class AnnotateError(UserError, ValueError):
    """A mode cannot run as asked (no such task, ambiguous name, missing images...): the message
    names the task, file or option to fix, and nothing was written for that task."""
