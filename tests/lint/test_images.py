"""Image rules: readable, not truncated, size limits, extension vs content, size mismatch, facts cache."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers.lint_images import corrupt_png_pixels, record, rules, save, settings, texture, truncate
from obdb.imageio import probe_image
from obdb.lint import lint
from obdb.lint.images import inspect_all


def only(result, image_id: str):  # type: ignore[no-untyped-def]
    return [i for i in result.issues if i.image_id == image_id]


def test_good_png_and_jpeg_pass(tmp_path: Path) -> None:
    recs = [record(save(tmp_path / "a.png", texture(1))), record(save(tmp_path / "b.jpg", texture(2), quality=90))]
    result = lint(recs, None, settings(), progress=False)
    assert result.issues == [] and [r.image_id for r in result.records] == ["t/a.png", "t/b.jpg"]
    assert result.report["ok"] is True


@pytest.mark.parametrize("name,fmt", [("cut.png", "PNG"), ("cut.jpg", "JPEG")])
def test_truncated_file_is_dropped(tmp_path: Path, name: str, fmt: str) -> None:
    good = record(save(tmp_path / "good.png", texture(1)))
    bad = record(truncate(save(tmp_path / name, texture(2), fmt)))
    result = lint([good, bad], None, settings(), progress=False)
    assert [r.image_id for r in result.records] == ["t/good.png"]
    (issue,) = result.issues
    assert (issue.rule, issue.severity, issue.action) == ("truncated", "error", "dropped image")
    assert issue.path == str(tmp_path / name) and "truncated" in issue.message.lower()


def test_pixel_corruption_with_valid_crcs_needs_the_full_decode(tmp_path: Path) -> None:
    path = corrupt_png_pixels(save(tmp_path / "crc_ok.png", texture(3)))
    assert probe_image(path) == (96, 72)  # the loader's cheap check lets it through
    result = lint([record(path)], None, settings(), progress=False)
    assert rules(result.issues) == ["truncated"] and result.records == []
    # without the decode check the dHash still needs pixels and finds it; with neither, it passes
    assert rules(lint([record(path)], None, settings(check_decode=False), progress=False).issues) == ["truncated"]
    unchecked = lint([record(path)], None, settings(check_decode=False, near_duplicate_hamming=None), progress=False)
    assert unchecked.issues == [] and len(unchecked.records) == 1


def test_empty_missing_and_non_image_files_are_unreadable(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    recs = [record(tmp_path / "empty.png"), record(tmp_path / "text.jpg"), record(tmp_path / "gone.png"),
            record(save(tmp_path / "ok.png", texture(1)))]
    result = lint(recs, None, settings(), progress=False)
    assert [r.image_id for r in result.records] == ["t/ok.png"]
    reasons = {Path(i.path).name: (i.rule, i.message) for i in result.issues}
    assert reasons["empty.png"] == ("unreadable", "empty file (0 bytes)")
    assert reasons["text.jpg"][0] == "unreadable" and "not an image" in reasons["text.jpg"][1]
    assert reasons["gone.png"][0] == "unreadable" and "cannot read file" in reasons["gone.png"][1]


def test_png_named_jpg_is_kept_with_a_note(tmp_path: Path) -> None:
    named_wrong = record(save(tmp_path / "really_png.jpg", texture(1), "PNG"))
    named_right = record(save(tmp_path / "png.png", texture(2)))
    result = lint([named_wrong, named_right], None, settings(), progress=False)
    assert len(result.records) == 2
    (issue,) = result.issues
    assert (issue.rule, issue.severity, issue.action, issue.image_id) == ("extension_mismatch", "info", "kept",
                                                                          "t/really_png.jpg")
    assert "PNG" in issue.message


def test_size_limits(tmp_path: Path) -> None:
    small = record(save(tmp_path / "small.png", texture(1, (40, 30))))
    exact = record(save(tmp_path / "exact.png", texture(2, (64, 64))))
    large = record(save(tmp_path / "large.png", texture(3, (200, 100))))
    result = lint([small, exact, large], None, settings(min_image_size=64, max_image_size=128), progress=False)
    assert [r.image_id for r in result.records] == ["t/exact.png"]
    found = {i.image_id: (i.rule, i.action) for i in result.issues}
    assert found == {"t/small.png": ("too_small", "dropped image"), "t/large.png": ("too_large", "dropped image")}
    # no limits set: every size passes
    assert lint([small, exact, large], None, settings(), progress=False).issues == []


def test_size_limits_must_be_a_range() -> None:
    with pytest.raises(ValueError, match="max_image_size .* smaller than min_image_size"):
        settings(min_image_size=100, max_image_size=50)


def test_record_size_is_corrected_to_the_file(tmp_path: Path) -> None:
    path = save(tmp_path / "a.png", texture(1, (96, 72)))
    wrong = record(path, [[10, 10, 90, 70]], size=(72, 96))
    result = lint([wrong], None, settings(), progress=False)
    (fixed,) = result.records
    assert (fixed.width, fixed.height) == (96, 72) and (wrong.width, wrong.height) == (72, 96)
    assert rules(result.issues) == ["size_mismatch"]  # the box fits the real size: nothing clipped
    assert lint([record(path)], None, settings(), progress=False).issues == []


def test_facts_cache_is_used_and_notices_changed_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = save(tmp_path / "a.png", texture(1)), save(tmp_path / "b.png", texture(2))
    cache = tmp_path / "out" / "image_facts.json"
    first = inspect_all([a, b, a], cache_file=cache, progress=False)
    assert set(first) == {str(a), str(b)} and cache.is_file()
    import obdb.lint.images as images

    def must_not_decode(path: Path, **_: object) -> None:
        raise AssertionError(f"{path} was decoded again")

    with monkeypatch.context() as patch:
        patch.setattr(images, "inspect_image", must_not_decode)
        assert inspect_all([a, b], cache_file=cache, progress=False) == first
    truncate(b)  # changed size: a cache miss, inspected again
    again = inspect_all([a, b], cache_file=cache, progress=False)
    assert again[str(a)] == first[str(a)] and again[str(b)].problem == "truncated"
    # a different kind of check (no decode) does not reuse the decoded facts
    assert inspect_all([b], decode=False, dhash=False, cache_file=cache, progress=False)[str(b)].problem is None
