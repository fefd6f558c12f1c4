"""The split stage as the runner and ``obdb split`` call it: settings in, manifest (+ report) out.

Outputs, all under ``save_dir/splits/``::

    <hash>.json                  the split manifest (content-addressed, as before)
    <hash>/report.json           counts, divergences, straddling groups, near-duplicate pairs
    <hash>/tsne.png, divergence.png, thumbnails.png, points.csv, split.csv

The runner writes the report for ``split.method: "tsne"`` (the analysis is computed anyway);
``obdb split`` writes it for every method, so a ``group`` or ``random`` split can be checked for
balance and leakage the same way before any training time is spent on it.

Every method gets the same two things first and last: the groups are (re)formed from the image
folders and task names (:func:`obdb.sources.grouping.assign_groups`), and the split is checked for
leaks that need no features (groups on both sides, neighbouring frames across sides). A leaking
split is logged; with ``split.fail_on_leak`` (``obdb split --fail-on-leak``) it is an error, raised
after the manifest and report are written so they can be inspected.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from ..console import red
from ..records import ImageRecord
from ..settings.schema import Settings
from ..sources.grouping import Grouping, assign_groups
from .base import SplitError, SplitManifest
from .leakage import split_leaks
from .methods import make_split

log = logging.getLogger(__name__)


@dataclass
class SplitOutcome:
    manifest: SplitManifest
    manifest_file: Path
    report: dict[str, Any] | None = None
    report_files: dict[str, Path] = field(default_factory=dict)
    grouping: Grouping | None = None
    leaks: dict[str, Any] = field(default_factory=dict)

    @property
    def leak_count(self) -> int:
        """Groups on both sides plus neighbouring frame pairs across sides."""
        return int(self.leaks.get("count", 0))

    def leak_message(self) -> str | None:
        """One line for the terminal when the split leaks, else None."""
        if not self.leak_count:
            return None
        groups = len(self.leaks["groups"]["straddling"])
        neighbours = self.leaks["neighbours"]
        where = self.report_files.get("report") or self.manifest_file
        return (f"split {self.manifest.hash} ({self.manifest.method}) LEAKS: {self.leak_count} leak(s): {groups} "
                f"group(s) on both sides, {neighbours['pairs']} neighbouring frame pair(s) across sides "
                f"(e.g. {_example(neighbours, self.leaks['groups']['straddling'])}); validation scores will be "
                "inflated. Fix data.group_regex "
                f"or the split (see {where})")


class SplitLeakError(SplitError):
    """``split.fail_on_leak``: the split puts one recording's frames on both sides."""


def _example(neighbours: dict[str, Any], straddling: dict[str, Any]) -> str:
    if neighbours["examples"]:
        first = neighbours["examples"][0]
        return f"{first['a']!r} / {first['b']!r}"
    return f"group {next(iter(straddling))!r}" if straddling else "-"


def split_seed(settings: Settings) -> int:
    return settings.seed if settings.split.seed is None else settings.split.seed


def feature_cache_dir(settings: Settings) -> Path:
    tsne = settings.split.tsne
    return Path(tsne.cache_dir) if tsne.cache_dir else Path(settings.save_dir) / "features"


def split_for_run(records: Sequence[ImageRecord], settings: Settings, *, save_dir: Path, progress: bool = True,
                  report: bool | None = None, log_summary: bool = True,
                  fail_on_leak: bool | None = None) -> SplitOutcome:
    """Form the groups, make the split the settings ask for, save its manifest and (``report``;
    default: for ``tsne`` only) its report, and check it for leaks. Returns what was written.

    ``fail_on_leak`` (default ``split.fail_on_leak``) raises :class:`SplitLeakError` once the
    files are written when groups or neighbouring frames straddle the sides."""
    from .report import build_report, summary_lines, write_report
    from .tsne import analyse, tsne_split

    cfg = settings.split
    seed = split_seed(settings)
    options = cfg.tsne
    want_report = (cfg.method == "tsne") if report is None else report
    weights_dir = settings.model.weights_dir
    grouping = assign_groups(records, settings.data.group_regex)
    for line in grouping.lines():
        log.info("%s", line.strip())
    if cfg.method in ("group", "tsne") and grouping.groups < 2 <= len(records):
        raise SplitError(f"split.method {cfg.method!r}: all {len(records)} images form one group "
                         f"({' '.join(grouping.lines()[1:2]).strip() or grouping.rule}): frames that share a folder "
                         "or a task (without split prefix) are one recording. If the folder holds several "
                         "recordings, set data.group_regex to name them (file name, path or task), or use "
                         "split.method 'random' for unrelated images")
    analysis = None
    if cfg.method == "tsne" or want_report:
        analysis = analyse(records, options, seed=seed, cache_dir=feature_cache_dir(settings),
                           weights_dir=weights_dir, pretrained=settings.model.pretrained, progress=progress)
    if cfg.method == "tsne":
        assert analysis is not None
        manifest = tsne_split(records, analysis, options, val_fraction=cfg.val_fraction, seed=seed, fold=cfg.fold)
    else:
        manifest = make_split(records, cfg.method, val_fraction=cfg.val_fraction, seed=seed,
                              file=Path(cfg.file) if cfg.file else None)
    splits_dir = Path(save_dir) / "splits"
    outcome = SplitOutcome(manifest, manifest.save(splits_dir), grouping=grouping)
    gap = cfg.neighbour_max_gap
    if want_report:
        assert analysis is not None
        outcome.report = build_report(records, manifest, analysis, options, seed=seed, neighbour_max_gap=gap,
                                      grouping=grouping.to_json())
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
    outcome.leaks = split_leaks(records, manifest, max_gap=gap, limit=options.max_report_pairs)
    if outcome.leak_count:
        log.warning("%s", red(str(outcome.leak_message())))
    if (cfg.fail_on_leak if fail_on_leak is None else fail_on_leak) and outcome.leak_count:
        raise SplitLeakError(f"{outcome.leak_message()}; failing because of split.fail_on_leak / --fail-on-leak")
    return outcome
