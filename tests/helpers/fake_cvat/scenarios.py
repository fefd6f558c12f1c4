"""Seeded tasks several test modules share (they work on the fake and on a real server alike)."""
from __future__ import annotations

from typing import Any

REVIEW = {"name": "review", "input_type": "select", "mutable": True,
          "values": ["n/a", "unreviewed", "accepted", "rejected"], "default_value": "n/a"}
OLD_REVIEW = {"name": "review", "input_type": "select", "mutable": True,
              "values": ["unreviewed", "accepted", "rejected"], "default_value": "unreviewed"}
SCORE = {"name": "score", "input_type": "text", "mutable": False, "values": [""], "default_value": ""}
FRAMES = [(f"video1frame{i:04d}.png", 64, 48) for i in range(3)]  # base names: real uploads keep no folders

# (frame, label, box, source, review value or None) and whether it is ground truth with
# include_auto = accepted / all / none
PROPOSAL_TASK = [
    (0, "weed", [1, 1, 10, 10], "manual", None, (True, True, True)),
    (0, "crop", [20, 20, 30, 30], "semi-auto", None, (True, True, True)),  # a person with an AI tool
    (1, "weed", [2, 2, 12, 12], "file", None, (True, True, True)),  # uploaded ground truth
    (0, "weed", [40, 5, 50, 15], "auto", "unreviewed", (False, True, False)),
    (1, "crop", [5, 20, 15, 30], "auto", "accepted", (True, True, False)),
    (1, "weed", [30, 30, 40, 40], "auto", "rejected", (False, True, False)),
    (2, "weed", [10, 10, 20, 20], "auto", None, (False, True, False)),  # no value: reads as the default
]
RULES = ("accepted", "all", "none")


def seed_proposals(server: Any, name: str, *, review: dict[str, Any] = REVIEW, frames: list = FRAMES) -> int:
    """A ground-truth task with human shapes and model proposals in every review state."""
    labels = [{"name": label, "attributes": [review, SCORE]} for label in ("weed", "crop")]
    task_id = server.add_task(name, labels, frames, status="completed")
    ids = {label["name"]: {a["name"]: a["id"] for a in label["attributes"]} for label in server.tasks[task_id].labels}
    shapes = []
    for frame, label, box, source, value, _truth in PROPOSAL_TASK:
        attributes = [] if value is None else [{"spec_id": ids[label]["review"], "value": value},
                                               {"spec_id": ids[label]["score"], "value": "0.9000"}]
        shapes.append({"type": "rectangle", "frame": frame, "label": label, "points": [float(v) for v in box],
                       "source": source, "attributes": attributes})
    server.add_shapes(task_id, shapes)
    return task_id


def expected_boxes(rule: str, frames: list = FRAMES) -> list[tuple[str, str, tuple[float, ...]]]:
    """(image base name, label, box) of the ground truth under ``include_auto = rule``, sorted."""
    column = RULES.index(rule)
    return sorted((frames[f][0].rsplit("/", 1)[-1], label, tuple(float(v) for v in box))
                  for f, label, box, _s, _v, truth in PROPOSAL_TASK if truth[column])


def loaded_boxes(records: Any) -> list[tuple[str, str, tuple[float, ...]]]:
    """The same form from loaded records (image named by the base name of its image id)."""
    return sorted((_frame_name(r), label, tuple(round(float(v), 3) for v in box))
                  for r in records for label, box in zip(r.labels, r.boxes))


def _frame_name(record: Any) -> str:
    return str(record.image_id).replace("\\", "/").rsplit("/", 1)[-1]
