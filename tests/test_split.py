"""Train/validation splits: group integrity, determinism, file splits and the JSON manifest."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from obdb.records import ImageRecord
from obdb.split import TRAIN, VAL, SplitError, SplitManifest, file_split, group_split, make_split, random_split

# Unequal group sizes, so "roughly the val fraction" is not trivially exact.
GROUP_SIZES = {"vidA": 6, "vidB": 3, "vidC": 9, "vidD": 4, "vidE": 5, "vidF": 2, "vidG": 7, "vidH": 4}


def _records(sizes: dict[str, int] = GROUP_SIZES) -> list[ImageRecord]:
    records = []
    for group, size in sizes.items():
        for frame in range(size):
            name = f"{group}_frame{frame:04d}.png"
            records.append(ImageRecord(f"{group}/{name}", Path("/data/images") / name, 96, 96,
                                       [], [], group=group, task=group, frame=frame))
    return records


def _groups_by_side(manifest: SplitManifest, records: list[ImageRecord]) -> dict[str, set[str]]:
    sides: dict[str, set[str]] = {}
    for record in records:
        sides.setdefault(record.group, set()).add(manifest.assignment[record.image_id])
    return sides


# --- group split -----------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(8))
@pytest.mark.parametrize("val_fraction", [0.1, 0.25, 0.5])
def test_group_split_keeps_groups_whole_and_both_sides_non_empty(seed: int, val_fraction: float) -> None:
    records = _records()
    manifest = group_split(records, val_fraction, seed)
    assert set(manifest.assignment) == {r.image_id for r in records}
    sides = _groups_by_side(manifest, records)
    assert all(len(s) == 1 for s in sides.values()), {g: s for g, s in sides.items() if len(s) > 1}
    val_groups = {g for g, s in sides.items() if s == {VAL}}
    train_groups = {g for g, s in sides.items() if s == {TRAIN}}
    assert len(val_groups) >= 1 and len(train_groups) >= 1
    assert sorted(val_groups) == manifest.params["val_groups"]
    assert manifest.groups == {r.image_id: r.group for r in records}
    # roughly respected: within one (largest) group of the target
    counts = manifest.counts()
    assert counts[TRAIN] + counts[VAL] == len(records)
    assert abs(counts[VAL] - val_fraction * len(records)) <= max(GROUP_SIZES.values())


def test_group_split_val_fraction_exact_for_equal_groups() -> None:
    records = _records({f"g{i}": 10 for i in range(10)})
    for seed in range(5):
        assert group_split(records, 0.2, seed).counts() == {TRAIN: 80, VAL: 20}
        assert group_split(records, 0.3, seed).counts() == {TRAIN: 70, VAL: 30}


def test_group_split_two_groups_and_large_fraction_still_leaves_train() -> None:
    records = _records({"a": 3, "b": 3})
    for seed in range(4):
        counts = group_split(records, 0.9, seed).counts()
        assert counts == {TRAIN: 3, VAL: 3}


def test_group_split_same_seed_is_identical_and_seeds_differ(tmp_path: Path) -> None:
    records = _records()
    first, second = group_split(records, 0.25, 3), group_split(list(reversed(records)), 0.25, 3)
    assert first.assignment == second.assignment
    assert first.hash == second.hash
    assert first.to_json()["counts"] == second.to_json()["counts"]
    again = group_split(records, 0.25, 3)
    assert again == first  # same input and seed: the whole manifest, not just the assignment
    assert first.save(tmp_path / "a").read_text() == again.save(tmp_path / "b").read_text()
    hashes = {group_split(records, 0.25, seed).hash for seed in range(10)}
    assert len(hashes) > 1


def test_group_split_single_group_fails_with_hint() -> None:
    records = _records({"only": 5})
    with pytest.raises(SplitError, match="at least 2 groups") as info:
        group_split(records, 0.2, 0)
    message = str(info.value)
    assert "'only'" in message and "group_regex" in message and "random" in message
    with pytest.raises(SplitError, match="at least 2 groups"):
        make_split(records, "group", val_fraction=0.2, seed=0)


# --- random split ----------------------------------------------------------------------------
def test_random_split_counts_and_determinism() -> None:
    records = _records()  # 40 images
    manifest = random_split(records, 0.25, 1)
    assert manifest.method == "random"
    assert manifest.counts() == {TRAIN: 30, VAL: 10}
    assert random_split(list(reversed(records)), 0.25, 1).assignment == manifest.assignment
    assert len({random_split(records, 0.25, s).hash for s in range(6)}) > 1
    # a tiny fraction still yields one val image, a huge one still leaves one train image
    assert random_split(records, 0.001, 0).counts()[VAL] == 1
    assert random_split(records, 0.999, 0).counts()[TRAIN] == 1
    assert make_split(records, "random", val_fraction=0.25, seed=1).assignment == manifest.assignment


def test_random_split_needs_two_images() -> None:
    with pytest.raises(SplitError, match="at least 2 images"):
        random_split(_records({"a": 1}), 0.5, 0)


def test_make_split_rejects_unknown_method_and_file_without_path() -> None:
    with pytest.raises(SplitError, match="unknown split method"):
        make_split(_records(), "every_tenth", val_fraction=0.2, seed=0)
    with pytest.raises(SplitError, match="needs split.file"):
        make_split(_records(), "file", val_fraction=0.2, seed=0)


# --- manifest --------------------------------------------------------------------------------
def test_manifest_save_is_content_addressed_and_round_trips(tmp_path: Path) -> None:
    manifest = group_split(_records(), 0.25, 0)
    path = manifest.save(tmp_path / "splits")
    assert path.name == f"{manifest.hash}.json"
    data = json.loads(path.read_text())
    assert data["format"] == "obdb-split" and data["hash"] == manifest.hash
    assert data["counts"] == manifest.counts()
    mtime = path.stat().st_mtime_ns
    assert manifest.save(tmp_path / "splits") == path
    assert path.stat().st_mtime_ns == mtime  # the same split is written once
    loaded = SplitManifest.load(path)
    assert loaded == manifest
    assert loaded.hash == manifest.hash
    # a different split gets a different file next to it
    other = group_split(_records(), 0.25, next(s for s in range(1, 20)
                                                if group_split(_records(), 0.25, s).hash != manifest.hash))
    assert other.save(tmp_path / "splits") != path
    assert len(list((tmp_path / "splits").glob("*.json"))) == 2


def test_hash_depends_on_assignment_not_on_seed() -> None:
    base = SplitManifest("group", 1, {"a": TRAIN, "b": VAL})
    assert SplitManifest("group", 2, {"b": VAL, "a": TRAIN}).hash == base.hash
    assert SplitManifest("group", 1, {"a": VAL, "b": TRAIN}).hash != base.hash


@pytest.mark.parametrize("data", [
    [],
    "a split",
    {"assignment": {"a": "train"}},
    {"format": "coco", "assignment": {"a": "train"}},
])
def test_from_json_rejects_non_manifests(data: object) -> None:
    with pytest.raises(SplitError, match="not an obdb split manifest") as info:
        SplitManifest.from_json(data, "thing.json")  # type: ignore[arg-type]
    assert "thing.json" in str(info.value)


@pytest.mark.parametrize("assignment", [None, ["a"], {"a": "test"}, {"a": "train", "b": "Val"}])
def test_from_json_rejects_bad_assignment(assignment: object) -> None:
    with pytest.raises(SplitError, match="'assignment'"):
        SplitManifest.from_json({"format": "obdb-split", "assignment": assignment}, "x.json")


# --- file split ------------------------------------------------------------------------------
def test_file_split_from_our_json_manifest(tmp_path: Path) -> None:
    records = _records()
    original = group_split(records, 0.25, 5)
    path = original.save(tmp_path)
    manifest = file_split(records, path)
    assert manifest.method == "file"
    assert manifest.assignment == original.assignment
    assert manifest.hash != "" and manifest.params == {"file": str(path)}
    assert make_split(records, "file", val_fraction=0.2, seed=9, file=path).assignment == original.assignment


@pytest.mark.parametrize("key", ["id", "name"])
def test_file_split_from_csv_by_id_or_file_name(tmp_path: Path, key: str) -> None:
    records = _records()
    wanted = {r.image_id: (VAL if r.group in ("vidB", "vidE") else TRAIN) for r in records}
    lines = ["image,split"]
    for record in records:
        lines.append(f"{record.image_id if key == 'id' else record.path.name},{wanted[record.image_id]}")
    path = tmp_path / "split.csv"
    path.write_text("\n".join(lines) + "\n\n")  # a trailing blank line is fine
    manifest = file_split(records, path)
    assert manifest.assignment == wanted
    assert manifest.counts() == {TRAIN: 32, VAL: 8}


def test_file_split_csv_without_header_and_with_spaces(tmp_path: Path) -> None:
    records = _records({"a": 2, "b": 2})
    path = tmp_path / "split.txt"
    path.write_text("".join(f"{r.path.name} , {'val' if r.group == 'a' else 'train'}\n" for r in records))
    # "name , val": the image column is stripped too
    assert file_split(records, path).counts() == {TRAIN: 2, VAL: 2}


def test_file_split_missing_images_are_an_error_naming_the_file(tmp_path: Path) -> None:
    records = _records()
    path = tmp_path / "partial.csv"
    path.write_text("image,split\n" + "".join(f"{r.image_id},val\n" for r in records[:-2]))
    with pytest.raises(SplitError) as info:
        file_split(records, path)
    message = str(info.value)
    assert "partial.csv" in message and "2 image(s)" in message and records[-1].image_id in message


def test_file_split_listed_images_absent_from_the_data_are_an_error(tmp_path: Path) -> None:
    records = _records({"a": 2, "b": 2})
    path = tmp_path / "stale.csv"
    rows = [f"{r.image_id},{'val' if r.group == 'a' else 'train'}" for r in records]
    path.write_text("\n".join([*rows, "gone/frame9999.png,train"]) + "\n")
    with pytest.raises(SplitError) as info:
        file_split(records, path)
    assert "stale.csv" in str(info.value) and "gone/frame9999.png" in str(info.value)


@pytest.mark.parametrize("row", ["img.png,test", "img.png", "img.png,VAL"])
def test_file_split_bad_csv_row_names_file_and_line(tmp_path: Path, row: str) -> None:
    records = _records({"a": 2, "b": 2})
    path = tmp_path / "bad.csv"
    path.write_text(f"image,split\n{records[0].image_id},train\n{row}\n")
    with pytest.raises(SplitError, match=r"bad\.csv, line 3"):
        file_split(records, path)


def test_file_split_all_train_is_an_error(tmp_path: Path) -> None:
    records = _records({"a": 2, "b": 2})
    path = tmp_path / "all_train.csv"
    path.write_text("".join(f"{r.image_id},train\n" for r in records))
    with pytest.raises(SplitError, match="all_train.csv.*at least one image in train and one in val"):
        file_split(records, path)


def test_file_split_missing_file_and_bad_json(tmp_path: Path) -> None:
    records = _records({"a": 2, "b": 2})
    with pytest.raises(SplitError, match="nowhere.csv: file not found"):
        file_split(records, tmp_path / "nowhere.csv")
    broken = tmp_path / "broken.json"
    broken.write_text('{"format": "obdb-split",\n "assignment": }')
    with pytest.raises(SplitError, match="broken.json: invalid JSON at line 2"):
        file_split(records, broken)
    coco = tmp_path / "coco.json"
    coco.write_text(json.dumps({"images": [], "annotations": []}))
    with pytest.raises(SplitError, match="coco.json: not an obdb split manifest"):
        file_split(records, coco)


def test_group_split_on_tiny_data_keeps_videos_whole(tiny_data: Path) -> None:
    from obdb.sources.local import load_local

    records = load_local(tiny_data / "annotations", images_dir=tiny_data / "images", progress=False).records
    manifest = make_split(records, "group", val_fraction=0.25, seed=0)
    assert manifest.counts() == {TRAIN: 9, VAL: 3}
    val_videos = Counter(r.group for r in records if manifest.assignment[r.image_id] == VAL)
    assert len(val_videos) == 1 and list(val_videos.values()) == [3]


# --- k-fold manifests --------------------------------------------------------------------------
def test_manifest_folds_round_trip_and_old_manifests_keep_their_hash(tmp_path: Path) -> None:
    plain = SplitManifest("tsne", 0, {"a": TRAIN, "b": VAL})
    assert "folds" not in plain.to_json()  # consumers of old manifests see nothing new
    with_folds = SplitManifest("tsne", 0, {"a": TRAIN, "b": VAL}, folds={"a": 0, "b": 1})
    assert with_folds.hash != plain.hash
    assert SplitManifest("tsne", 0, {"a": TRAIN, "b": VAL}, folds={"a": 1, "b": 0}).hash != with_folds.hash
    loaded = SplitManifest.load(with_folds.save(tmp_path))
    assert loaded == with_folds and loaded.folds == {"a": 0, "b": 1}
    # a file split of a k-fold manifest takes its train/val assignment
    records = _records({"a": 2, "b": 2})
    kfold = SplitManifest("tsne", 0, {r.image_id: VAL if r.group == "a" else TRAIN for r in records},
                          folds={r.image_id: 0 if r.group == "a" else 1 for r in records})
    assert file_split(records, kfold.save(tmp_path)).assignment == kfold.assignment


@pytest.mark.parametrize("folds", [["a"], {"a": "0", "b": 1}, {"a": -1, "b": 0}, {"a": 0}])
def test_from_json_rejects_bad_folds(folds: object) -> None:
    data = {"format": "obdb-split", "assignment": {"a": "train", "b": "val"}, "folds": folds}
    with pytest.raises(SplitError, match="'folds'"):
        SplitManifest.from_json(data, "x.json")
