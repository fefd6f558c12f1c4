"""The output volume: where each file of a run goes, the run manifest, and the summary table.

Layout (``save_dir`` is the mounted ``/train`` volume in the container)::

    save_dir/optuna.db                       default study storage (one study per variant)
    save_dir/splits/<hash>.json              split manifests, content-addressed
    save_dir/<variant>/model.pt              state_dict + architecture header (weights_only loadable)
    save_dir/<variant>/best_params.json      hyperparameters used, with best value and trial number
    save_dir/<variant>/class_map.json        label names by model index
    save_dir/<variant>/metrics.json          final validation metrics and per-epoch history
    save_dir/<variant>/manifest.json         package versions, settings hash, split hash
    save_dir/<variant>/checkpoints/last.pt   resume point (model, optimizer, scheduler, state)
    save_dir/summary.{json,md}               one row per variant
    writer_dir/<experiment>/<variant>/{trial-000,…,final}/   TensorBoard runs
"""
from __future__ import annotations

import datetime as _dt
import logging
import os
import platform
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Sequence

from .fileio import write_json, write_text
from .redaction import redact_argv

PACKAGES = ("obdb", "torch", "torchvision", "optuna", "numpy", "pycocotools", "pillow", "pydantic")


@dataclass(frozen=True)
class RunPaths:
    save_dir: Path
    writer_dir: Path
    experiment: str

    def variant_dir(self, variant: str) -> Path:
        return self.save_dir / variant

    def checkpoint_dir(self, variant: str) -> Path:
        return self.variant_dir(variant) / "checkpoints"

    def model_file(self, variant: str) -> Path:
        return self.variant_dir(variant) / "model.pt"

    def best_params_file(self, variant: str) -> Path:
        return self.variant_dir(variant) / "best_params.json"

    def metrics_file(self, variant: str) -> Path:
        return self.variant_dir(variant) / "metrics.json"

    def splits_dir(self) -> Path:
        return self.save_dir / "splits"

    def tensorboard_dir(self, variant: str, run: str) -> Path:
        return self.writer_dir / self.experiment / variant / run


def check_writable(folder: Path) -> None:
    """Fail before any training if outputs could not be saved (read-only or missing volume)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"save_dir {folder} is not writable: {err.strerror or err}") from err


def attach_log_file(save_dir: Path, experiment: str) -> "logging.FileHandler":
    """Copy the log to ``save_dir/logs/<experiment>-<time>.log``: the volume outlives the container.
    The caller removes the returned handler when the run ends."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = save_dir / "logs" / f"{experiment}-{stamp}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.setLevel(logging.INFO)
    logging.getLogger().addHandler(handler)
    return handler


def package_versions() -> dict[str, str]:
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def write_manifest(path: Path, **fields: Any) -> Path:
    """``manifest.json``; its ``argv`` has secrets replaced (an override like
    ``hpo.storage=postgresql://u:PASS@host/db`` must not end up on the volume)."""
    return write_json(path, {"written": now(), "versions": package_versions(), "argv": redact_argv(sys.argv),
                             **fields})


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


SUMMARY_COLUMNS = (("variant", "variant"), ("head", "head"), ("hpo", "hpo"), ("trials", "trials"),
                   ("search_best", "search best"), ("map", "val mAP"), ("map50", "val mAP50"),
                   ("epochs", "epochs"), ("model", "model"))


def summary_table(rows: Sequence[dict[str, Any]]) -> str:
    """A Markdown table (readable in a terminal too) with one row per variant."""
    header = [title for _, title in SUMMARY_COLUMNS]
    body = [[_fmt(row.get(key)) for key, _ in SUMMARY_COLUMNS] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |" for r in body]
    return "\n".join(lines)


def write_summary(save_dir: Path, rows: Sequence[dict[str, Any]]) -> str:
    table = summary_table(rows)
    write_json(save_dir / "summary.json", {"written": now(), "variants": list(rows)})
    write_text(save_dir / "summary.md", table + "\n")
    return table
