"""Build the source a settings file asks for (``data.source``): the one place that knows them all.

Each source module is imported only when chosen, so a local run needs neither pymongo nor
cvat-sdk to be importable, and a broken optional service cannot break the others.
"""
from __future__ import annotations

from pathlib import Path

from ..settings.schema import Settings
from .base import LocalSource, Source


def source_from_settings(settings: Settings, *, progress: bool = True) -> Source:
    data = settings.data
    tasks = settings.annotations_list or None
    if data.source == "local":
        annotations = [Path(p) for p in data.annotations] or [Path(settings.dataset_dir) / "annotations"]
        return LocalSource(annotations, images_dir=Path(data.images_dir or settings.dataset_dir), tasks=tasks,
                           keep_empty=data.keep_empty, label_map=data.label_map or None,
                           group_regex=data.group_regex, progress=progress)
    if data.source == "mongo":
        from .mongo import MongoSource

        return MongoSource.from_settings(settings, progress=progress)
    if data.source == "cvat":
        from .cvat import CvatSource

        return CvatSource.from_settings(settings, progress=progress)
    raise ValueError(f"data.source: unknown source {data.source!r}")
