"""Labels missing from the class map: boxes dropped, counted per label, listed per image."""
from __future__ import annotations

from pathlib import Path

from helpers.lint_images import record, save, settings, texture
from obdb.lint import lint
from obdb.records import ClassMap


def test_unknown_labels_are_dropped_and_counted(tmp_path: Path) -> None:
    a = record(save(tmp_path / "a.png", texture(1)), [[1, 1, 20, 20], [30, 30, 50, 50], [5, 5, 9, 9]],
               ["weed", "wed", "crop"])
    b = record(save(tmp_path / "b.png", texture(2)), [[1, 1, 20, 20], [30, 30, 50, 50]], ["wed", "wed"])
    result = lint([a, b], ClassMap(("weed", "crop")), settings(), progress=False)
    assert [r.labels for r in result.records] == [["weed", "crop"], []]  # b stays, as a frame without objects
    assert result.records[0].boxes.tolist() == [[1, 1, 20, 20], [5, 5, 9, 9]]
    assert [(i.image_id, i.details["label"], i.details["boxes"], i.action) for i in result.issues] == [
        ("t/a.png", "wed", 1, "dropped box"), ("t/b.png", "wed", 2, "dropped box")]
    assert result.report["unknown_labels"] == {"wed": 3}
    assert result.report["counts"]["boxes_dropped"] == 3


def test_known_labels_and_a_map_from_the_data_pass(tmp_path: Path) -> None:
    a = record(save(tmp_path / "a.png", texture(1)), [[1, 1, 20, 20], [30, 30, 50, 50]], ["weed", "crop"])
    assert lint([a], ClassMap(("crop", "weed")), settings(), progress=False).issues == []
    assert lint([a], None, settings(), progress=False).issues == []  # no fixed map: nothing is unknown
