"""Exact duplicates (file content) and near duplicates (dHash) of images."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from helpers.lint_images import record, save, settings, texture
from obdb.lint import lint


def brightened_jpeg(path: Path, seed: int) -> Path:
    """The picture of ``texture(seed)`` a little brighter and re-encoded as JPEG."""
    return save(path, np.clip(texture(seed).astype(int) + 25, 0, 255).astype(np.uint8), quality=80)


def ids(records) -> list[str]:  # type: ignore[no-untyped-def]
    return [r.image_id for r in records]


def test_exact_duplicate_keeps_the_first_copy(tmp_path: Path) -> None:
    original = save(tmp_path / "a.png", texture(1))
    copy = tmp_path / "sub" / "copy.png"
    copy.parent.mkdir()
    shutil.copyfile(original, copy)
    other = save(tmp_path / "b.png", texture(2))
    recs = [record(original, group="v1"), record(other, group="v1"), record(copy, group="v2")]
    result = lint(recs, None, settings(), progress=False)
    assert ids(result.records) == ["t/a.png", "t/b.png"]
    (issue,) = result.issues
    assert (issue.rule, issue.severity, issue.action, issue.path) == ("exact_duplicate", "warn", "dropped image",
                                                                      str(copy))
    assert issue.details["duplicate_of"] == "t/a.png" and issue.details["cross_group"] is True
    assert str(original) in issue.message


def test_same_file_in_two_tasks_is_a_duplicate(tmp_path: Path) -> None:
    path = save(tmp_path / "a.png", texture(1))
    recs = [record(path, image_id="task1/a.png"), record(path, image_id="task2/a.png")]
    result = lint(recs, None, settings(), progress=False)
    assert ids(result.records) == ["task1/a.png"]
    assert [(i.rule, i.image_id) for i in result.issues] == [("exact_duplicate", "task2/a.png")]
    assert "the same file as task1/a.png" in result.issues[0].message


def test_different_images_are_not_duplicates(tmp_path: Path) -> None:
    recs = [record(save(tmp_path / f"{s}.png", texture(s))) for s in range(1, 6)]
    result = lint(recs, None, settings(), progress=False)
    assert result.issues == [] and len(result.records) == 5


def test_near_duplicate_is_reported_and_kept(tmp_path: Path) -> None:
    first = record(save(tmp_path / "a.png", texture(1)), group="v1")
    near = record(brightened_jpeg(tmp_path / "a_bright.jpg", 1), group="v1")
    other = record(save(tmp_path / "b.png", texture(2)), group="v1")
    result = lint([first, near, other], None, settings(), progress=False)
    assert ids(result.records) == ["t/a.png", "t/a_bright.jpg", "t/b.png"]
    (issue,) = result.issues
    assert (issue.rule, issue.severity, issue.action, issue.image_id) == ("near_duplicate", "info", "kept",
                                                                          "t/a_bright.jpg")
    assert issue.details["near"] == "t/a.png" and issue.details["bits"] <= 4 and issue.details["cross_group"] is False


def test_near_duplicate_across_groups_is_a_warning(tmp_path: Path) -> None:
    recs = [record(save(tmp_path / "a.png", texture(1)), group="v1"),
            record(brightened_jpeg(tmp_path / "a_bright.jpg", 1), group="v2")]
    (issue,) = lint(recs, None, settings(), progress=False).issues
    assert issue.severity == "warn" and issue.details["cross_group"] is True and "another group (v1)" in issue.message


def test_near_duplicates_dropped_when_asked(tmp_path: Path) -> None:
    recs = [record(save(tmp_path / "a.png", texture(1))), record(brightened_jpeg(tmp_path / "a1.jpg", 1)),
            record(save(tmp_path / "b.png", texture(2))), record(brightened_jpeg(tmp_path / "b1.jpg", 2))]
    result = lint(recs, None, settings(drop_near_duplicates=True), progress=False)
    assert ids(result.records) == ["t/a.png", "t/b.png"]
    assert [(i.image_id, i.action, i.details["near"]) for i in result.issues] == [
        ("t/a1.jpg", "dropped image", "t/a.png"), ("t/b1.jpg", "dropped image", "t/b.png")]


def test_near_duplicate_threshold_and_off_switch(tmp_path: Path) -> None:
    from obdb.lint.images import inspect_image
    from obdb.split.leakage import hamming

    a, b = save(tmp_path / "a.png", texture(0)), brightened_jpeg(tmp_path / "a1.jpg", 0)
    bits = int(hamming(*(np.frombuffer(bytes.fromhex(inspect_image(p).dhash), np.uint8) for p in (a, b))))
    assert 0 < bits <= 4  # this copy differs in a few bits: the threshold decides
    recs = [record(a), record(b)]
    assert lint(recs, None, settings(near_duplicate_hamming=bits - 1), progress=False).issues == []
    assert [i.rule for i in lint(recs, None, settings(near_duplicate_hamming=bits), progress=False).issues] == [
        "near_duplicate"]
    assert lint(recs, None, settings(near_duplicate_hamming=None), progress=False).issues == []
