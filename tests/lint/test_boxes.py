"""Box rules: degenerate, partly/fully outside the image, duplicate boxes."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers.lint_images import record, save, settings, texture
from obdb.lint import lint
from obdb.lint.boxes import iou_matrix


@pytest.fixture()
def image(tmp_path: Path) -> Path:
    return save(tmp_path / "img.png", texture(1, (100, 80)))


def run(image: Path, boxes, labels=None, **changes):  # type: ignore[no-untyped-def]
    rec = record(image, boxes, labels)
    result = lint([rec], None, settings(**changes), progress=False)
    (out,) = result.records
    return out, result.issues, rec


def test_good_boxes_pass_unchanged(image: Path) -> None:
    boxes = [[0, 0, 100, 80], [10, 10, 30, 40], [50, 20, 51, 21]]  # whole image, normal, 1 px (= min_box_size)
    out, issues, rec = run(image, boxes)
    assert issues == [] and out is rec


@pytest.mark.parametrize("box,why", [
    ([10, 10, 10, 40], "zero or negative"),         # zero width
    ([30, 10, 20, 40], "zero or negative"),         # x2 < x1
    ([10, 40, 30, 20], "zero or negative"),         # y2 < y1
    ([10, float("nan"), 30, 40], "non-finite"),
    ([10, 10, 10.5, 40], "below min_box_size"),     # 0.5 px wide
])
def test_degenerate_box_is_dropped(image: Path, box: list[float], why: str) -> None:
    out, issues, _ = run(image, [[5, 5, 50, 50], box], ["a", "b"])
    assert out.labels == ["a"] and out.boxes.tolist() == [[5, 5, 50, 50]]
    (issue,) = issues
    assert (issue.rule, issue.box, issue.action, issue.details["label"]) == ("degenerate_box", 1, "dropped box", "b")
    assert why in issue.message


def test_min_box_size_setting(image: Path) -> None:
    out, issues, _ = run(image, [[10, 10, 12, 40], [10, 10, 13, 40]], min_box_size=3)
    assert [i.box for i in issues] == [0] and out.boxes.tolist() == [[10, 10, 13, 40]]


def test_partly_outside_is_clipped_and_reported(image: Path) -> None:
    out, issues, rec = run(image, [[-5, -3, 20, 20], [90, 70, 130, 95]])
    assert out.boxes.tolist() == [[0, 0, 20, 20], [90, 70, 100, 80]]
    assert [(i.rule, i.action, i.box) for i in issues] == [("box_partly_outside", "clipped box", 0),
                                                           ("box_partly_outside", "clipped box", 1)]
    assert issues[0].details["clipped"] == [0, 0, 20, 20]
    assert rec.boxes.tolist() == [[-5, -3, 20, 20], [90, 70, 130, 95]]  # the input is not changed


def test_partly_outside_is_dropped_when_asked(image: Path) -> None:
    out, issues, _ = run(image, [[-5, -3, 20, 20], [10, 10, 30, 30]], fix_out_of_bounds="drop")
    assert out.boxes.tolist() == [[10, 10, 30, 30]]
    assert [(i.rule, i.action) for i in issues] == [("box_partly_outside", "dropped box")]


def test_float_noise_at_the_edge_is_clipped_silently(image: Path) -> None:
    out, issues, _ = run(image, [[10, 10, 100.0001, 80.0001]])
    assert issues == [] and out.boxes.tolist() == [[10, 10, 100, 80]]


@pytest.mark.parametrize("box", [[100, 10, 120, 30], [-30, 10, 0, 30], [10, 80, 30, 99], [200, 200, 220, 230]])
def test_fully_outside_is_dropped(image: Path, box: list[float]) -> None:
    out, issues, _ = run(image, [box, [10, 10, 30, 30]])
    assert out.boxes.tolist() == [[10, 10, 30, 30]]
    assert [(i.rule, i.action, i.box) for i in issues] == [("box_outside", "dropped box", 0)]


def test_clipped_sliver_below_min_size_is_dropped(image: Path) -> None:
    out, issues, _ = run(image, [[99.5, 10, 140, 30]])
    assert len(out.boxes) == 0
    assert [i.rule for i in issues] == ["box_partly_outside", "degenerate_box"]


def test_duplicate_boxes_keep_the_first(image: Path) -> None:
    boxes = [[10, 10, 50, 50], [10, 10, 50, 50.5], [60, 10, 90, 50], [10, 10, 50, 50]]
    out, issues, _ = run(image, boxes, ["a", "a", "a", "b"])
    # box 1 repeats box 0 (IoU 0.99); box 3 has the same place but another label: kept
    assert out.labels == ["a", "a", "b"] and out.boxes.tolist() == [[10, 10, 50, 50], [60, 10, 90, 50],
                                                                    [10, 10, 50, 50]]
    (issue,) = issues
    assert (issue.rule, issue.box, issue.details["duplicate_of"]) == ("duplicate_box", 1, 0)
    assert issue.details["iou"] == pytest.approx(40 * 40 / (40 * 40.5), abs=1e-4)


def test_overlapping_boxes_below_the_iou_threshold_stay(image: Path) -> None:
    boxes = [[10, 10, 50, 50], [12, 12, 52, 52]]  # IoU ~ 0.82
    out, issues, _ = run(image, boxes)
    assert issues == [] and len(out.boxes) == 2
    out, issues, _ = run(image, boxes, duplicate_box_iou=0.8)
    assert [i.rule for i in issues] == ["duplicate_box"] and len(out.boxes) == 1


def test_per_box_meta_stays_aligned(image: Path) -> None:
    rec = record(image, [[10, 10, 10, 40], [5, 5, 50, 50], [5, 5, 50, 50]], ["a", "b", "b"],
                 meta={"occluded": [True, False, True], "source_file": "x.xml"})
    (out,) = lint([rec], None, settings(), progress=False).records
    assert out.labels == ["b"] and out.meta == {"occluded": [False], "source_file": "x.xml"}


def test_iou_matrix() -> None:
    iou = iou_matrix(np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 0, 0]]))
    assert iou[0, 1] == pytest.approx(50 / 150) and iou[0, 2] == 0 and iou[3, 3] == 0 and iou[0, 0] == 1
