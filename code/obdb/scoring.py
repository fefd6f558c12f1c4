"""Score a saved model (``test_model.py``): COCO mAP@[.5:.95], mAP50 and per-class AP.

The images come either from the run that trained the model (its settings plus the split manifest
recorded in the model file, so "val" is exactly the validation set it was selected on) or from
any annotation files given directly.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import torch

from .evaluation import evaluate
from .models import load_model
from .outputs import now
from .pipeline import RunError, load_annotations, run_paths
from .records import ClassMap, ImageRecord, drop_unknown_labels
from .settings import Settings
from .sources.local import load_local
from .split import SplitManifest, make_split
from .split.service import feature_cache_dir
from .training.fit import resolve_device, set_max_detections

log = logging.getLogger(__name__)


def keep_model_labels(records: Sequence[ImageRecord], class_map: ClassMap) -> None:
    dropped = drop_unknown_labels(records, class_map)
    if dropped:
        log.warning("boxes with labels the model does not know are left out: %s", dropped)


def records_from_run(settings: Settings, header: dict[str, Any], split: str, progress: bool) -> list[ImageRecord]:
    """The model's own split: the manifest it names, recomputed only when the file is gone."""
    annotations = load_annotations(settings, progress)
    class_map = ClassMap.from_json(header["class_map"])
    keep_model_labels(annotations.records, class_map)
    if split == "all":
        return annotations.records
    extra = header.get("extra", {})
    manifest_path = run_paths(settings).save_dir / extra.get("split_file", "")
    if extra.get("split_file") and manifest_path.is_file():
        manifest = SplitManifest.load(manifest_path)
    else:
        cfg = settings.split
        manifest = make_split(annotations.records, cfg.method, val_fraction=cfg.val_fraction,
                              seed=settings.seed if cfg.seed is None else cfg.seed,
                              file=Path(cfg.file) if cfg.file else None, tsne=cfg.tsne, fold=cfg.fold,
                              cache_dir=feature_cache_dir(settings),
                              weights_dir=Path(settings.model.weights_dir) if settings.model.weights_dir else None,
                              progress=progress)
        if extra.get("split_hash") and manifest.hash != extra["split_hash"]:
            log.warning("split recomputed from the settings (%s) differs from the model's (%s): the data changed",
                        manifest.hash, extra["split_hash"])
    missing = [r.image_id for r in annotations.records if r.image_id not in manifest.assignment]
    if missing:
        log.warning("%d image(s) are not in the model's split (new data?) and are left out", len(missing))
    records = [r for r in annotations.records if manifest.assignment.get(r.image_id) == split]
    if not records:
        raise RunError(f"the {split} split holds no images")
    return records


def records_from_files(annotations: Sequence[Path], images_dir: Path, class_map: ClassMap,
                       progress: bool) -> list[ImageRecord]:
    loaded = load_local(list(annotations), images_dir=images_dir, progress=progress)
    keep_model_labels(loaded.records, class_map)
    if not loaded.records:
        raise RunError("no usable images in the given annotation files")
    return loaded.records


def score(model_path: Path, *, settings: Settings | None, split: str = "val", annotations: Sequence[Path] = (),
          images_dir: Path | None = None, device: str = "auto", batch_size: int = 2, max_detections: int = 100,
          progress: bool = True) -> dict[str, Any]:
    model, spec, class_map, header = load_model(model_path)
    if annotations:
        if images_dir is None:
            raise RunError("--annotations needs --images (the folder the annotation files' image names are in)")
        records = records_from_files(annotations, images_dir, class_map, progress)
        data_desc = {"annotations": [str(a) for a in annotations], "images": str(images_dir)}
    elif settings is not None:
        records = records_from_run(settings, header, split, progress)
        data_desc = {"settings_split": split}
    else:
        raise RunError("give either -f SETTINGS (score on the run's split) or --annotations FILES --images DIR")
    torch_device = resolve_device(device)
    set_max_detections(model, max_detections)
    model.to(torch_device)
    metrics = evaluate(model, records, class_map, device=torch_device, batch_size=batch_size, progress=progress,
                       max_dets=max_detections)
    return {"model": str(model_path), "variant": header.get("extra", {}).get("variant"),
            "model_spec": spec.to_json(), "data": data_desc, "num_images": len(records),
            "evaluated": now(), "metrics": metrics}
