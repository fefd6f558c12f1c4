"""One preparation stage: load → lint → class map → split, shared by the runner, ``obdb review``,
``obdb split`` and scoring (``test_model.py``), so each works on exactly the images and boxes a
model trains on.

Every step returns new objects and never changes its input (:func:`load_annotations`,
:func:`obdb.lint.lint_for_run`, :func:`obdb.records.drop_unknown_labels`), so the order of the
steps is the order of the calls in :func:`prepare`, not a convention the callers must keep.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

from .errors import UserError
from .fullhd import apply_full_hd
from .lint import LintError, LintResult, lint_for_run
from .records import AnnotationSet, ClassMap, ImageRecord, drop_unknown_labels, records_by_split
from .settings import Settings
from .sources.factory import load_from_settings
from .sources.grouping import assign_groups
from .split import TRAIN, VAL, SplitManifest, SplitOutcome, split_for_run

log = logging.getLogger(__name__)


class RunError(UserError, ValueError):
    """A run that cannot start or go on for a reason the user can fix (message says which)."""


@dataclass
class Prepared:
    """The data of a run. ``annotations`` holds the usable records (linted; boxes of labels outside
    ``class_map`` removed) with what the source skipped; ``train``/``val`` are empty without a split."""

    annotations: AnnotationSet
    class_map: ClassMap
    lint: LintResult | None = None
    split: SplitManifest | None = None
    split_file: Path | None = None
    split_outcome: SplitOutcome | None = None
    train: list[ImageRecord] = field(default_factory=list)
    val: list[ImageRecord] = field(default_factory=list)

    @property
    def records(self) -> list[ImageRecord]:
        return self.annotations.records


def load_annotations(settings: Settings, progress: bool = True) -> AnnotationSet:
    """The settings' source, loaded, less ``data.excluded_frames``, 4K frames as their full-HD crop
    (``full_hd``) and every frame in its recording's group (a new set; the source's own account of
    skipped images and dropped boxes is kept)."""
    loaded = load_from_settings(settings, progress=progress)
    data = settings.data
    if data.excluded_frames:
        excluded = set(data.excluded_frames)
        kept = [r for r in loaded.records
                if not ({r.image_id, r.path.name, str(r.path)} & excluded
                        or any(str(r.path).endswith("/" + e.lstrip("/")) for e in excluded))]
        log.info("excluded_frames removed %d image(s)", len(loaded.records) - len(kept))
        loaded = replace(loaded, records=kept)
    # the records were made just now, for this set alone: changing them here changes no one else's
    if data.full_hd:  # 4K frames -> their bottom-centre full-HD region, boxes clipped (obdb.fullhd)
        apply_full_hd(loaded.records)
    assign_groups(loaded.records, data.group_regex)  # recordings, before lint and split look at groups
    return loaded


def require_records(annotations: AnnotationSet) -> None:
    if not annotations.records:
        raise RunError("no usable images: every image was skipped or no task matched annotations_list")


def choose_class_map(settings: Settings, annotations: AnnotationSet) -> ClassMap:
    """The settings' class map when given (model indices must not depend on the data), else the
    data's labels sorted by name."""
    if settings.default_class_map:
        return ClassMap.from_names(settings.default_class_map)
    names = sorted(annotations.label_names())
    if not names:
        raise RunError("the annotations hold no boxes at all: nothing to train on")
    return ClassMap(tuple(names))


def keep_class_map(annotations: AnnotationSet, class_map: ClassMap) -> AnnotationSet:
    """A set whose records hold only boxes of ``class_map``'s labels (the rest counted in the log)."""
    records, dropped = drop_unknown_labels(annotations.records, class_map)
    if dropped:
        log.warning("dropped boxes with labels outside the class map %s: %s", list(class_map.names), dropped)
    return replace(annotations, records=records)


def _lint(annotations: AnnotationSet, settings: Settings, save_dir: Path, write: bool,
          progress: bool) -> tuple[AnnotationSet, LintResult | None]:
    """The runner's data set checks (:func:`obdb.lint.lint_for_run`), as a new set."""
    try:
        result = lint_for_run(annotations, settings, save_dir=save_dir, progress=progress, write=write)
    except LintError as err:
        raise RunError(str(err)) from err
    return replace(annotations, records=result.records), (result if settings.lint.enabled else None)


def prepare(settings: Settings, *, progress: bool = True, save_dir: Path | None = None, write: bool = True,
            class_map: ClassMap | None = None, split: bool = True, manifest: SplitManifest | None = None,
            split_report: bool | None = None, log_split_summary: bool = True, fail_on_leak: bool | None = None,
            require_boxes: bool = False) -> Prepared:
    """Load, lint (lint before the class map: lint lists the boxes of labels outside it), choose the
    class map (``class_map``: a model's own) and drop the boxes outside it, then split.

    ``write``: the lint report and the split manifest (and report: ``split_report``, default for
    ``tsne`` only) go under ``save_dir`` (default ``settings.save_dir``); without it neither is
    written (a ``tsne`` split still caches its image features). ``manifest``: use this split (a
    model's) instead of making one; records it does not name are in neither side. ``fail_on_leak``:
    as :func:`obdb.split.split_for_run` (default ``split.fail_on_leak``). ``require_boxes``: an
    error when no box is left (training)."""
    save_dir = Path(save_dir if save_dir is not None else settings.save_dir)
    annotations, linted = _lint(load_annotations(settings, progress), settings, save_dir, write, progress)
    require_records(annotations)
    class_map = choose_class_map(settings, annotations) if class_map is None else class_map
    annotations = keep_class_map(annotations, class_map)
    if require_boxes and not any(len(r.boxes) for r in annotations.records):
        raise RunError(f"no boxes with the labels {list(class_map.names)} remain: nothing to train on")
    prepared = Prepared(annotations, class_map, linted)
    if not split:
        return prepared
    if manifest is None:
        outcome = split_for_run(annotations.records, settings, save_dir=save_dir, progress=progress,
                                report=split_report if write else False, log_summary=log_split_summary,
                                fail_on_leak=fail_on_leak, save=write)
        prepared.split_outcome, manifest = outcome, outcome.manifest
        prepared.split_file = outcome.manifest_file if write else None
    prepared.split = manifest
    prepared.train = records_by_split(annotations.records, manifest.assignment, TRAIN)
    prepared.val = records_by_split(annotations.records, manifest.assignment, VAL)
    log.info("split %s (%s): %d train / %d val images, %d / %d boxes%s", manifest.hash, manifest.method,
             len(prepared.train), len(prepared.val), sum(len(r.boxes) for r in prepared.train),
             sum(len(r.boxes) for r in prepared.val), f" -> {prepared.split_file}" if prepared.split_file else "")
    return prepared
