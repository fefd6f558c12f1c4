"""``obdb review``: data → folds → out-of-fold predictions → ranked problems → review files.

The data is prepared by the runner's own stage (:func:`obdb.prepare.prepare`: loaded, linted and
class-mapped, not split), so the review judges the boxes a model would train on.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..evaluation import coco_metrics
from ..outputs import check_writable, now
from ..pipeline import RunError, run_paths
from ..prepare import prepare
from ..records import ImageRecord
from ..settings import Settings
from .folds import assign_folds
from .oof import out_of_fold_predictions
from .problems import KINDS, Problem, ReviewThresholds, rank_problems
from .report import write_review

log = logging.getLogger(__name__)


@dataclass
class ReviewOutcome:
    problems: list[Problem]
    records: list[ImageRecord]
    folds: dict[str, int]
    files: dict[str, Path] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


def run_review(settings: Settings, *, folds: int | None = None, epochs: int | None = None, out: Path | None = None,
               top: int = 50, variant: str | None = None, thresholds: ReviewThresholds | None = None,
               plots: bool = True, progress: bool = True) -> ReviewOutcome:
    """Review the labels of the settings' data; files go to ``out`` (default ``<save_dir>/review``)."""
    paths = run_paths(settings)
    out = Path(out) if out else paths.save_dir / "review"
    check_writable(out)
    thresholds = thresholds or ReviewThresholds()
    prepared = prepare(settings, save_dir=paths.save_dir, progress=progress, split=False)
    records, class_map = prepared.records, prepared.class_map
    fold_of, source = assign_folds(records, settings, folds, progress=progress)
    count = len(set(fold_of.values()))
    log.info("review: %d images in %d folds (%s)", len(records), count, source)
    variant = variant or settings.variants[0]
    try:
        predictions = out_of_fold_predictions(settings, records, class_map, fold_of, out=out, variant=variant,
                                              epochs=epochs, progress=progress)
    except ValueError as err:
        raise RunError(f"review: {err}") from err
    problems = rank_problems(records, predictions, class_map, thresholds)
    info = {"created": now(), "experiment": paths.experiment, "variant": variant,
            "class_map": list(class_map.names), "folds": {"count": count, "source": source},
            "epochs": epochs or settings.max_train_epochs, "thresholds": vars(thresholds),
            "out_of_fold_metrics": coco_metrics(records, predictions, class_map,
                                                max_dets=settings.train.max_detections)}
    files = write_review(out, problems, records, info=info, folds=fold_of, top=top, plots=plots)
    info["counts"] = {kind: sum(p.kind == kind for p in problems) for kind in KINDS}
    return ReviewOutcome(problems, records, fold_of, files, info)
