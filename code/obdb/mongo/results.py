"""Per-box evaluation results in MongoDB (collection ``evaluation_results``).

One document per TP / FP / FN box, carrying the image's ``task_name``, ``frame`` and ``img_path``
as ``annotation_data`` does, so results can be joined with the annotations they judge and "most
false positives first" is one aggregation. The caller passes an open ``pymongo`` database (see
:func:`obdb.mongo.connection.connect`); this module never opens connections itself.

A re-evaluation of the same model file (``model_id``: its content hash) on the same split
replaces the earlier documents: the new ones are inserted first under a fresh
``evaluation_id`` and only then are the older ones deleted, so readers never see an empty gap.
"""
from __future__ import annotations

import uuid
from typing import Any, Sequence

from ..records import ImageRecord

COLLECTION = "evaluation_results"
BATCH = 1000


def image_name(record: ImageRecord) -> str:
    """The image name as the annotations store it (``img_path``): sources build the image id
    as ``<task>/<image name>``; other records fall back to the file path."""
    prefix = f"{record.task}/"
    if record.task and record.image_id.startswith(prefix):
        return record.image_id[len(prefix):]
    return str(record.path)


def box_documents(rows: Sequence[dict[str, Any]], records: Sequence[ImageRecord], *, model_id: str, model: str,
                  variant: str | None, split: str, evaluated: str, evaluation_id: str) -> list[dict[str, Any]]:
    """The documents for ``rows`` (per-box rows of :func:`obdb.evaluation.match_records`)."""
    by_id = {r.image_id: r for r in records}
    documents = []
    for row in rows:
        record = by_id.get(row["image_id"])
        pred = [row.get(k) for k in ("pred_x1", "pred_y1", "pred_x2", "pred_y2")]
        gt = [row.get(k) for k in ("gt_x1", "gt_y1", "gt_x2", "gt_y2")]
        documents.append({
            "type": "evaluation", "evaluation_id": evaluation_id, "model_id": model_id, "model": model,
            "variant": variant, "split": split, "evaluated": evaluated, "image_id": row["image_id"],
            "task_name": record.task if record else None, "frame": record.frame if record else None,
            "img_path": image_name(record) if record else None,
            "kind": row["kind"], "object_class": row["label"], "score": row.get("score"), "iou": row.get("iou"),
            "pred_index": row.get("pred_index"), "gt_index": row.get("gt_index"),
            "other_class": row.get("other_label"),
            "pred_points": pred if pred[0] is not None else None, "gt_points": gt if gt[0] is not None else None})
    return documents


def store_box_results(db: Any, rows: Sequence[dict[str, Any]], records: Sequence[ImageRecord], *, model_id: str,
                      model: str, variant: str | None, split: str, evaluated: str) -> int:
    """Write the rows to ``db.evaluation_results`` (replacing this model's earlier results on
    ``split``) and return how many documents were written."""
    collection = db[COLLECTION]
    evaluation_id = uuid.uuid4().hex
    documents = box_documents(rows, records, model_id=model_id, model=model, variant=variant, split=split,
                              evaluated=evaluated, evaluation_id=evaluation_id)
    for start in range(0, len(documents), BATCH):
        collection.insert_many(documents[start:start + BATCH], ordered=False)
    collection.delete_many({"model_id": model_id, "split": split, "evaluation_id": {"$ne": evaluation_id}})
    return len(documents)
