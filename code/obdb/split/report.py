"""The split report: is the split balanced, and is it honest?

``report.json`` holds, per side: image, group and box counts, boxes per class and images per
cluster; the Jensen-Shannon divergence between train and val of the class and of the cluster
distributions (bits: 0 = identical, 1 = disjoint); the groups that straddle sides (must be none
for a leakage-free method); and near-duplicate pairs across sides (see :mod:`obdb.split.leakage`).
Next to it: ``tsne.png`` (map by cluster and by split), ``divergence.png`` (shares per side),
optionally ``thumbnails.png``, and ``points.csv`` (one row per image: id, side, fold, group,
cluster, map x/y) so the figures can be remade with any tool. Every file is written atomically.
"""
from __future__ import annotations

import csv
import io
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..fileio import write_json, write_text
from ..records import ImageRecord
from ..settings.schema import TsneSplitSettings
from .base import TRAIN, VAL, SplitManifest
from .leakage import cosine_pairs, dhash_pairs, pairs_json, sides_of, split_leaks
from .tsne import Analysis, class_counts, default_jobs

log = logging.getLogger(__name__)

REPORT_FORMAT = "obdb-split-report"
#: Frame numbers at most this far apart count as neighbours (``split.neighbour_max_gap``).
DEFAULT_NEIGHBOUR_GAP = 10


def js_divergence(p: Sequence[float], q: Sequence[float]) -> float:
    """Jensen-Shannon divergence in bits between two count vectors (normalised here)."""
    a, b = np.asarray(p, dtype=np.float64), np.asarray(q, dtype=np.float64)
    if a.sum() <= 0 and b.sum() <= 0:
        return 0.0
    if a.sum() <= 0 or b.sum() <= 0:
        return 1.0
    a, b = a / a.sum(), b / b.sum()
    m = (a + b) / 2

    def kl(x: np.ndarray) -> float:
        mask = x > 0
        return float((x[mask] * np.log2(x[mask] / m[mask])).sum())

    return float(max(0.0, 0.5 * kl(a) + 0.5 * kl(b)))


def side_labels(manifest: SplitManifest, ids: Sequence[str]) -> list[str]:
    """What the leakage check compares: ``fold<k>`` in k-fold mode, else train/val."""
    return sides_of(manifest, ids)


def _counts(mask: np.ndarray, groups: np.ndarray, boxes: np.ndarray, class_names: list[str], clusters: np.ndarray,
            cluster_names: list[str]) -> dict[str, Any]:
    cluster_counts = np.bincount(clusters[mask], minlength=len(cluster_names))
    class_totals = boxes[mask].sum(axis=0) if boxes.size else np.zeros(len(class_names))
    return {"images": int(mask.sum()), "groups": int(len(set(groups[mask].tolist()))),
            "boxes": int(class_totals.sum()),
            "classes": {n: int(c) for n, c in zip(class_names, class_totals)},
            "images_with_class": {n: int((boxes[mask][:, j] > 0).sum()) for j, n in enumerate(class_names)},
            "clusters": {n: int(c) for n, c in zip(cluster_names, cluster_counts)}}


def build_report(records: Sequence[ImageRecord], manifest: SplitManifest, analysis: Analysis,
                 options: TsneSplitSettings, *, seed: int = 0, n_jobs: int | None = None,
                 neighbour_max_gap: int = DEFAULT_NEIGHBOUR_GAP, grouping: dict[str, Any] | None = None
                 ) -> dict[str, Any]:
    """The report as a JSON-able dict (see the module docstring). ``grouping`` (how the groups
    were formed, :class:`obdb.sources.grouping.Grouping`) is shown as it is."""
    ids = [r.image_id for r in records]
    if ids != analysis.ids:
        raise ValueError("the analysis does not belong to these records (image ids differ)")
    groups = np.asarray([manifest.groups.get(i, r.group) for i, r in zip(ids, records)])
    boxes, class_names = class_counts(records)
    cluster_names = analysis.cluster_names()
    is_val = np.asarray([manifest.assignment[i] == VAL for i in ids])
    counts = {TRAIN: _counts(~is_val, groups, boxes, class_names, analysis.clusters, cluster_names),
              VAL: _counts(is_val, groups, boxes, class_names, analysis.clusters, cluster_names)}
    divergence = {key: js_divergence(list(counts[TRAIN][key].values()), list(counts[VAL][key].values()))
                  for key in ("classes", "clusters")}
    report: dict[str, Any] = {"format": REPORT_FORMAT, "version": 1, "split_hash": manifest.hash,
                              "method": manifest.method, "seed": manifest.seed, "counts": counts,
                              "divergence": {k: round(v, 6) for k, v in divergence.items()}}
    if manifest.folds:
        fold_of = np.asarray([manifest.folds[i] for i in ids])
        per_fold: dict[str, Any] = {}
        for k in sorted(set(fold_of.tolist())):
            inside = fold_of == k
            fold_counts = _counts(inside, groups, boxes, class_names, analysis.clusters, cluster_names)
            rest = _counts(~inside, groups, boxes, class_names, analysis.clusters, cluster_names)
            fold_counts["divergence"] = {
                key: round(js_divergence(list(rest[key].values()), list(fold_counts[key].values())), 6)
                for key in ("classes", "clusters")}
            per_fold[str(k)] = fold_counts
        report["folds"] = per_fold
        report["fold"] = manifest.params.get("fold")
    sides = np.asarray(side_labels(manifest, ids))
    plain = split_leaks(records, manifest, max_gap=neighbour_max_gap, limit=options.max_report_pairs)
    if grouping is not None:
        report["grouping"] = grouping
    report["groups"] = plain["groups"]
    report["leakage"] = leakage_block(analysis, sides, groups.tolist(), options, seed=seed, n_jobs=n_jobs)
    report["leakage"]["neighbours"] = plain["neighbours"]
    report["leakage"]["ok"] = report["leakage"]["ok"] and plain["neighbours"]["pairs"] == 0
    report["leakage"]["count"] = plain["count"]
    report["analysis"] = analysis.info
    return report


def leakage_block(analysis: Analysis, sides: np.ndarray, groups: list[str], options: TsneSplitSettings, *,
                  seed: int, n_jobs: int | None) -> dict[str, Any]:
    jobs = n_jobs or default_jobs()
    limit = options.max_report_pairs
    embedding = cosine_pairs(analysis.pca, sides, options.near_duplicate_threshold, seed=seed, n_jobs=jobs)
    block: dict[str, Any] = {"embedding": _pairs_summary(embedding, analysis.ids, sides, groups, limit,
                                                         "cosine distance of PCA features",
                                                         options.near_duplicate_threshold)}
    total = len(embedding)
    if analysis.dhash is not None:
        hashed = dhash_pairs(analysis.dhash, sides, options.dhash_threshold)
        block["dhash"] = _pairs_summary(hashed, analysis.ids, sides, groups, limit, "Hamming bits of 64-bit dHash",
                                        options.dhash_threshold)
        total += len(hashed)
    block["ok"] = total == 0
    return block


def _pairs_summary(pairs: Sequence[Any], ids: Sequence[str], sides: np.ndarray, groups: list[str], limit: int,
                   measure: str, threshold: float) -> dict[str, Any]:
    involved: dict[str, set[int]] = {}
    for pair in pairs:
        for row in (pair.a, pair.b):
            involved.setdefault(str(sides[row]), set()).add(row)
    return {"measure": measure, "threshold": threshold, "pairs": len(pairs),
            "images_per_side": {side: len(rows) for side, rows in sorted(involved.items())},
            "closest": pairs_json(pairs, ids, sides.tolist(), groups, limit)}


def points_csv(manifest: SplitManifest, analysis: Analysis) -> str:
    names = analysis.cluster_names()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["image", "split", "fold", "group", "cluster", "x", "y"])
    for i, image_id in enumerate(analysis.ids):
        fold = manifest.folds.get(image_id, "")
        group = manifest.groups.get(image_id, analysis.groups[i])
        writer.writerow([image_id, manifest.assignment[image_id], fold, group, names[analysis.clusters[i]],
                         f"{analysis.coords[i, 0]:.4f}", f"{analysis.coords[i, 1]:.4f}"])
    return out.getvalue()


def manifest_csv(manifest: SplitManifest) -> str:
    """The split as CSV (``image,split[,fold],group``); ``split.method: file`` reads it back."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["image", "split", "fold", "group"] if manifest.folds else ["image", "split", "group"])
    for image_id, side in manifest.assignment.items():
        fold = [manifest.folds[image_id]] if manifest.folds else []
        writer.writerow([image_id, side, *fold, manifest.groups.get(image_id, "")])
    return out.getvalue()


def write_report(folder: Path, report: dict[str, Any], manifest: SplitManifest, analysis: Analysis,
                 records: Sequence[ImageRecord], *, thumbnails: bool = True) -> dict[str, Path]:
    """Write report.json, points.csv, split.csv and the figures into ``folder``; returns the paths."""
    from .plots import plot_divergence, plot_thumbnails, plot_tsne

    folder = Path(folder)
    files = {"tsne": plot_tsne(folder / "tsne.png", manifest, analysis, report),
             "divergence": plot_divergence(folder / "divergence.png", report)}
    if thumbnails and all(Path(r.path).is_file() for r in records):
        files["thumbnails"] = plot_thumbnails(folder / "thumbnails.png", manifest, analysis, records)
    files["points"] = write_text(folder / "points.csv", points_csv(manifest, analysis))
    files["split_csv"] = write_text(folder / "split.csv", manifest_csv(manifest))
    report = {**report, "files": {k: p.name for k, p in files.items()}}
    files["report"] = write_json(folder / "report.json", report)
    return files


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A few lines for the terminal and the log."""
    counts, leak = report["counts"], report["leakage"]
    lines = [f"split {report['split_hash']} ({report['method']}, seed {report['seed']}): "
             f"{counts[TRAIN]['images']} train / {counts[VAL]['images']} val images, "
             f"{counts[TRAIN]['groups']} / {counts[VAL]['groups']} groups, "
             f"{counts[TRAIN]['boxes']} / {counts[VAL]['boxes']} boxes",
             f"  Jensen-Shannon divergence train vs val: classes {report['divergence']['classes']:.4f}, "
             f"clusters {report['divergence']['clusters']:.4f} (0 = same distribution, 1 = disjoint)"]
    grouping = report.get("grouping")
    if grouping:
        from ..sources.grouping import Grouping

        lines.extend(Grouping(**{k: grouping[k] for k in ("rule", "groups", "examples")}).lines())
    straddling = report["groups"]["straddling"]
    lines.append(f"  groups on both sides: {len(straddling)} of {report['groups']['total']}"
                 + (f", e.g. {next(iter(straddling))!r}" if straddling else ""))
    parts = []
    neighbours = leak.get("neighbours")
    if neighbours is not None:
        lines.append(neighbour_line(neighbours))
        parts.append(f"{neighbours['pairs']} neighbouring frames (same folder, frame numbers <= "
                     f"{neighbours['max_gap']} apart)")
    parts.append(f"{leak['embedding']['pairs']} by embedding (cosine <= {leak['embedding']['threshold']:g})")
    if "dhash" in leak:
        parts.append(f"{leak['dhash']['pairs']} by dHash (<= {leak['dhash']['threshold']} bits)")
    lines.append("  near-duplicate pairs across sides: " + ", ".join(parts))
    source = report.get("analysis", {}).get("features", {}).get("source")
    if source:
        lines.append(f"  image features: {source}")
    return lines


def neighbour_line(block: dict[str, Any]) -> str:
    """One line on neighbouring frames across sides, with an example pair when there is one."""
    text = (f"  neighbouring frames across sides: {block['pairs']} pair(s) in {block['sequences']} sequence(s)")
    if block["pairs"]:
        per_side = ", ".join(f"{n} {side}" for side, n in block["frames_per_side"].items())
        example = block["examples"][0] if block["examples"] else None
        text += f" ({per_side} frames)"
        if example:
            text += f", e.g. {example['a']!r} ({example['side_a']}) / {example['b']!r} ({example['side_b']})"
    return text
