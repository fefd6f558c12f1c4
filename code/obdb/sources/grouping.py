"""The split group of a frame: frames of one group never straddle train and validation."""
from __future__ import annotations

import re
from pathlib import Path


def frame_group(name: str, task: str, regex: re.Pattern[str] | None) -> str:
    """Group = first capture group (or whole match) of the regex on the image *file name*
    (basename), else the task: frames of one video/session must stay on one side of a split."""
    if regex is None:
        return task
    match = regex.search(Path(name.replace("\\", "/")).name)
    if match is None:
        return task
    if match.re.groups and match.group(1) is not None:
        return match.group(1)
    return match.group(0)
