"""Out-of-fold predictions: one model per fold, trained on the other folds, predicts its fold.

Every image thus gets a prediction from a model that never trained on it (nor on its group), which
is what makes disagreement with its labels evidence of a label error rather than memorisation.

Each fold writes ``<out>/folds/fold<k>/predictions.json`` when done, with a fingerprint of what
produced it (held-out images, training images, parameters, epochs, model spec); a rerun skips
folds whose fingerprint matches and resumes an interrupted fold from its ``checkpoints/last.pt``.
The epoch kept per fold is the best by validation mAP on the held-out fold: its labels pick one
of a few epochs, they never fit a weight.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..dataset import DetectionDataset, make_loader
from ..evaluation import predict
from ..fileio import read_json, write_json
from ..pipeline import fixed_params, run_paths
from ..training.config import fit_config, fit_data, model_spec
from ..records import ClassMap, ImageRecord, stable_hash
from ..settings import Settings
from ..training.fit import fit

log = logging.getLogger(__name__)

PREDICTIONS = "predictions.json"


def fold_dir(out: Path, fold: int) -> Path:
    return Path(out) / "folds" / f"fold{fold}"


def _fingerprint(held_out: Sequence[ImageRecord], train: Sequence[ImageRecord], params: dict[str, Any],
                 epochs: int, spec: dict[str, Any], variant: str) -> dict[str, Any]:
    def ids_hash(records: Sequence[ImageRecord]) -> str:
        return stable_hash(sorted((r.image_id, r.boxes.round(2).tolist(), r.labels) for r in records))

    return {"held_out": ids_hash(held_out), "train": ids_hash(train), "params": params, "epochs": epochs,
            "spec": spec, "variant": variant}


def _encode(prediction: dict[str, np.ndarray]) -> dict[str, list[Any]]:
    return {"boxes": np.round(prediction["boxes"], 2).tolist(), "scores": np.round(prediction["scores"], 5).tolist(),
            "labels": prediction["labels"].astype(int).tolist()}


def _decode(data: dict[str, Any]) -> dict[str, np.ndarray]:
    return {"boxes": np.asarray(data["boxes"], np.float32).reshape(-1, 4),
            "scores": np.asarray(data["scores"], np.float32).reshape(-1),
            "labels": np.asarray(data["labels"], np.int64).reshape(-1)}


def _clear_stale_checkpoints(folder: Path, fingerprint: dict[str, Any]) -> None:
    """Checkpoints of another fold layout or other parameters must not be resumed."""
    marker = folder / "fingerprint.json"
    if marker.exists() and read_json(marker) != fingerprint:
        for name in ("last.pt", "best.pt"):
            (folder / name).unlink(missing_ok=True)
        log.warning("%s: folds or parameters changed since the last review; this fold starts over", folder)
    write_json(marker, fingerprint)


def load_fold(out: Path, fold: int, fingerprint: dict[str, Any]) -> dict[str, dict[str, np.ndarray]] | None:
    """The finished fold's predictions by image id, or None when absent or made differently."""
    path = fold_dir(out, fold) / PREDICTIONS
    if not path.exists():
        return None
    data = read_json(path)
    if data.get("fingerprint") != fingerprint:
        return None
    return {image_id: _decode(p) for image_id, p in data["predictions"].items()}


def out_of_fold_predictions(settings: Settings, records: Sequence[ImageRecord], class_map: ClassMap,
                            folds: dict[str, int], *, out: Path, variant: str | None = None,
                            epochs: int | None = None, progress: bool = True) -> list[dict[str, np.ndarray]]:
    """A prediction for every record (same order), each from the model of the record's fold.

    ``variant`` defaults to the settings' first; its parameters are what the run would train with
    (``optimal_hpo_settings`` or an earlier search's best); ``epochs`` defaults to
    ``max_train_epochs`` with the run's early stopping (``max_plateau_count``)."""
    missing = [r.image_id for r in records if r.image_id not in folds]
    if missing:
        raise ValueError(f"{len(missing)} record(s) have no fold, e.g. {missing[0]!r}")
    variant = variant or settings.variants[0]
    if variant not in settings.variants:
        raise ValueError(f"variant {variant!r} is not in the settings' variants {settings.variants}")
    epochs = epochs or settings.max_train_epochs
    params, _ = fixed_params(settings, variant, run_paths(settings))
    spec = model_spec(settings, variant, class_map.num_classes)
    config = fit_config(settings, variant, spec, progress)
    by_id: dict[str, dict[str, np.ndarray]] = {}
    fold_ids = sorted(set(folds[r.image_id] for r in records))
    if len(fold_ids) < 2:
        raise ValueError(f"out-of-fold predictions need at least 2 folds, got {fold_ids}")
    for k in fold_ids:
        held_out = [r for r in records if folds[r.image_id] == k]
        train = [r for r in records if folds[r.image_id] != k]
        fingerprint = _fingerprint(held_out, train, params.model_dump(), epochs, spec.to_json(), variant)
        done = load_fold(out, k, fingerprint)
        if done is not None and set(done) >= {r.image_id for r in held_out}:
            log.info("review fold %d of %d: already predicted (%d images); skipping", k + 1, len(fold_ids),
                     len(held_out))
            by_id.update(done)
            continue
        log.info("review fold %d of %d: training on %d images, predicting %d", k + 1, len(fold_ids), len(train),
                 len(held_out))
        folder = fold_dir(out, k)
        checkpoints = folder / "checkpoints"
        _clear_stale_checkpoints(checkpoints, fingerprint)
        data = fit_data(settings, train, held_out, class_map, progress, shared_cache=False)
        model, _, _ = fit(data, config, params, max_epochs=epochs, name=f"{variant} review fold {k}",
                          patience=settings.max_plateau_count, checkpoint_dir=checkpoints)
        loader = make_loader(DetectionDataset(held_out, class_map, train=False),
                             batch_size=config.eval_batch_size or config.batch_size, shuffle=False, workers=0)
        predictions = predict(model, loader, config.device, progress=progress, desc=f"predict fold {k}")
        fold_predictions = {r.image_id: p for r, p in zip(held_out, predictions)}
        write_json(folder / PREDICTIONS, {"fold": k, "fingerprint": fingerprint, "variant": variant,
                                          "predictions": {i: _encode(p) for i, p in fold_predictions.items()}})
        by_id.update({i: _decode(_encode(p)) for i, p in fold_predictions.items()})
    return [by_id[r.image_id] for r in records]
