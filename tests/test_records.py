"""Shared contracts and atomic writes."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest

from obdb.fileio import read_json, write_json, write_with
from obdb.records import ClassMap, ImageRecord, drop_unknown_labels, stable_hash


def test_class_map_reserves_background_and_round_trips() -> None:
    cm = ClassMap.from_names(["Background", "weed", "maize"])
    assert cm.names == ("weed", "maize") and cm.num_classes == 3
    assert cm.index("maize") == 2 and cm.name(0) == "Background" and cm.name(1) == "weed"
    assert ClassMap.from_json(cm.to_json()) == cm
    with pytest.raises(KeyError, match="'rye' is not in the class map"):
        cm.index("rye")
    with pytest.raises(ValueError, match="duplicate"):
        ClassMap(("a", "a"))
    with pytest.raises(ValueError, match="empty"):
        ClassMap.from_names(["Background"])


def test_record_checks_boxes_against_labels() -> None:
    with pytest.raises(ValueError, match="2 boxes but 1 labels"):
        ImageRecord("t/a.png", Path("a.png"), 10, 10, [[0, 0, 1, 1], [1, 1, 2, 2]], ["x"])
    record = ImageRecord("t/a.png", Path("a.png"), 10, 10, [], [], task="t")
    assert record.boxes.shape == (0, 4) and record.group == "t"


def test_drop_unknown_labels_counts_per_label() -> None:
    records = [ImageRecord("t/a.png", Path("a.png"), 10, 10, np.arange(12).reshape(3, 4), ["weed", "rye", "rye"]),
               ImageRecord("t/b.png", Path("b.png"), 10, 10, np.arange(4).reshape(1, 4), ["weed"])]
    kept, dropped = drop_unknown_labels(records, ClassMap(("weed",)))
    assert dropped == {"rye": 2}
    assert kept[0].labels == ["weed"] and kept[0].boxes.tolist() == [[0, 1, 2, 3]]
    assert kept[1] is records[1] and kept[1].labels == ["weed"]  # unchanged records are not copied
    assert records[0].labels == ["weed", "rye", "rye"] and len(records[0].boxes) == 3  # the input is not changed


def test_stable_hash_ignores_key_order() -> None:
    assert stable_hash({"a": 1, "b": [1, 2]}) == stable_hash({"b": [1, 2], "a": 1})
    assert stable_hash({"a": 1}) != stable_hash({"a": 2})


def test_atomic_write_keeps_old_file_when_writing_fails(tmp_path: Path) -> None:
    target = tmp_path / "out" / "metrics.json"
    write_json(target, {"ok": 1})
    assert read_json(target) == {"ok": 1}
    mode = stat.S_IMODE(os.stat(target).st_mode)
    assert mode & 0o044, "outputs must be readable by others (dashboards, other container users)"

    def crash(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        write_with(target, crash)
    assert read_json(target) == {"ok": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]
