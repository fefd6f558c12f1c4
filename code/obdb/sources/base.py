"""What every annotation source has in common.

A *source* turns some store of annotations (local export files, MongoDB, a CVAT server) into an
:class:`~obdb.records.AnnotationSet`. Everything downstream (splitting, training,
evaluation) only sees that set, so a new source only has to implement :class:`Source`.

Sources know nothing of torch: numpy, PIL and the standard library only, so they can be used in
light-weight tools (data checks, the demo fetcher) without the training stack.
"""
from __future__ import annotations

from obdb.errors import UserError
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:  # pragma: no cover - imports for type checkers only
    from obdb.records import AnnotationSet


class SourceError(UserError, ValueError):
    """Annotations cannot be read as asked: malformed or unknown file, missing task, bad input.

    A ``ValueError`` so callers that validate user input can catch both alike. The message always
    names the offending file (and, for XML/JSON syntax errors, the line) because the user has to
    go and fix that file.
    """


@runtime_checkable
class Source(Protocol):
    """Anything that can produce an :class:`AnnotationSet`; the orchestrator only calls ``load``."""

    def load(self) -> AnnotationSet:
        ...


@dataclass
class LocalSource:
    """Annotation export files on disk plus a folder of images (see :func:`obdb.sources.local.load_local`).

    A dataclass rather than a bare function call so settings can build a source object once and
    hand it around; the fields are exactly ``load_local``'s arguments.
    """

    annotations: list[Path] | Path
    images_dir: Path
    tasks: list[str] | None = None
    keep_empty: bool = True
    label_map: dict[str, str | None] | None = field(default=None)
    group_regex: str | None = None
    progress: bool = True

    def load(self) -> AnnotationSet:
        # Imported here so ``base`` stays import-cycle free (local.py imports SourceError from here).
        from obdb.sources.local import load_local

        return load_local(self.annotations, images_dir=self.images_dir, tasks=self.tasks,
                          keep_empty=self.keep_empty, label_map=self.label_map,
                          group_regex=self.group_regex, progress=self.progress)
