"""Feature extractors and the on-disk cache, on the real image path (tiny_data)."""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pytest
from PIL import Image

from obdb.sources.local import load_local
from obdb.split import SplitError
from obdb.split.cache import FeatureCache, compute_features
from obdb.split.features import (BackboneExtractor, DHashExtractor, FeatureExtractor, PixelExtractor, crop_boxes,
                                 make_extractor)
from obdb.split.leakage import hamming


class Counting(FeatureExtractor):
    """Pixel features that count how many images they were asked for."""

    id = "counting-v1"
    batch_size = 5

    def __init__(self) -> None:
        self.calls = 0

    def extract(self, images: Sequence[Image.Image]) -> np.ndarray:
        self.calls += len(images)
        return PixelExtractor().extract(images)


@pytest.fixture(scope="module")
def tiny_records(tiny_data: Path) -> list:
    return load_local(tiny_data / "annotations", images_dir=tiny_data / "images", progress=False).records


def test_cache_hit_returns_identical_features_without_recomputing(tiny_records: list, tmp_path: Path) -> None:
    extractor = Counting()
    cache = FeatureCache(tmp_path / "features")
    first = compute_features(tiny_records, [extractor, DHashExtractor()], cache, crops=True)
    assert extractor.calls > len(tiny_records)  # whole images plus their box crops
    assert first["counting-v1"].shape == (12, 256) and first["counting-v1"].dtype == np.float32
    assert first["counting-v1+crops"].shape == (12, 256)
    assert first["dhash-v1"].shape == (12, 8) and first["dhash-v1"].dtype == np.uint8
    files = sorted((tmp_path / "features" / "counting-v1").rglob("*.npy"))
    assert len(files) == 12 and np.load(files[0], allow_pickle=False).shape == (256,)
    assert (tmp_path / "features" / "content_hashes.json").is_file()

    calls = extractor.calls
    fresh = FeatureCache(tmp_path / "features")
    second = compute_features(tiny_records, [extractor, DHashExtractor()], fresh, crops=True)
    assert extractor.calls == calls and fresh.misses == 0 and fresh.hits == 36
    for key in first:
        assert np.array_equal(first[key], second[key])


def test_cache_is_keyed_by_content_not_path(tiny_records: list, tmp_path: Path) -> None:
    import shutil

    record = tiny_records[0]
    copy = tmp_path / "renamed.png"
    shutil.copy(record.path, copy)
    cache = FeatureCache(tmp_path / "features")
    extractor = Counting()
    a = compute_features([record], [extractor], cache)["counting-v1"]
    moved = type(record)(record.image_id, copy, record.width, record.height, record.boxes, record.labels)
    b = compute_features([moved], [extractor], cache)["counting-v1"]
    assert extractor.calls == 1 and np.array_equal(a, b)
    # a corrupt entry is recomputed, not trusted
    entry = next((tmp_path / "features" / "counting-v1").rglob("*.npy"))
    entry.write_bytes(b"not an npy file")
    c = compute_features([record], [extractor], FeatureCache(tmp_path / "features"))["counting-v1"]
    assert extractor.calls == 2 and np.array_equal(a, c)


def test_missing_image_is_a_split_error(tiny_records: list, tmp_path: Path) -> None:
    record = tiny_records[0]
    gone = type(record)(record.image_id, tmp_path / "gone.png", 96, 96, record.boxes, record.labels)
    with pytest.raises(SplitError, match="gone.png"):
        compute_features([gone], [PixelExtractor()], FeatureCache(None))


def test_pixel_features_and_dhash_are_stable_under_re_encoding(tiny_records: list) -> None:
    with Image.open(tiny_records[0].path) as image:
        original = image.convert("RGB")
    buffer = io.BytesIO()
    original.save(buffer, format="JPEG", quality=80)
    jpeg = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    with Image.open(tiny_records[5].path) as image:
        other = image.convert("RGB")
    features = PixelExtractor().extract([original, jpeg, other])
    assert np.allclose(np.linalg.norm(features, axis=1), 1.0, atol=1e-5)
    assert features[0] @ features[1] > 0.97 and features[0] @ features[1] > features[0] @ features[2]
    hashes = DHashExtractor().extract([original, jpeg])
    assert hamming(hashes[0], hashes[1]) <= 4


def test_crop_boxes_adds_margin_and_clips() -> None:
    image = Image.new("RGB", (100, 80))
    crops = crop_boxes(image, np.array([[10, 10, 30, 20], [95, 75, 100, 80], [0, 0, 2, 2]]))
    assert crops[0].size == (24, 12)  # 20 x 10 plus 10 % each side
    assert crops[1].size[0] <= 9 and crops[2].size == (5, 5)  # clipped at the borders, min 8 px before clipping


def test_backbone_without_weights_is_an_error_not_a_silent_fallback(no_weight_server: str, tmp_path: Path) -> None:
    with pytest.raises(SplitError, match=r"split.tsne.features 'backbone' needs ImageNet weights for resnet18: "
                       r"cannot download resnet18-f37072fd\.pth from .*obdb weights fetch"):
        make_extractor("backbone", backbone="resnet18", weights_dir=tmp_path)
    with pytest.raises(SplitError, match="unknown feature extractor 'hog'"):
        make_extractor("hog")


def test_pixels_only_when_asked_for_or_with_pretrained_none(no_weight_server: str,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO):
        extractor = make_extractor("backbone", backbone="resnet18", pretrained="none")
    assert isinstance(extractor, PixelExtractor) and extractor.source.endswith("model.pretrained is none")
    assert "model.pretrained is 'none'" in caplog.text
    asked = make_extractor("pixels")
    assert isinstance(asked, PixelExtractor) and asked.source.endswith("asked for (split.tsne.features)")


def test_backbone_features_are_downloaded_once_and_reported(weight_server: Any, tiny_records: list,
                                                           tmp_path: Path) -> None:
    import torch
    import torchvision

    from obdb.settings.schema import TsneSplitSettings
    from obdb.split.report import summary_lines
    from obdb.split.tsne import analyse

    torch.manual_seed(0)
    entry = weight_server.publish(torchvision.models.mobilenet_v3_small(weights=None).state_dict(),
                                  "mobilenet_v3_small")
    options = TsneSplitSettings(backbone="mobilenet_v3_small", image_size=64, device="cpu", clusters=2, dhash=False)
    analysis = analyse(tiny_records, options, seed=0, cache_dir=tmp_path / "features", n_jobs=1)
    assert weight_server.requests == [f"/models/{entry.file_name}"]
    source = analysis.info["features"]["source"]
    assert source.startswith(f"mobilenet_v3_small pretrained features ({entry.file_name}")
    again = analyse(tiny_records, options, seed=0, cache_dir=tmp_path / "features", n_jobs=1)
    assert len(weight_server.requests) == 1 and again.info["features"]["cache_misses"] == 0
    lines = summary_lines({"split_hash": "h", "method": "tsne", "seed": 0,
                           "counts": {s: {"images": 1, "groups": 1, "boxes": 1} for s in ("train", "val")},
                           "divergence": {"classes": 0.0, "clusters": 0.0}, "groups": {"straddling": {}, "total": 2},
                           "leakage": {"embedding": {"pairs": 0, "threshold": 0.05}},
                           "analysis": analysis.info})
    assert lines[-1] == f"  image features: {source}"


def test_backbone_features_with_an_offline_weights_file(tiny_records: list, tmp_path: Path) -> None:
    import torch
    import torchvision

    from obdb.models import weight_file_names

    weights = tmp_path / "weights"
    weights.mkdir()
    torch.manual_seed(0)
    path = weights / weight_file_names("resnet18")[0]
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    extractor = make_extractor("backbone", backbone="resnet18", weights_dir=weights, image_size=64, device="cpu",
                               batch_size=4)
    assert extractor.source.startswith(f"resnet18 pretrained features ({path.name}")
    assert isinstance(extractor, BackboneExtractor) and extractor.id == f"resnet18-{path.stem}-64px-gap"
    cache = FeatureCache(tmp_path / "features")
    features = compute_features(tiny_records[:6], [extractor], cache)[extractor.id]
    assert features.shape == (6, 512) and np.isfinite(features).all()
    again = compute_features(tiny_records[:6], [extractor], FeatureCache(tmp_path / "features"))[extractor.id]
    assert np.array_equal(features, again)
    with pytest.raises(SplitError, match="split.tsne.backbone"):
        make_extractor("backbone", backbone="vit_b_16", weights_dir=weights)
