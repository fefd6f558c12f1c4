"""Images decode as CVAT shows them, in every stage: EXIF orientation applied, 16-bit and other
pixel modes converted to 8-bit RGB by their real range (never clipped to white), and the same
size and pixels from the probe, the decoders, the image cache, the dataset, lint and
auto_annotate (issue 20, point 3)."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from obdb.annotate.function import ModelDetectionFunction
from obdb.dataset import DetectionDataset
from obdb.image_cache import ImageCache, decode_rgb, image_size_on_disk
from obdb.imageio import UnsupportedImage, image_size, open_rgb, probe_image, to_rgb8
from obdb.lint.images import check_images, inspect_image
from obdb.records import ClassMap, ImageRecord
from obdb.settings.schema import LintSettings
from obdb.split.cache import FeatureCache, compute_features
from obdb.split.features import DHashExtractor

CLASSES = ClassMap(("red", "blue"))
STORED_W, STORED_H = 48, 32  # as the file stores the pixels; orientations 6 and 8 show it 32 x 48


def rotated_jpeg(path: Path, orientation: int) -> np.ndarray:
    """A JPEG stored 48x32, black with a white block in its stored top-left corner, tagged with
    ``orientation``; returns the pixels as CVAT shows them (PIL's own transpose of the file)."""
    pixels = np.zeros((STORED_H, STORED_W, 3), dtype=np.uint8)
    pixels[0:10, 0:14] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(path, format="JPEG", quality=95, exif=exif.tobytes())
    with Image.open(path) as raw:
        return np.asarray(ImageOps.exif_transpose(raw).convert("RGB"))


def sixteen_bit_png(path: Path, size: tuple[int, int] = (40, 30)) -> np.ndarray:
    """A 16-bit greyscale PNG with known values; returns the 8-bit grey each must become."""
    w, h = size
    values = np.zeros((h, w), dtype=np.uint16)
    values[:, : w // 4] = 0
    values[:, w // 4: w // 2] = 1000
    values[:, w // 2: 3 * w // 4] = 32768
    values[:, 3 * w // 4:] = 65535
    Image.fromarray(values).save(path)
    with Image.open(path) as check:
        assert check.mode.startswith("I"), check.mode  # really a 16-bit image for PIL
    return np.rint(values.astype(np.float64) * 255 / 65535).astype(np.uint8)


def white_block(image: np.ndarray) -> tuple[int, int, int, int]:
    ys, xs = np.nonzero(image[..., 0] > 127)
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


@pytest.mark.parametrize("orientation", [6, 8])
def test_exif_rotated_jpeg_has_the_shown_size_and_pixels_everywhere(tmp_path: Path, orientation: int) -> None:
    path = tmp_path / f"o{orientation}.jpg"
    shown = rotated_jpeg(path, orientation)
    assert shown.shape[:2] == (STORED_W, STORED_H)  # upright: 32 wide, 48 high
    expected_block = white_block(shown)
    assert expected_block != white_block(np.asarray(Image.open(path).convert("RGB")))  # rotation matters

    assert probe_image(path) == (STORED_H, STORED_W)
    assert image_size(path) == (STORED_H, STORED_W)
    assert image_size_on_disk(path) == (STORED_W, STORED_H)  # (height, width)
    assert np.array_equal(np.asarray(open_rgb(path)), shown)
    fast = decode_rgb(path).permute(1, 2, 0).numpy()  # torchvision's decoder
    assert fast.shape == shown.shape and np.abs(fast.astype(int) - shown.astype(int)).mean() < 3
    assert white_block(fast) == expected_block

    record = ImageRecord("a", path, STORED_H, STORED_W, np.array([[1, 1, 5, 5]]), ["red"])
    for root in (None, tmp_path / "cache"):
        cache = ImageCache.build([record], STORED_H, 10_000, root=root, progress=False)
        assert cache.original_size(0) == (STORED_W, STORED_H)
        assert white_block(cache.image(0).permute(1, 2, 0).numpy()) == expected_block
    image, _target = DetectionDataset([record], CLASSES, train=False)[0]
    assert tuple(image.shape) == (3, STORED_W, STORED_H)
    assert white_block((image.permute(1, 2, 0).numpy() * 255).astype(np.uint8)) == expected_block

    facts = inspect_image(path)
    assert (facts.width, facts.height) == (STORED_H, STORED_W) and facts.problem is None
    kept, issues = check_images([record], {str(path): facts}, LintSettings())
    assert kept and not [i for i in issues if i.rule == "size_mismatch"]


class BrightBox(torch.nn.Module):
    """A 'detector' that finds the white block: its box is where channel 0 is bright."""

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        out = []
        for image in images:
            ys, xs = torch.nonzero(image[0] > 0.5, as_tuple=True)
            box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], dtype=torch.float32)
            out.append({"boxes": box, "scores": torch.ones(1), "labels": torch.ones(1, dtype=torch.int64)})
        return out


@pytest.mark.parametrize("orientation", [6, 8])
def test_auto_annotate_boxes_are_in_the_frame_cvat_shows(tmp_path: Path, orientation: int) -> None:
    path = tmp_path / f"o{orientation}.jpg"
    expected = white_block(rotated_jpeg(path, orientation))
    function = ModelDetectionFunction(BrightBox(), CLASSES, progress=False)
    for source in (path, path.read_bytes(), Image.open(path)):  # file, downloaded frame, SDK image
        (found,) = function.predict_images([source])
        assert tuple(int(v) for v in found.boxes[0]) == expected


def test_sixteen_bit_png_keeps_its_grey_values(tmp_path: Path) -> None:
    path = tmp_path / "deep.png"
    want = sixteen_bit_png(path)
    assert list(np.unique(want)) == [0, 4, 128, 255]
    grey = np.asarray(open_rgb(path))
    assert grey.shape == (*want.shape, 3) and np.array_equal(grey[..., 0], want) and np.array_equal(grey[..., 2], want)
    assert np.array_equal(decode_rgb(path)[0].numpy(), want)

    record = ImageRecord("d", path, 40, 30, np.array([[1, 1, 9, 9]]), ["red"])
    # native size (the run that failed with "could not be read back") and resized (all white before)
    for min_size, max_size in ((30, 40), (60, 80)):
        for attempt in range(2):  # the rerun opens what the first run wrote
            cache = ImageCache.build([record], min_size, max_size, root=tmp_path / "cache", progress=False)
            pixels = cache.image(0)
            assert pixels.dtype == torch.uint8 and tuple(pixels.shape[-2:]) == (min_size, max_size)
            row = pixels[0, min_size // 2].numpy()
            assert row[0] == 0 and row[-1] == 255 and 120 <= row[len(row) * 5 // 8] <= 136, row
    image, _target = DetectionDataset([record], CLASSES, train=False)[0]
    torch.testing.assert_close(image[0], torch.from_numpy(want.astype(np.float32) / 255.0))

    facts = inspect_image(path)
    assert facts.problem is None and facts.mode.startswith("I")
    _kept, issues = check_images([record], {str(path): facts}, LintSettings())
    assert [i.rule for i in issues] == ["pixel_mode"] and "scaled to 8 bits" in issues[0].message
    # split features see the real content, not a white frame
    feats = compute_features([record], [DHashExtractor()], FeatureCache(None))["dhash-v1"]
    assert np.array_equal(feats[0], DHashExtractor().extract([Image.fromarray(want).convert("RGB")])[0])


@pytest.mark.parametrize("mode", ["1", "L", "LA", "P", "PA", "RGBA", "CMYK", "I", "F", "I;16B"])
def test_every_mode_becomes_eight_bit_rgb(mode: str) -> None:
    base = Image.new("RGB", (6, 4), (200, 100, 50))
    if mode in ("I", "F", "I;16B"):
        values = np.full((4, 6), 0.5 if mode == "F" else 32768, dtype=np.float32 if mode == "F" else np.int32)
        image = Image.fromarray(values, mode="F") if mode == "F" else Image.fromarray(values, mode="I")
        if mode == "I;16B":
            image = image.convert("I;16B")
    elif mode == "P":
        image = base.convert("P")
        image.info["transparency"] = 0
    else:
        image = base.convert(mode)
    out = to_rgb8(image)
    assert out.mode == "RGB" and out.size == (6, 4)
    if mode in ("I", "F", "I;16B"):
        assert 126 <= np.asarray(out)[0, 0, 0] <= 129  # half of the range, not white
    if mode in ("RGBA", "P", "CMYK"):
        assert np.asarray(out)[0, 0, 0] > 150  # the colour, not black or white


def test_a_mode_without_rgb_form_is_refused_with_a_reason() -> None:
    class Exotic:  # every mode Pillow 13 can create converts; a future one must not pass silently
        mode = "I;12X"
        size = (2, 2)

    with pytest.raises(UnsupportedImage, match="pixel mode 'I;12X'"):
        to_rgb8(Exotic())  # type: ignore[arg-type]


def test_probe_reports_every_bad_file(tmp_path: Path) -> None:
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "page.png").write_text("<html><body>not found</body></html>")
    good = tmp_path / "good.png"
    Image.new("RGB", (20, 20), (1, 2, 3)).save(good)
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:40])
    assert "empty" in probe_image(tmp_path / "empty.png")
    assert "not a readable image" in probe_image(tmp_path / "page.png")
    assert isinstance(probe_image(tmp_path / "cut.png"), str)
    assert probe_image(good) == (20, 20)


def test_damaged_exif_is_shown_unrotated(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "bad_exif.jpg"
    Image.new("RGB", (8, 4)).save(path, exif=b"Exif\x00\x00II*\x00garbage")
    caplog.set_level(logging.WARNING)
    assert open_rgb(path).size == (8, 4) and probe_image(path) == (8, 4)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_every_reader_agrees_on_the_upright_size(tmp_path: Path, fmt: str) -> None:
    """torchvision's fast decoder (JPEG/PNG only: it ignores WebP's orientation), PIL's readers
    (its TIFF reader turns the image itself) and the header-only size all give the upright size."""
    path = tmp_path / f"o6.{fmt.lower()}"
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (STORED_W, STORED_H), (10, 200, 30)).save(path, format=fmt, exif=exif.tobytes())
    upright = (STORED_H, STORED_W)  # width, height
    assert probe_image(path) == image_size(path) == open_rgb(path).size == upright
    assert tuple(decode_rgb(path).shape) == (3, STORED_W, STORED_H)
    facts = inspect_image(path)
    assert (facts.width, facts.height) == upright
