"""DetectionDataset / collate / make_loader: tensor contract, augmentation, caching, determinism."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from obdb.dataset import DetectionDataset, collate, decode_rgb, make_loader
from obdb.records import ClassMap, ImageRecord

CLASSES = ClassMap(("car", "person"))
H, W = 24, 32


def _image(path: Path, seed: int, fmt: str = "PNG") -> np.ndarray:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(H, W, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return pixels


@pytest.fixture()
def records(tmp_path: Path) -> list[ImageRecord]:
    out = []
    specs = [
        ([[1, 2, 11, 12], [20, 5, 30, 20]], ["car", "person"]),
        ([], []),  # negative image
        ([[0, 0, 32, 24]], ["person"]),
        ([[4, 4, 8, 9]], ["car"]),
    ]
    for i, (boxes, labels) in enumerate(specs):
        path = tmp_path / f"img{i}.png"
        _image(path, seed=i)
        out.append(ImageRecord(f"img{i}", path, W, H, np.array(boxes, dtype=np.float32), labels))
    return out


def test_item_shapes_dtypes_and_values(records: list[ImageRecord]) -> None:
    ds = DetectionDataset(records, CLASSES, train=False)
    assert len(ds) == 4
    image, target = ds[0]
    assert image.dtype == torch.float32 and image.shape == (3, H, W)
    assert 0.0 <= image.min() and image.max() <= 1.0
    expected = np.asarray(Image.open(records[0].path).convert("RGB"), dtype=np.float32) / 255.0
    torch.testing.assert_close(image, torch.from_numpy(expected).permute(2, 0, 1))
    assert target["boxes"].dtype == torch.float32 and target["boxes"].shape == (2, 4)
    torch.testing.assert_close(target["boxes"], torch.tensor([[1, 2, 11, 12], [20, 5, 30, 20]], dtype=torch.float32))
    assert target["labels"].dtype == torch.int64
    assert target["labels"].tolist() == [1, 2]
    assert target["image_id"].dtype == torch.int64 and target["image_id"].ndim == 0
    assert ds[2][1]["image_id"].item() == 2


def test_negative_image_has_empty_boxes(records: list[ImageRecord]) -> None:
    for train in (False, True):
        _, target = DetectionDataset(records, CLASSES, train=train, hflip_prob=1.0)[1]
        assert target["boxes"].shape == (0, 4) and target["boxes"].dtype == torch.float32
        assert target["labels"].shape == (0,) and target["labels"].dtype == torch.int64


def test_eval_mode_is_deterministic(records: list[ImageRecord]) -> None:
    ds = DetectionDataset(records, CLASSES, train=False, hflip_prob=1.0)
    a, ta = ds[0]
    b, tb = ds[0]
    assert torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"])


def test_hflip_flips_pixels_and_boxes(records: list[ImageRecord]) -> None:
    plain = DetectionDataset(records, CLASSES, train=False)
    flipped = DetectionDataset(records, CLASSES, train=True, hflip_prob=1.0, photometric=False)
    image, target = plain[0]
    f_image, f_target = flipped[0]
    assert torch.equal(f_image, image.flip(-1))
    assert torch.equal(f_image[:, 3, 0], image[:, 3, W - 1])  # left column came from the right
    torch.testing.assert_close(f_target["boxes"], torch.tensor([[W - 11, 2, W - 1, 12], [W - 30, 5, W - 20, 20]],
                                                               dtype=torch.float32))
    assert torch.equal(f_target["labels"], target["labels"])
    # The pixels under a box move with it: crop of original box == mirrored crop of flipped box.
    x1, y1, x2, y2 = (int(v) for v in target["boxes"][0])
    fx1, _, fx2, _ = (int(v) for v in f_target["boxes"][0])
    assert torch.equal(image[:, y1:y2, x1:x2].flip(-1), f_image[:, y1:y2, fx1:fx2])
    # The record itself is untouched.
    np.testing.assert_array_equal(records[0].boxes[0], [1, 2, 11, 12])


def test_no_flip_when_prob_zero_and_photometric_stays_in_range(records: list[ImageRecord]) -> None:
    torch.manual_seed(0)
    plain = DetectionDataset(records, CLASSES, train=False)
    jitter = DetectionDataset(records, CLASSES, train=True, hflip_prob=0.0, photometric=True)
    changed = False
    for _ in range(5):
        image, target = jitter[0]
        assert image.shape == (3, H, W) and image.dtype == torch.float32
        assert 0.0 <= image.min() and image.max() <= 1.0
        torch.testing.assert_close(target["boxes"], plain[0][1]["boxes"])
        changed |= not torch.equal(image, plain[0][0])
    assert changed


def test_unknown_label_raises_naming_record_and_label(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    _image(path, 0)
    record = ImageRecord("rec-7", path, W, H, np.array([[0, 0, 5, 5]], np.float32), ["truck"])
    with pytest.raises(KeyError, match=r"rec-7.*truck"):
        DetectionDataset([record], CLASSES, train=False)


def test_degenerate_box_raises(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    _image(path, 0)
    record = ImageRecord("rec-8", path, W, H, np.array([[5, 0, 5, 5]], np.float32), ["car"])
    with pytest.raises(ValueError, match="rec-8"):
        DetectionDataset([record], CLASSES, train=False)


def test_cache_returns_identical_tensors(records: list[ImageRecord]) -> None:
    cached = DetectionDataset(records, CLASSES, train=False, photometric=False, cache_images=True)
    plain = DetectionDataset(records, CLASSES, train=False)
    first = cached[0][0]
    records[0].path.unlink()  # second read must come from the cache
    assert torch.equal(cached[0][0], first)
    assert torch.equal(cached[2][0], plain[2][0])
    assert set(cached._cache) == {0, 2}
    # Flipping a cached image must not corrupt the cache.
    cached.train, cached.hflip_prob = True, 1.0
    assert torch.equal(cached[0][0], first.flip(-1))
    cached.train = False
    assert torch.equal(cached[0][0], first)


def test_decode_falls_back_to_pil_and_converts_to_rgb(tmp_path: Path) -> None:
    pixels = _image(tmp_path / "a.tiff", 3, fmt="TIFF")
    torch.testing.assert_close(decode_rgb(tmp_path / "a.tiff"), torch.from_numpy(pixels).permute(2, 0, 1))
    Image.fromarray(pixels[:, :, 0]).save(tmp_path / "g.png")  # grayscale → 3 channels
    assert decode_rgb(tmp_path / "g.png").shape == (3, H, W)


def test_collate_keeps_lists(records: list[ImageRecord]) -> None:
    ds = DetectionDataset(records, CLASSES, train=False)
    images, targets = collate([ds[0], ds[1]])
    assert isinstance(images, list) and isinstance(targets, list)
    assert len(images) == len(targets) == 2
    assert targets[1]["boxes"].shape == (0, 4)


def _epoch(loader: torch.utils.data.DataLoader) -> tuple[list[int], list[torch.Tensor]]:
    ids, images = [], []
    for batch_images, batch_targets in loader:
        ids += [int(t["image_id"]) for t in batch_targets]
        images += batch_images
    return ids, images


def test_loader_is_deterministic_with_seed(records: list[ImageRecord]) -> None:
    ds = DetectionDataset(records * 4, CLASSES, train=False)
    a = make_loader(ds, batch_size=3, shuffle=True, workers=0, seed=7)
    b = make_loader(ds, batch_size=3, shuffle=True, workers=0, seed=7)
    ids_a, ids_b = _epoch(a)[0], _epoch(b)[0]
    assert ids_a == ids_b and sorted(ids_a) == list(range(16)) and ids_a != list(range(16))
    assert _epoch(a)[0] == _epoch(b)[0]  # second epochs agree too
    assert _epoch(make_loader(ds, batch_size=3, shuffle=True, workers=0, seed=8))[0] != ids_a
    ordered = make_loader(ds, batch_size=3, shuffle=False, workers=0)
    assert _epoch(ordered)[0] == list(range(16))


def test_loader_augmentation_is_deterministic_with_seed_and_workers(records: list[ImageRecord]) -> None:
    ds = DetectionDataset(records * 2, CLASSES, train=True, hflip_prob=0.5)
    a = make_loader(ds, batch_size=2, shuffle=True, workers=1, seed=3)
    b = make_loader(ds, batch_size=2, shuffle=True, workers=1, seed=3)
    assert a.persistent_workers
    ids_a, images_a = _epoch(a)
    ids_b, images_b = _epoch(b)
    assert ids_a == ids_b
    assert all(torch.equal(x, y) for x, y in zip(images_a, images_b))


# --- images at the network's input size and the shared image cache --------------------------
from torchvision.models.detection.transform import GeneralizedRCNNTransform  # noqa: E402

from obdb.dataset import EarlySubsetSampler  # noqa: E402
from obdb import image_cache  # noqa: E402
from obdb.image_cache import INDEX, ImageCache, network_size  # noqa: E402

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


@pytest.mark.parametrize(("height", "width", "min_size", "max_size"), [
    (400, 400, 192, 192), (2472, 2299, 800, 1333), (1080, 1920, 800, 1333), (1080, 1920, 600, 800),
    (401, 333, 193, 511), (37, 1000, 64, 128), (100, 50, 300, 500),
])
def test_network_size_is_the_detector_size_and_a_fixed_point(height: int, width: int, min_size: int,
                                                             max_size: int) -> None:
    transform = GeneralizedRCNNTransform(min_size, max_size, MEAN, STD).eval()
    size = network_size(height, width, min_size, max_size)
    full, _ = transform([torch.rand(3, height, width)])
    assert full.image_sizes[0] == size  # what the model makes of the full image
    already = torch.rand(3, *size)
    out, _ = transform([already])
    assert out.image_sizes[0] == size  # a pre-resized image is not resized a second time
    normalized = (already - torch.tensor(MEAN)[:, None, None]) / torch.tensor(STD)[:, None, None]
    torch.testing.assert_close(out.tensors[0, :, :size[0], :size[1]], normalized)


def _big_records(tmp_path: Path, count: int = 3) -> list[ImageRecord]:
    out = []
    tmp_path.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        path = tmp_path / f"big{i}.png"
        pixels = np.random.default_rng(10 + i).integers(0, 256, size=(60, 80 + 8 * i, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path)
        out.append(ImageRecord(f"big{i}", path, 80 + 8 * i, 60, np.array([[8, 6, 40, 30], [50, 20, 78, 58]],
                                                                           np.float32), ["car", "person"]))
    return out


def test_resized_items_match_what_the_model_would_see(tmp_path: Path) -> None:
    records = _big_records(tmp_path)
    full = DetectionDataset(records, CLASSES, train=False)
    small = DetectionDataset(records, CLASSES, train=False, size=(30, 60))
    transform = GeneralizedRCNNTransform(30, 60, MEAN, STD).eval()
    for index in range(len(records)):
        image, target = full[index]
        resized, resized_target = small[index]
        expected, expected_targets = transform([image], [dict(target)])
        got, got_targets = transform([resized], [dict(resized_target)])
        assert got.image_sizes == expected.image_sizes
        height, width = got.image_sizes[0]
        # the same pixels up to uint8 rounding (half a grey level, after normalisation)
        assert (got.tensors - expected.tensors)[..., :height, :width].abs().max() <= 0.5 / 255 / min(STD) + 1e-5
        torch.testing.assert_close(got_targets[0]["boxes"], expected_targets[0]["boxes"], atol=1e-3, rtol=0)
        sx, sy = small.scale(index)
        back = resized_target["boxes"] / torch.tensor([sx, sy, sx, sy])
        torch.testing.assert_close(back, target["boxes"])  # the scaling is exactly undone


@pytest.mark.parametrize("on_disk", [True, False])
def test_image_cache_returns_identical_tensors_to_the_uncached_path(tmp_path: Path, on_disk: bool) -> None:
    records = _big_records(tmp_path / "images")
    cache = ImageCache.build(records, 30, 60, root=tmp_path / "cache" if on_disk else None, progress=False)
    uncached = DetectionDataset(records, CLASSES, train=False, size=(30, 60))
    cached = DetectionDataset(records, CLASSES, train=False, image_cache=cache)
    for index in range(len(records)):
        (a, ta), (b, tb) = uncached[index], cached[index]
        assert a.shape[-2:] == network_size(60, 80 + 8 * index, 30, 60)
        assert torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"])
        assert torch.equal(ta["labels"], tb["labels"])
        assert cached.scale(index) == uncached.scale(index)
        assert cached.original_size(index) == (60, 80 + 8 * index)
    # augmentation draws the same flips and jitter on both paths
    for dataset in (uncached, cached):
        dataset.train, dataset.hflip_prob = True, 0.5
    torch.manual_seed(5)
    first = [uncached[i] for i in range(3) for _ in range(2)]
    torch.manual_seed(5)
    second = [cached[i] for i in range(3) for _ in range(2)]
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1]["boxes"], b[1]["boxes"]) for a, b in zip(first, second))
    # an item is a copy: changing it leaves the cache as it was
    image = cache.image(0)
    image.zero_()
    assert cache.image(0).any()


def test_image_cache_is_reused_and_rebuilt_when_an_image_changes(tmp_path: Path) -> None:
    records = _big_records(tmp_path / "images")
    root = tmp_path / "cache"
    first = ImageCache.build(records, 30, 60, root=root, progress=False)
    assert first.folder is not None and (first.folder / INDEX).is_file()
    assert first.__getstate__()["_array"] is None  # loader workers reopen the memory map, no copy
    stamp = (first.folder / INDEX).stat().st_mtime_ns
    again = ImageCache.build(records, 30, 60, root=root, progress=False)
    assert again.folder == first.folder and (again.folder / INDEX).stat().st_mtime_ns == stamp
    assert torch.equal(again.image(2), first.image(2))
    Image.fromarray(np.zeros((60, 96, 3), np.uint8)).save(records[2].path)  # the file changes
    changed = ImageCache.build(records, 30, 60, root=root, progress=False)
    assert changed.folder != first.folder and not changed.image(2).any()
    assert ImageCache.build(records, 40, 60, root=root, progress=False).folder not in (first.folder, changed.folder)
    assert not list(root.glob(".*tmp"))


def test_image_cache_build_leaves_nothing_when_it_fails(tmp_path: Path) -> None:
    records = _big_records(tmp_path / "images")
    records[1].path.write_bytes(b"not an image")
    with pytest.raises(Exception):
        ImageCache.build(records, 30, 60, root=tmp_path / "cache", progress=False)
    assert list((tmp_path / "cache").iterdir()) == []


def test_early_subset_sampler_uses_a_fresh_subset_then_everything() -> None:
    sampler = EarlySubsetSampler(10, epochs=2, fraction=0.3, seed=4)
    seen = []
    for epoch in range(3):
        sampler.set_epoch(epoch)
        indices = list(sampler)
        assert len(indices) == len(sampler) == (3 if epoch < 2 else 10)
        assert len(set(indices)) == len(indices) and set(indices) <= set(range(10))
        seen.append(indices)
    assert seen[0] != seen[1]
    sampler.set_epoch(1)
    assert list(sampler) == seen[1]  # the order depends on seed and epoch alone (resume)
    with pytest.raises(ValueError, match="fraction"):
        EarlySubsetSampler(10, epochs=1, fraction=0.0, seed=0)


def test_image_cache_build_removes_folders_of_killed_builds_only(tmp_path: Path) -> None:
    records = _big_records(tmp_path / "images")
    root = tmp_path / "cache"
    root.mkdir()
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    host = image_cache._builder_tag().rsplit(".", 1)[0]
    killed = root / f".abc123.{host}.{int(done.stdout)}.x1y2.tmp"  # its process has exited
    running = root / f".abc123.{host}.{os.getpid()}.z3w4.tmp"  # a live build (this process)
    elsewhere = root / ".abc123.otherhost.1.q5r6.tmp"  # another host's, recent: may still be running
    stale = root / ".abc123.old7.tmp"  # a name from before the host/pid tag, two days old
    for folder in (killed, running, elsewhere, stale):
        folder.mkdir()
        (folder / image_cache.PIXELS).write_bytes(b"\0" * 10)
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(stale, (two_days_ago, two_days_ago))
    cache = ImageCache.build(records, 30, 60, root=root, progress=False)
    assert cache.folder is not None and cache.folder.is_dir()
    assert sorted(p.name for p in root.glob(".*.tmp")) == sorted([running.name, elsewhere.name])
