"""Score a saved model (``test_model.py``): COCO metrics plus the evaluation report.

The images come either from the run that trained the model (its settings plus the split manifest
recorded in the model file, so "val" is exactly the validation set it was selected on) or from
any annotation files given directly. With an output folder the report of
:mod:`obdb.evaluation.report` is written there; when the run's data came from MongoDB the per-box
results also go to its ``evaluation_results`` collection.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from .dataset import DetectionDataset, make_loader
from .evaluation import coco_evaluation, match_records, predict
from .evaluation.report import ReportOptions, write_report
from .fileio import file_sha256, read_json, write_json
from .fullhd import rows_to_frame
from .models import load_model
from .outputs import now
from .prepare import RunError, keep_class_map, prepare
from .records import ClassMap, ImageRecord, records_by_split
from .settings import Settings
from .sources.local import load_local
from .split import SplitManifest
from .training.config import image_cache_dir
from .training.fit import FitData, resolve_device, set_max_detections, to_record_pixels

log = logging.getLogger(__name__)


def records_from_run(settings: Settings, header: dict[str, Any], split: str, progress: bool) -> list[ImageRecord]:
    """The images the model was trained and selected on: the runner's preparation (its data set
    checks, without rewriting its lint report; the model's class map) and the model's own split,
    the manifest it names, recomputed (not saved) only when the file is gone."""
    extra = header.get("extra", {})
    manifest_path = Path(settings.save_dir) / extra.get("split_file", "")
    manifest = SplitManifest.load(manifest_path) if extra.get("split_file") and manifest_path.is_file() else None
    prepared = prepare(settings, progress=progress, write=False, class_map=ClassMap.from_json(header["class_map"]),
                       split=split != "all", manifest=manifest)
    if split == "all":
        return prepared.records
    assert prepared.split is not None
    if manifest is None and extra.get("split_hash") and prepared.split.hash != extra["split_hash"]:
        log.warning("split recomputed from the settings (%s) differs from the model's (%s): the data changed",
                    prepared.split.hash, extra["split_hash"])
    missing = [r.image_id for r in prepared.records if r.image_id not in prepared.split.assignment]
    if missing:
        log.warning("%d image(s) are not in the model's split (new data?) and are left out", len(missing))
    records = records_by_split(prepared.records, prepared.split.assignment, split)
    if not records:
        raise RunError(f"the {split} split holds no images")
    return records


def records_from_files(annotations: Sequence[Path], images_dir: Path, class_map: ClassMap,
                       progress: bool) -> list[ImageRecord]:
    loaded = keep_class_map(load_local(list(annotations), images_dir=images_dir, progress=progress), class_map)
    if not loaded.records:
        raise RunError("no usable images in the given annotation files")
    return loaded.records


def score(model_path: Path, *, settings: Settings | None, split: str = "val", annotations: Sequence[Path] = (),
          images_dir: Path | None = None, device: str = "auto", batch_size: int | None = None,
          max_detections: int | None = None, progress: bool = True, out: Path | None = None,
          report: ReportOptions | None = None, store_results: bool = True) -> dict[str, Any]:
    """COCO metrics of the model at ``model_path`` (the returned dict, as ``metrics.json`` holds it).

    On a run's split (``settings``) the model is scored exactly as the run scored it: the same
    images at the same network input size (through the run's image cache when it used one), the
    run's evaluation batch size and ``train.max_detections``, so the numbers equal the run's
    ``metrics.json`` to the last digit. ``batch_size``/``max_detections`` override that (None: the
    run's values, or 2 and 100 for annotation files).

    With ``out``, the report folder is written there (``report`` options; defaults when None) and
    the result gains ``report`` (file names). With ``store_results`` and a run whose
    ``data.source`` is ``mongo``, the per-box rows are also written to MongoDB."""
    model, spec, class_map, header = load_model(model_path)
    if annotations:
        if images_dir is None:
            raise RunError("--annotations needs --images (the folder the annotation files' image names are in)")
        records = records_from_files(annotations, images_dir, class_map, progress)
        data_desc: dict[str, Any] = {"annotations": [str(a) for a in annotations], "images": str(images_dir)}
    elif settings is not None:
        records = records_from_run(settings, header, split, progress)
        data_desc = {"settings_split": split, "source": settings.data.source}
    else:
        raise RunError("give either -f SETTINGS (score on the run's split) or --annotations FILES --images DIR")
    if settings is not None and not annotations:  # as the run evaluated: its sizes, cache, batch and detections
        data = FitData([], records, class_map, cache_images=settings.train.cache_images,
                       cache_dir=image_cache_dir(settings), progress=progress)
        data.use_size(spec.min_size, spec.max_size)
        dataset = data.val_set
        batch_size = batch_size or settings.train.eval_batch_size or settings.train.batch_size
        max_detections = max_detections or settings.train.max_detections
    else:
        dataset = DetectionDataset(records, class_map, train=False)
        batch_size, max_detections = batch_size or 2, max_detections or 100
    torch_device = resolve_device(device)
    set_max_detections(model, max_detections)
    model.to(torch_device)
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False, workers=0)
    predictions = to_record_pixels(predict(model, loader, torch_device, progress=progress, desc="evaluate"), dataset)
    metrics, curves = coco_evaluation(records, predictions, class_map, max_dets=max_detections)
    result: dict[str, Any] = {"model": str(model_path), "variant": header.get("extra", {}).get("variant"),
                              "model_spec": spec.to_json(), "data": data_desc, "num_images": len(records),
                              "max_detections": max_detections, "batch_size": batch_size,
                              "evaluated": now(), "metrics": metrics}
    if out is None:
        return result
    options = report or ReportOptions()
    matching = match_records(records, predictions, class_map, iou_threshold=options.iou_threshold,
                             score_threshold=options.score_threshold)
    rows_to_frame(matching.boxes, records)  # full_hd: per-box results in frame pixels (obdb.fullhd)
    files = write_report(Path(out), result, records, matching, curves, options)
    result["report"] = {name: str(path) for name, path in files.items()}
    if store_results and settings is not None and not annotations and settings.data.source == "mongo":
        result["stored"] = store_in_mongo(settings, model_path, split, result, records, matching.boxes)
        write_json(files["metrics"], {**read_json(files["metrics"]), "stored": result["stored"]})
    return result


def store_in_mongo(settings: Settings, model_path: Path, split: str, result: dict[str, Any],
                   records: Sequence[ImageRecord], rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Per-box rows to the run's MongoDB (``evaluation_results``), replacing this model's earlier
    results for the same split."""
    from .mongo.results import store_box_results
    from .mongo.connection import MongoConfigError, MongoUnavailable, connect

    try:
        db = connect(settings.data.mongo)
    except (MongoUnavailable, MongoConfigError) as err:
        raise RunError(f"the report is written ({result['report']['report']}), but the per-box results could "
                       f"not be stored in MongoDB: {err} (rerun with --store-results false to skip)") from err
    model_id = file_sha256(model_path)[:16]
    written = store_box_results(db, rows, records, model_id=model_id, model=str(model_path),
                                variant=result.get("variant"), split=split, evaluated=result["evaluated"])
    log.info("%d box result(s) written to MongoDB collection evaluation_results (model_id %s)", written, model_id)
    return {"collection": "evaluation_results", "model_id": model_id, "documents": written}
