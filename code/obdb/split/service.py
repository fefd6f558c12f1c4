"""The split stage as the runner and ``obdb split`` call it: settings in, manifest (+ report) out.

Outputs, all under ``save_dir/splits/``::

    <hash>.json                  the split manifest (content-addressed, as before)
    <hash>/report.json           counts, divergences, straddling groups, near-duplicate pairs
    <hash>/tsne.png, divergence.png, thumbnails.png, points.csv, split.csv

The runner writes the report for ``split.method: "tsne"`` (the analysis is computed anyway);
``obdb split`` writes it for every method, so a ``group`` or ``random`` split can be checked for
balance and leakage the same way before any training time is spent on it.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..records import ImageRecord
from ..settings.schema import Settings
from .base import SplitManifest
from .methods import make_split

log = logging.getLogger(__name__)


@dataclass
class SplitOutcome:
    manifest: SplitManifest
    manifest_file: Path
    report: dict[str, Any] | None = None
    report_files: dict[str, Path] = field(default_factory=dict)


def split_seed(settings: Settings) -> int:
    return settings.seed if settings.split.seed is None else settings.split.seed


def feature_cache_dir(settings: Settings) -> Path:
    tsne = settings.split.tsne
    return Path(tsne.cache_dir) if tsne.cache_dir else Path(settings.save_dir) / "features"


def split_for_run(records: Sequence[ImageRecord], settings: Settings, *, save_dir: Path, progress: bool = True,
                  report: bool | None = None, log_summary: bool = True, save: bool = True) -> SplitOutcome:
    """Make the split the settings ask for, save its manifest (unless ``save`` is off: scoring
    recomputing a lost split) and (``report``; default: for ``tsne`` only) its report. Returns what
    was written."""
    from .report import build_report, summary_lines, write_report
    from .tsne import analyse, tsne_split

    cfg = settings.split
    seed = split_seed(settings)
    options = cfg.tsne
    want_report = (cfg.method == "tsne") if report is None else report
    weights_dir = settings.model.weights_dir
    analysis = None
    if cfg.method == "tsne" or want_report:
        analysis = analyse(records, options, seed=seed, cache_dir=feature_cache_dir(settings),
                           weights_dir=weights_dir, progress=progress)
    if cfg.method == "tsne":
        assert analysis is not None
        manifest = tsne_split(records, analysis, options, val_fraction=cfg.val_fraction, seed=seed, fold=cfg.fold)
    else:
        manifest = make_split(records, cfg.method, val_fraction=cfg.val_fraction, seed=seed,
                              file=Path(cfg.file) if cfg.file else None)
    splits_dir = Path(save_dir) / "splits"
    outcome = SplitOutcome(manifest, manifest.save(splits_dir) if save else splits_dir / f"{manifest.hash}.json")
    if want_report:
        assert analysis is not None
        outcome.report = build_report(records, manifest, analysis, options, seed=seed)
        outcome.report_files = write_report(splits_dir / manifest.hash, outcome.report, manifest, analysis, records,
                                            thumbnails=options.thumbnails)
        if log_summary:
            for line in summary_lines(outcome.report):
                log.info("%s", line)
        log.info("split report: %s", outcome.report_files["report"])
        if not outcome.report["groups"]["ok"]:
            log.warning("split %s puts %d group(s) on both sides: validation scores will be inflated",
                        manifest.hash, len(outcome.report["groups"]["straddling"]))
        if not outcome.report["leakage"]["ok"]:
            log.warning("split %s has near-duplicate images on both sides (see %s)", manifest.hash,
                        outcome.report_files["report"])
    return outcome
