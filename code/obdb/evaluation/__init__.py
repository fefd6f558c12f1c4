"""Evaluation: run a detector over records (:func:`predict`) and score it with COCO box metrics
(:func:`coco_metrics`); :func:`evaluate` does both in one call. :func:`match_records` gives the
box-level TP/FP/FN tables and the confusion matrix behind the report (:mod:`.report`)."""
from obdb.evaluation.coco import coco_evaluation, coco_metrics
from obdb.evaluation.matching import MatchResult, box_iou, match_records
from obdb.evaluation.predict import evaluate, predict

__all__ = ["MatchResult", "box_iou", "coco_evaluation", "coco_metrics", "evaluate", "match_records", "predict"]
