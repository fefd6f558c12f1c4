"""Evaluation: run a detector over records (:func:`predict`) and score it with COCO box metrics
(:func:`coco_metrics`); :func:`evaluate` does both in one call."""
from obdb.evaluation.coco import coco_metrics
from obdb.evaluation.predict import evaluate, predict

__all__ = ["coco_metrics", "evaluate", "predict"]
