"""Build the source a settings file asks for (``data.source``) and load it: the one place that
knows them all.

Each source module is imported only when chosen, so a local run needs neither pymongo nor
cvat-sdk to be importable, and a broken optional service cannot break the others.
"""
from __future__ import annotations

from pathlib import Path

from ..records import AnnotationSet
from ..settings.schema import Settings
from .contract import Source
from .driver import LoadOptions, load
from .local import LocalSource


def source_from_settings(settings: Settings) -> Source:
    data = settings.data
    tasks = settings.annotations_list or None
    images_dir = Path(data.images_dir or settings.dataset_dir)
    if data.source == "local":
        annotations = [Path(p) for p in data.annotations] or [Path(settings.dataset_dir) / "annotations"]
        return LocalSource(annotations, images_dir=images_dir, tasks=tasks)
    if data.source == "mongo":
        from .mongo import MongoSource

        return MongoSource(mongo=data.mongo, images_dir=images_dir, tasks=tasks)
    if data.source == "cvat":
        from .cvat import CvatSource

        cache = Path(data.cvat.cache_dir) if data.cvat.cache_dir else Path(settings.save_dir) / "cvat_cache"
        return CvatSource(cvat=data.cvat, cache_dir=cache, tasks=list(settings.annotations_list))
    raise ValueError(f"data.source: unknown source {data.source!r}")


def options_from_settings(settings: Settings) -> LoadOptions:
    """The ``data.*`` settings that turn shapes into records (``data.mongo.polygons`` is the older
    name of ``data.polygons``: either one set to ``skip`` skips). Which model proposals count as
    ground truth is ``data.cvat.include_auto`` / ``data.mongo.include_auto`` for those sources and
    ``data.include_auto`` for local export files (a CVAT XML export carries each shape's source)."""
    data = settings.data
    include_auto = {"cvat": data.cvat.include_auto,
                    "mongo": data.mongo.include_auto}.get(data.source, data.include_auto)
    return LoadOptions(keep_empty=data.keep_empty, label_map=dict(data.label_map), group_regex=data.group_regex,
                       polygons="skip" if "skip" in (data.polygons, data.mongo.polygons) else "bbox",
                       include_auto=include_auto)


def load_from_settings(settings: Settings, *, progress: bool = True) -> AnnotationSet:
    """The records of the source ``settings`` name, through the one driver."""
    return load(source_from_settings(settings), options_from_settings(settings), progress=progress)
