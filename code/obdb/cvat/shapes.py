"""Shapes by *name* (label and attribute names), turned into CVAT's id-based form per task.

Modes describe what they want to write with label and attribute names, because ids belong to one
task and some do not exist yet when the plan is made (a task still to be created, review
attributes still to be added). :func:`resolve_shapes` maps names to the ids of the task at hand
right before writing.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Protocol, Sequence

from .dedupe import AUTO
from .errors import AnnotateError
from .review import REVIEW, SCORE, UNREVIEWED, format_score

class Detections(Protocol):
    """What :func:`auto_shapes` reads from a model's detections on one image (e.g.
    :class:`obdb.annotate.function.Detections`): xyxy pixel boxes, scores and label names."""

    boxes: Any
    scores: Any
    labels: list[str]


# {"type","frame","label","points","occluded","z_order","rotation","source","group","attributes": {name: value}}
NamedShape = dict[str, Any]


def named_shape(kind: str, frame: int, label: str, points: Sequence[float], *, source: str = "manual",
                occluded: bool = False, z_order: int = 0, rotation: float = 0.0, group: int = 0,
                attributes: dict[str, str] | None = None, score: float | None = None) -> NamedShape:
    shape = {"type": kind, "frame": int(frame), "label": label, "points": [round(float(p), 2) for p in points],
             "occluded": bool(occluded), "z_order": int(z_order), "rotation": float(rotation),
             "source": source, "group": int(group), "attributes": dict(attributes or {})}
    if score is not None:  # CVAT's own confidence field (filters in the UI); the attribute shows it
        shape["score"] = round(float(score), 4)
    return shape


def auto_shapes(frame: int, detections: Detections) -> list[NamedShape]:
    """Rectangles for a frame's detections, marked ``source=auto`` with review and score."""
    return [named_shape("rectangle", frame, label, box, source=AUTO,
                        attributes={REVIEW: UNREVIEWED, SCORE: format_score(score)}, score=float(score))
            for box, score, label in zip(detections.boxes, detections.scores, detections.labels)]


def resolve_shapes(named: Iterable[NamedShape], label_specs: Sequence[dict[str, Any]]
                   ) -> tuple[list[dict[str, Any]], Counter[str]]:
    """CVAT shape dicts for a task, and a count of what could not be mapped (by label name, and
    ``"<label>.<attribute>"`` for attribute values whose spec the label lacks: those values are
    left out, the shape is kept)."""
    labels = {spec["name"]: spec for spec in label_specs}
    shapes, unmapped = [], Counter()
    for shape in named:
        spec = labels.get(shape["label"])
        if spec is None:
            unmapped[shape["label"]] += 1
            continue
        ids = {a["name"]: a["id"] for a in spec.get("attributes") or []}
        attributes = []
        for name, value in shape["attributes"].items():
            if name in ids:
                attributes.append({"spec_id": int(ids[name]), "value": str(value)})
            else:
                unmapped[f"{shape['label']}.{name}"] += 1
        resolved = {"type": shape["type"], "frame": shape["frame"], "label_id": int(spec["id"]),
                    "points": list(shape["points"]), "occluded": shape["occluded"], "source": shape["source"],
                    "attributes": attributes, "group": shape["group"], "z_order": shape["z_order"],
                    "rotation": shape["rotation"]}
        if "score" in shape:
            resolved["score"] = shape["score"]
        shapes.append(resolved)
    return shapes, unmapped


def frame_lookup(frames: Iterable[tuple[int, str]], what: str) -> dict[str, int]:
    """Frame index by file base name. Base names, because CVAT may keep a relative path where
    we have an absolute one; two frames with one base name cannot be told apart, so that is an
    error naming them."""
    lookup: dict[str, int] = {}
    for index, name in frames:
        base = Path(name).name
        if base in lookup:
            raise AnnotateError(f"{what}: two images share the file name {base!r}; rename one so frames can be "
                             f"matched to files")
        lookup[base] = index
    return lookup
