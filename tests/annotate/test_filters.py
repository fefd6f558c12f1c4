"""Candidate filtering (score and IoU), duplicate detection, review attributes and the plan table."""
from __future__ import annotations

import numpy as np
import pytest

from obdb.annotate.candidates import box_iou, frame_boxes, missing_candidates, shape_box
from obdb.annotate.dedupe import same_shape, split_new
from obdb.annotate.function import Detections
from obdb.annotate.plan import TaskPlan, format_plans
from obdb.annotate.review import attribute_ids, missing_review_attributes, review_state


def _rect(frame: int, label: int, points: list[float], **extra) -> dict:
    return {"type": "rectangle", "frame": frame, "label_id": label, "points": points, **extra}


def test_box_iou_known_values() -> None:
    a = np.array([[0, 0, 10, 10]])
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 8]])
    np.testing.assert_allclose(box_iou(a, b), [[1.0, 50 / 150, 0.0, 0.0]])
    assert box_iou(a, np.zeros((0, 4))).shape == (1, 0)


def test_missing_candidates_score_and_iou() -> None:
    gt = np.array([[0, 0, 10, 10], [100, 100, 120, 120]], dtype=float)
    dets = Detections(
        boxes=np.array([[0, 0, 10, 10],      # on a GT box (IoU 1)
                        [5, 0, 15, 10],      # IoU 1/3 with the first
                        [50, 50, 60, 60],    # free
                        [50, 50, 60, 60]],   # free but low score
                       np.float32),
        scores=np.array([0.9, 0.9, 0.8, 0.3], np.float32), labels=["a", "a", "b", "b"])
    kept = missing_candidates(dets, gt, min_score=0.5, max_iou=0.3)
    np.testing.assert_allclose(kept.boxes, [[50, 50, 60, 60]])
    kept = missing_candidates(dets, gt, min_score=0.5, max_iou=0.4)  # 1/3 < 0.4: now also a candidate
    assert len(kept) == 2 and kept.scores.tolist() == pytest.approx([0.9, 0.8])
    assert len(missing_candidates(dets, np.zeros((0, 4)), min_score=0.5, max_iou=0.3)) == 3


def test_shape_boxes_of_every_kind() -> None:
    assert shape_box(_rect(0, 1, [10, 20, 5, 8])) == (5, 8, 10, 20)
    assert shape_box({"type": "polygon", "points": [1, 5, 9, 2, 4, 7]}) == (1, 2, 9, 7)
    assert shape_box({"type": "points", "points": [3, 4]}) == (3, 4, 3, 4)
    assert shape_box({"type": "ellipse", "points": [10, 10, 14, 7]}) == (6, 7, 14, 13)
    assert shape_box({"type": "mask", "points": [1, 2, 3]}) is None
    boxes = frame_boxes([_rect(2, 1, [0, 0, 1, 1]), _rect(2, 1, [1, 1, 2, 2]), {"type": "mask", "frame": 3}])
    assert list(boxes) == [2] and boxes[2].shape == (2, 4)


def test_duplicates_within_half_a_pixel() -> None:
    existing = [_rect(0, 1, [10, 10, 20, 20], source="manual"), _rect(1, 1, [10, 10, 20, 20])]
    assert same_shape(existing[0], _rect(0, 1, [10.4, 9.6, 20.5, 20]))
    assert not same_shape(existing[0], _rect(0, 1, [10.6, 10, 20, 20]))
    assert not same_shape(existing[0], _rect(0, 2, [10, 10, 20, 20]))   # other label
    assert not same_shape(existing[0], _rect(1, 1, [10, 10, 20, 20]) | {"frame": 2})
    assert not same_shape(existing[0], {"type": "polygon", "frame": 0, "label_id": 1, "points": [10, 10, 20, 20]})
    proposed = [_rect(0, 1, [10.2, 10, 20, 20]), _rect(0, 1, [30, 30, 40, 40]), _rect(0, 1, [30.1, 30, 40, 40])]
    new, dups = split_new(existing, proposed)
    assert new == [proposed[1]] and dups == [proposed[0], proposed[2]]  # the repeat within proposed too


def test_review_attributes() -> None:
    bare = {"name": "red", "attributes": [{"id": 4, "name": "colour", "input_type": "text", "values": []}]}
    assert [a["name"] for a in missing_review_attributes(bare)] == ["review", "score"]
    full = {"name": "red", "attributes": [
        {"id": 5, "name": "review", "input_type": "select", "values": ["unreviewed", "accepted", "rejected"]},
        {"id": 6, "name": "score", "input_type": "text", "values": [""]}]}
    assert missing_review_attributes(full) == []
    assert attribute_ids(full) == {"review": 5, "score": 6}
    assert review_state({"attributes": [{"spec_id": 5, "value": "accepted"}]}, full) == "accepted"
    assert review_state({"attributes": []}, full) == "unreviewed"
    assert review_state({"attributes": []}, bare) is None
    clash = {"name": "red", "attributes": [{"id": 1, "name": "review", "input_type": "checkbox", "values": []}]}
    with pytest.raises(ValueError, match="another kind"):
        missing_review_attributes(clash)


def test_plan_table() -> None:
    plans = [TaskPlan("new task", create=True, frames=3, added=5),
             TaskPlan("old", task_id=7, frames=2, kept=4, added=1, duplicates=2, notes=["adds review attributes"])]
    text = format_plans(plans, dry_run=True)
    assert text.splitlines()[0].startswith("DRY RUN")
    assert "new task" in text and " new " in text and "old: adds review attributes" in text
    total = [line for line in text.splitlines() if line.startswith("total")][0].split()
    assert total == ["total", "5", "4", "6", "2", "0", "0"]


def test_fix_review_finds_unreviewed_on_human_shapes_tags_and_track_keyframes():
    from obdb.annotate.fix_review import human_unreviewed

    un, ok = {"spec_id": 5, "value": "unreviewed"}, {"spec_id": 6, "value": "0.9"}
    data = {"shapes": [{"id": 1, "source": "manual", "attributes": [un, ok]},
                       {"id": 2, "source": "auto", "attributes": [un]},  # a proposal keeps its value
                       {"id": 3, "source": "semi-auto", "attributes": [{"spec_id": 5, "value": "accepted"}]}],
            "tags": [{"id": 4, "source": "manual", "attributes": [un]}],
            "tracks": [{"id": 7, "source": "manual", "attributes": [],
                        "shapes": [{"frame": 0, "attributes": [un]}, {"frame": 3, "attributes": []}]}]}
    found = human_unreviewed(data, {5})
    assert [s["id"] for s in found["shapes"]] == [1] and found["shapes"][0]["attributes"] == [
        {"spec_id": 5, "value": "n/a"}, ok]
    assert [t["id"] for t in found["tags"]] == [4] and found["tags"][0]["attributes"][0]["value"] == "n/a"
    assert found["tracks"][0]["shapes"][0]["attributes"] == [{"spec_id": 5, "value": "n/a"}]
    assert data["shapes"][0]["attributes"][0]["value"] == "unreviewed"  # the input is not changed
