"""Run every lint rule over a data set: :func:`lint` (records in, records kept out) and
:func:`lint_for_run` (the pipeline stage: settings in, report written, error when nothing is left).

Order matters, each step sees what the previous one kept: read every image once
(:mod:`.images`) → image rules → exact then near duplicates (:mod:`.duplicates`) → box rules
(:mod:`.boxes`) → labels outside the class map (:mod:`.labels`). Input records are never changed:
a record whose boxes change is replaced by a copy.

The source already left out files it could not open and boxes it could not clip (cheap checks
done while loading); those arrive as ``AnnotationSet.skipped`` and are listed in the report as
``source_skipped`` so one report shows every image that is not used.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..records import AnnotationSet, ClassMap, ImageRecord, SkippedImage
from ..settings.schema import LintSettings, Settings
from ..paths import is_inside
from .base import DROPPED_IMAGE, ERROR, WARN, Issue, LintError, at_least, issue_for
from .boxes import check_boxes
from .duplicates import exact_duplicates, near_duplicates
from .images import check_images, inspect_all
from .labels import unknown_labels
from .report import build_report, summary_lines, write_report

log = logging.getLogger(__name__)

CACHE_NAME = "image_facts.json"


@dataclass
class LintResult:
    records: list[ImageRecord]
    issues: list[Issue]
    report: dict[str, Any]
    files: dict[str, Path] = field(default_factory=dict)

    def at_least(self, severity: str) -> list[Issue]:
        return at_least(self.issues, severity)

    def summary(self) -> list[str]:
        return summary_lines(self.report)

    def nothing_left(self) -> str:
        """Why no image is left: the rules that removed images, with counts."""
        removed: dict[str, int] = {}
        for issue in self.issues:
            if issue.action == DROPPED_IMAGE or issue.rule == "source_skipped":
                removed[issue.rule] = removed.get(issue.rule, 0) + 1
        if not removed:
            return "no usable images: no image was loaded (does annotations_list name the tasks?)"
        reasons = ", ".join(f"{rule} {n}" for rule, n in sorted(removed.items(), key=lambda kv: (-kv[1], kv[0])))
        where = f"; see {self.files['json']}" if "json" in self.files else ""
        return f"no usable images left after the data set checks (images removed by rule: {reasons}){where}"


def image_roots(settings: Settings) -> list[Path]:
    """The folders a run's images may come from: ``data.images_dir`` (else ``dataset_dir``) for
    local files and MongoDB, the frame cache for CVAT."""
    data = settings.data
    if data.source == "cvat":
        return [Path(data.cvat.cache_dir) if data.cvat.cache_dir else Path(settings.save_dir) / "cvat_cache"]
    return [Path(data.images_dir or settings.dataset_dir)]


def inside_roots(records: Sequence[ImageRecord], roots: Sequence[Path]) -> tuple[list[ImageRecord], list[Issue]]:
    """Records whose file (symlinks resolved) lies inside one of ``roots``, and an
    ``outside_root`` issue for each other one. Nothing is opened: a file outside the data root
    is never read, decoded, drawn in a report or trained on."""
    if not roots:
        return list(records), []
    kept, issues = [], []
    for record in records:
        if any(is_inside(root, record.path) for root in roots):
            kept.append(record)
        else:
            issues.append(issue_for(record, "outside_root", ERROR, DROPPED_IMAGE,
                                    f"{record.path} is outside the data root ({', '.join(map(str, roots))})"))
    return kept, issues


def lint(records: Sequence[ImageRecord], class_map: ClassMap | None, settings: LintSettings, *,
         skipped: Sequence[SkippedImage] = (), source_dropped_boxes: int = 0, workers: int | None = None,
         cache_file: Path | None = None, progress: bool = True, roots: Sequence[Path] = ()) -> LintResult:
    """Check ``records``; return the usable ones (fixed copies where boxes changed), every issue,
    and the report dict. ``class_map=None`` means the map is made from the data (no unknown labels).
    With ``roots``, records outside them are dropped first (see :func:`inside_roots`)."""
    records_in = records
    records, outside = inside_roots(records, roots)
    facts = inspect_all([r.path for r in records], decode=settings.check_decode,
                        dhash=settings.near_duplicate_hamming is not None, workers=workers,
                        cache_file=cache_file, progress=progress)
    issues = [Issue("source_skipped", ERROR, DROPPED_IMAGE, "", s.path, s.reason) for s in skipped] + outside
    kept, found = check_images(records, facts, settings)
    issues += found
    kept, found = exact_duplicates(kept, facts)
    issues += found
    kept, found = near_duplicates(kept, facts, settings)
    issues += found
    kept, found = check_boxes(kept, settings)
    issues += found
    kept, found, unknown = unknown_labels(kept, class_map)
    issues += found
    report = build_report(records_in, kept, issues, settings=settings, class_map=class_map, unknown_labels=unknown,
                          source_dropped_boxes=source_dropped_boxes,
                          source_skipped_boxes=sum(s.boxes for s in skipped))
    return LintResult(kept, issues, report)


def settings_class_map(settings: Settings) -> ClassMap | None:
    """The class map fixed by the settings, if any (else the pipeline makes it from the data)."""
    return ClassMap.from_names(settings.default_class_map) if settings.default_class_map else None


def lint_annotations(annotations: AnnotationSet, settings: Settings, *, out_dir: Path, progress: bool = True,
                     log_summary: bool = True) -> LintResult:
    """Lint a loaded set with the settings' class map and ``lint`` block; write the report (and the
    image facts cache) under ``out_dir`` and log the summary. ``annotations`` is not changed."""
    result = lint(annotations.records, settings_class_map(settings), settings.lint, skipped=annotations.skipped,
                  source_dropped_boxes=annotations.dropped_boxes, cache_file=Path(out_dir) / CACHE_NAME,
                  progress=progress, roots=image_roots(settings))
    result.files = write_report(Path(out_dir), result.report)
    if log_summary:
        level = logging.WARNING if result.at_least(WARN) else logging.INFO
        for line in result.summary():
            log.log(level, "%s", line)
    log.info("lint report: %s", result.files["md"])
    return result


def lint_for_run(annotations: AnnotationSet, settings: Settings, *, save_dir: Path, progress: bool = True,
                 write: bool = True) -> LintResult:
    """The pipeline stage: the usable records are ``result.records`` (``annotations`` is not changed).

    Lint (unless ``lint.enabled`` is off) with the report under ``<save_dir>/lint/`` (``write``;
    without it nothing is written: scoring re-applies the run's checks). With lint off only
    containment applies (records outside the data root are left out unopened: that is not a lint
    option) and the result has no report. Raises :class:`LintError` (after writing the report) when
    no image is left."""
    if not settings.lint.enabled:
        log.info("lint is off (lint.enabled: false): images and boxes are used as loaded")
        kept, outside = inside_roots(annotations.records, image_roots(settings))
        if outside:  # containment is not a lint option: never train on or draw a file from elsewhere
            log.warning("left out %d image(s) outside the data root, e.g. %s", len(outside), outside[0].path)
        return LintResult(kept, outside, {})
    if write:
        result = lint_annotations(annotations, settings, out_dir=Path(save_dir) / "lint", progress=progress)
    else:
        result = lint(annotations.records, settings_class_map(settings), settings.lint, skipped=annotations.skipped,
                      source_dropped_boxes=annotations.dropped_boxes, progress=progress, roots=image_roots(settings))
        if len(result.records) != len(annotations.records):
            log.info("data set checks left out %d image(s), as in the run",
                     len(annotations.records) - len(result.records))
    if not result.records:
        raise LintError(result.nothing_left())
    return result
