"""A model as a ``cvat_sdk.auto_annotation`` detection function: the SDK's half.

The SDK's protocol is tiny: a ``spec`` (the labels the function can output, each with the review
and score attributes) and ``detect(context, image)`` returning ``rectangle(...)`` shapes.
:class:`obdb.annotate.function.ModelDetectionFunction` runs the model and builds both from here,
so it works with ``cvat_sdk.auto_annotation.annotate_task`` and ``cvat-cli task auto-annotate``
while cvat-sdk stays inside this package.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

from cvat_sdk import models as cvat_models
from cvat_sdk.auto_annotation import (
    DetectionFunctionSpec,
    label_spec,
    rectangle,
    select_attribute_spec,
    text_attribute_spec,
)

from .review import NEUTRAL, REVIEW, REVIEW_VALUES, SCORE, UNREVIEWED, format_score

REVIEW_SPEC_ID, SCORE_SPEC_ID = 1, 2  # attribute ids inside the function spec (the SDK remaps them)


def detection_spec(label_names: Sequence[str]) -> DetectionFunctionSpec:
    """The spec of a function that outputs rectangles of ``label_names`` (ids 1, 2, ...: the class
    map's indices), each with the review and score attributes. The SDK validates it on construction."""
    return DetectionFunctionSpec(labels=[
        label_spec(name, index, type="rectangle", attributes=[
            select_attribute_spec(REVIEW, REVIEW_SPEC_ID, list(REVIEW_VALUES), default_value=NEUTRAL),
            text_attribute_spec(SCORE, SCORE_SPEC_ID),
        ])
        for index, name in enumerate(label_names, start=1)
    ])


def detection_shapes(boxes: Any, scores: Any, labels: Sequence[str],
                     label_id: Callable[[str], int]) -> list[cvat_models.LabeledShapeRequest]:
    """One frame's detections as the SDK's rectangles, marked unreviewed with their score."""
    return [
        rectangle(label_id(label), [float(v) for v in box], attributes=[
            cvat_models.AttributeValRequest(spec_id=REVIEW_SPEC_ID, value=UNREVIEWED),
            cvat_models.AttributeValRequest(spec_id=SCORE_SPEC_ID, value=format_score(score)),
        ])
        for box, score, label in zip(boxes, scores, labels)
    ]
