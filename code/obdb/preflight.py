"""``--check``: every check a run makes before training, with nothing written.

A check that passes where the run then fails in its first minute is worse than none, so this walks
the same stages :func:`obdb.pipeline.run` walks up to the first epoch: variant names, settings that
only a run can judge (:func:`~obdb.pipeline.check_run`), the study storage, the output volume, the
data (load, lint, usable images, boxes in the class map) and the split (enough groups, and the
leak check when ``split.fail_on_leak`` is on). It writes no report, manifest or probe file: lint
and the split run in memory, and the output volume is judged by its permissions.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .hpo import storage_url
from .hpo.storage import StorageUnavailable, check_reachable
from .lint import LintError
from .lint.run import lint, settings_class_map
from .pipeline import RunError, check_run, choose_class_map, load_annotations, require_records, run_paths
from .records import ImageRecord
from .settings import Settings
from .split.base import SplitError, SplitManifest
from .split.leakage import split_leaks
from .split.methods import make_split
from .split.service import SplitLeakError, split_seed

log = logging.getLogger(__name__)


@dataclass
class CheckSummary:
    variants: list[str]
    images: int
    skipped: int
    boxes: int
    groups: int
    split_method: str

    def line(self) -> str:
        return (f"settings OK: {len(self.variants)} variant(s) ({', '.join(self.variants)}), {self.images} usable "
                f"image(s) with {self.boxes} box(es) in {self.groups} group(s), {self.skipped} skipped; "
                f"split.method {self.split_method} can split them")


def chosen_variants(settings: Settings, variants: Sequence[str] | None) -> list[str]:
    """``--variants`` or every variant of the file; a name not in the file is an error."""
    chosen = list(variants or settings.variants)
    unknown = [v for v in chosen if v not in settings.variants]
    if unknown:
        raise RunError(f"--variants names {unknown} that are not in the settings' variants {settings.variants}")
    return chosen


def writable_without_writing(folder: Path) -> None:
    """The output folder (or the nearest existing parent it would be made in) lets us write."""
    probe = Path(folder).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise RunError(f"save_dir {folder} is not writable ({probe} does not let this user write)")


def preflight(settings: Settings, variants: Sequence[str] | None = None, *, progress: bool = True) -> CheckSummary:
    """Raise the error the run would raise before training, else say what it would train on."""
    chosen = chosen_variants(settings, variants)
    check_run(settings, chosen)
    paths = run_paths(settings)
    try:
        check_reachable(storage_url(settings.hpo.storage, paths.save_dir))
    except StorageUnavailable as err:
        raise RunError(str(err)) from err
    writable_without_writing(paths.save_dir)
    annotations = load_annotations(settings, progress)
    if settings.lint.enabled:
        result = lint(annotations.records, settings_class_map(settings), settings.lint, skipped=annotations.skipped,
                      source_dropped_boxes=annotations.dropped_boxes, progress=progress)
        annotations.records = result.records
        if not result.records:
            raise RunError(str(LintError(result.nothing_left())))
    require_records(annotations)
    class_map = choose_class_map(settings, annotations)
    records = annotations.records
    boxes = sum(len(r.boxes) for r in records)
    if not boxes:
        raise RunError(f"no boxes with the labels {list(class_map.names)} remain: nothing to train on")
    check_split(settings, records)
    return CheckSummary(chosen, len(records), len(annotations.skipped), boxes, len({r.group for r in records}),
                        settings.split.method)


def check_split(settings: Settings, records: list[ImageRecord]) -> None:
    """The split the run would make, in memory (``tsne``: its group count only, no features)."""
    cfg = settings.split
    try:
        if cfg.method == "tsne":
            parts = cfg.tsne.folds or 2
            groups = len({r.group for r in records})
            if groups < parts:
                raise SplitError(f"split.method 'tsne': a split into {parts} parts needs at least {parts} groups, "
                                 f"found {groups}; set data.group_regex to name smaller groups")
            return
        manifest: SplitManifest = make_split(records, cfg.method, val_fraction=cfg.val_fraction,
                                             seed=split_seed(settings), file=Path(cfg.file) if cfg.file else None)
    except SplitError as err:
        raise RunError(str(err)) from err
    leaks = split_leaks(records, manifest, max_gap=cfg.neighbour_max_gap, limit=3)
    if cfg.fail_on_leak and leaks["count"]:
        raise SplitLeakError(f"the {cfg.method} split would leak ({leaks['count']} leak(s): "
                             f"{len(leaks['groups']['straddling'])} group(s) on both sides, "
                             f"{leaks['neighbours']['pairs']} neighbouring frame pair(s) across sides) and "
                             "split.fail_on_leak is on")
