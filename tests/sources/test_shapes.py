"""The one shape → box rule (obdb.shapes.shape_box), kind by kind, with hand-computed boxes."""
from __future__ import annotations

import pytest

from obdb.shapes import shape_box


@pytest.mark.parametrize("kind, points, rotation, expected", [
    ("rectangle", [10, 20, 30, 24], 0, (10, 20, 30, 24)),
    ("rectangle", [10, 20, 30, 24], 90, (18, 12, 22, 32)),  # 20 x 4 about (20, 22), turned upright
    ("ellipse", [30, 20, 35, 17], 0, (25, 17, 35, 23)),  # cx, cy, cx + rx, cy - ry: rx 5, ry 3
    ("ellipse", [30, 20, 35, 17], 90, (27, 15, 33, 25)),  # turned: rx and ry swap
    ("mask", [4, 2, 9, 10, 5, 12, 8], 0, (10, 5, 13, 9)),  # RLE, then left, top, right, bottom (inclusive)
    ("polygon", [5, 5, 40, 8, 20, 30], 0, (5, 5, 40, 30)),
    ("points", [3, 4, 10, 20, 7, 7], 0, (3, 4, 10, 20)),
])
def test_every_box_kind(kind, points, rotation, expected) -> None:
    assert shape_box(kind, points, rotation) == pytest.approx(expected)


def test_skipped_kinds_and_bad_point_lists() -> None:
    assert shape_box("polygon", [1, 1, 5, 5], polygons="skip") is None
    assert shape_box("points", [1, 1], polygons="skip") is None
    assert shape_box("rectangle", [1, 1, 5, 5], polygons="skip") == (1, 1, 5, 5)  # boxes stay boxes
    for kind in ("polyline", "cuboid", "skeleton", "crowd"):
        assert shape_box(kind, [1, 1, 5, 5]) is None
    for kind, points in (("rectangle", [1, 2, 3]), ("ellipse", [1, 2]), ("polygon", [1, 2, 3]), ("mask", [1, 2])):
        with pytest.raises(ValueError, match=kind):
            shape_box(kind, points)
