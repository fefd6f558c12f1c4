"""The two attributes every auto shape carries, so annotators can review model output in CVAT.

``review`` (select: ``n/a`` | ``unreviewed`` | ``accepted`` | ``rejected``, default ``n/a``) is
what an annotator sets; ``score`` (text, e.g. ``"0.8731"``) is the model's confidence. Score is a text
attribute because CVAT number attributes hold integers only, and a percentage would lose the
precision people sort by.

Tasks we create get these specs on every label. An existing task whose labels lack them gets them
added (a PATCH of the task's labels, done before any shape is written): adding an attribute spec
changes no shape, and without it the review flag could not be stored at all.

The default is the neutral ``n/a``, and obdb writes ``unreviewed`` explicitly on every shape it
proposes. CVAT shows (and, before 2.2x's successors, returns) an attribute's default for every
shape of the label that has no value, human shapes included: with ``unreviewed`` as the default,
annotators filtering on ``review == unreviewed`` got all the ground truth. Tasks that got the old
default are fixed by ``auto_annotate.py fix-review`` (:func:`obdb.annotate.fix_review.fix_review`).
"""
from __future__ import annotations

from typing import Any, Sequence

REVIEW = "review"
SCORE = "score"
NEUTRAL, UNREVIEWED, ACCEPTED, REJECTED = "n/a", "unreviewed", "accepted", "rejected"
REVIEW_VALUES = (NEUTRAL, UNREVIEWED, ACCEPTED, REJECTED)
REQUIRED_VALUES = (UNREVIEWED, ACCEPTED, REJECTED)  # what an existing review attribute must offer


def review_attribute_specs() -> list[dict[str, Any]]:
    """Attribute specs in CVAT's label-request form (``attributes`` of a label)."""
    return [
        {"name": REVIEW, "mutable": True, "input_type": "select", "default_value": NEUTRAL,
         "values": list(REVIEW_VALUES)},
        {"name": SCORE, "mutable": False, "input_type": "text", "default_value": "", "values": [""]},
    ]


def label_definitions(names: Sequence[str]) -> list[dict[str, Any]]:
    """Labels for a task that will receive auto shapes: each with the review attributes."""
    return [{"name": name, "attributes": review_attribute_specs()} for name in names]


def missing_review_attributes(label_spec: dict[str, Any]) -> list[dict[str, Any]]:
    """The review attribute specs a task label (as CVAT returns it) does not have yet.

    An attribute of the same name but another type is an error: writing our values into it would
    be rejected by CVAT or, worse, mean something else to the annotators."""
    have = {a.get("name"): a for a in label_spec.get("attributes") or []}
    missing = []
    for spec in review_attribute_specs():
        existing = have.get(spec["name"])
        if existing is None:
            missing.append(spec)
        elif existing.get("input_type") != spec["input_type"] or (
                spec["name"] == REVIEW and not set(REQUIRED_VALUES) <= set(existing.get("values") or [])):
            raise ValueError(f"label {label_spec.get('name')!r} already has an attribute {spec['name']!r} of "
                             f"another kind ({existing.get('input_type')}, values {existing.get('values')}); "
                             f"rename it in CVAT or annotate another task")
    return missing


def stale_review_spec(label_spec: dict[str, Any]) -> dict[str, Any] | None:
    """The label's review attribute as it should be (same id, neutral default, ``n/a`` among its
    values) when it still has another default (the old ``unreviewed``); else None."""
    for attr in label_spec.get("attributes") or []:
        if attr.get("name") != REVIEW or attr.get("input_type") != "select":
            continue
        values = [str(v) for v in attr.get("values") or []]
        if attr.get("default_value") == NEUTRAL and NEUTRAL in values:
            return None
        return {"id": int(attr["id"]), "name": REVIEW, "input_type": "select",
                "mutable": bool(attr.get("mutable", True)),
                "values": [NEUTRAL] + [v for v in values if v != NEUTRAL], "default_value": NEUTRAL}
    return None


def attribute_ids(label_spec: dict[str, Any]) -> dict[str, int]:
    """Attribute name -> spec id of a task label."""
    return {a["name"]: int(a["id"]) for a in label_spec.get("attributes") or [] if "id" in a}


def format_score(score: float) -> str:
    return f"{float(score):.4f}"


def review_state(shape: dict[str, Any], label_spec: dict[str, Any] | None) -> str | None:
    """The review value of a shape (``None`` when its label has no review attribute)."""
    if label_spec is None:
        return None
    spec_id = attribute_ids(label_spec).get(REVIEW)
    if spec_id is None:
        return None
    for attribute in shape.get("attributes") or []:
        if attribute.get("spec_id") == spec_id:
            return str(attribute.get("value"))
    return UNREVIEWED
