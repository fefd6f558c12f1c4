"""Issue 14: ``full_hd: 1`` crops frames larger than full HD to their bottom-centre 1920x1080 region,
boxes clipped and those left outside dropped (counted), alike in training data, the image cache,
split features, lint, and auto_annotate (whose predictions are mapped back to frame pixels)."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from obdb.fullhd import FULL_HD, apply_full_hd, cache_key, crop_rect, crop_record, record_crop, to_frame
from obdb.records import ClassMap, ImageRecord
from obdb.sources.cvat_xml import CvatBox, CvatImage, write_cvat_xml

W, H = 2000, 1100  # just larger than full HD: the crop is x 40..1960, y 20..1100


def frame(path: Path) -> Path:
    """A frame whose bottom-centre crop is black with a red pixel at its top-left corner, in a
    green border the crop leaves out."""
    array = np.zeros((H, W, 3), np.uint8)
    array[:20], array[:, :40], array[:, 1960:] = (0, 255, 0), (0, 255, 0), (0, 255, 0)  # outside the crop
    array[20, 40] = (255, 0, 0)
    Image.fromarray(array).save(path)
    return path


def test_crop_rect() -> None:
    assert crop_rect(3840, 2160) == (960, 1080, 2880, 2160)
    assert crop_rect(1920, 1080) is None and crop_rect(640, 480) is None
    assert crop_rect(W, H) == (40, 20, 1960, 1100)
    assert crop_rect(1000, 1500) == (0, 420, 1000, 1500)  # only the height is larger


def test_crop_record_clips_and_drops_boxes() -> None:
    boxes = [[0, 0, 30, 15],          # outside the crop: dropped
             [30, 10, 100, 60],       # clipped at the crop's left and top
             [1900, 1000, 2000, 1100],  # clipped at the right
             [500, 500, 600, 600]]    # inside: moved by (-40, -20)
    record = ImageRecord("t/a.png", Path("a.png"), W, H, boxes, ["a", "b", "c", "d"], task="t",
                         meta={"occluded": [True, False, False, True], "difficult": [False] * 4})
    assert crop_record(record) == 1
    assert (record.width, record.height) == FULL_HD and record_crop(record) == (40, 20, 1960, 1100)
    np.testing.assert_allclose(record.boxes, [[0, 0, 60, 40], [1860, 980, 1920, 1080], [460, 480, 560, 580]])
    assert record.labels == ["b", "c", "d"] and record.meta["occluded"] == [False, False, True]
    assert record.meta["frame_size"] == [W, H]
    assert crop_record(record) == 0 and record.width == 1920  # applied once only
    small = ImageRecord("t/b.png", Path("b.png"), 640, 480, [[1, 1, 9, 9]], ["a"])
    summary = apply_full_hd([small])
    assert summary.cropped == 0 and record_crop(small) is None and small.boxes.tolist() == [[1, 1, 9, 9]]
    assert cache_key("abc", record) == "abc-crop40_20_1960_1100" and cache_key("abc", small) == "abc"


def test_predictions_map_back_to_frame_pixels() -> None:
    from obdb.annotate.function import ModelDetectionFunction

    seen: list[tuple[int, ...]] = []

    def model(images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        seen.extend(tuple(i.shape) for i in images)
        return [{"boxes": torch.tensor([[10.0, 10.0, 20.0, 30.0]]), "scores": torch.tensor([0.9]),
                 "labels": torch.tensor([1])} for _ in images]

    big = Image.new("RGB", (3840, 2160))
    small = Image.new("RGB", (64, 48))
    on = ModelDetectionFunction(model, ClassMap(("weed",)), progress=False, full_hd=True)
    found = on.predict_images([big, small])
    assert seen == [(3, 1080, 1920), (3, 48, 64)]
    np.testing.assert_allclose(found[0].boxes, [[970, 1090, 980, 1110]])  # + (960, 1080)
    np.testing.assert_allclose(found[1].boxes, [[10, 10, 20, 30]])
    seen.clear()
    off = ModelDetectionFunction(model, ClassMap(("weed",)), progress=False)
    off.predict_images([big])
    assert seen == [(3, 2160, 3840)]
    np.testing.assert_allclose(to_frame(np.array([[1, 2, 3, 4]]), (5, 6)), [[6, 8, 8, 10]])


@pytest.fixture(scope="module")
def big_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fullhd")
    (root / "images").mkdir()
    frame(root / "images" / "big_0001.png")
    frame(root / "images" / "big_0002.png")
    Image.new("RGB", (64, 48), (9, 9, 9)).save(root / "images" / "small_0001.png")
    images = [CvatImage(0, "big_0001.png", W, H, [CvatBox("weed", 0, 0, 30, 15), CvatBox("weed", 60, 40, 160, 140)]),
              CvatImage(1, "big_0002.png", W, H, [CvatBox("weed", 1000, 600, 1100, 700)])]
    write_cvat_xml(root / "annotations" / "gt_train_big.xml", "gt_train_big", ["weed"], images)
    write_cvat_xml(root / "annotations" / "gt_train_small.xml", "gt_train_small", ["weed"],
                   [CvatImage(0, "small_0001.png", 64, 48, [CvatBox("weed", 4, 4, 20, 20)])])
    return root


def settings_for(root: Path, out: Path, full_hd: int):  # type: ignore[no-untyped-def]
    from obdb.settings import load_settings

    raw = {"variants": ["resnet18"], "resnet18": {"run_hpo": 0}, "full_hd": full_hd, "save_dir": str(out),
           "data": {"images_dir": str(root / "images"), "annotations": [str(root / "annotations")]},
           "default_class_map": ["Background", "weed"]}
    path = out / "settings.json"
    out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(raw))
    return load_settings(path)


def test_full_hd_in_loading_training_data_cache_lint_and_features(big_data: Path, tmp_path: Path,
                                                                  caplog: pytest.LogCaptureFixture) -> None:
    from obdb.dataset import DetectionDataset
    from obdb.image_cache import ImageCache
    from obdb.lint import lint
    from obdb.pipeline import load_annotations
    from obdb.split.cache import FeatureCache, compute_features
    from obdb.split.features import PixelExtractor

    caplog.set_level(logging.INFO)
    plain = load_annotations(settings_for(big_data, tmp_path / "off", 0), progress=False)
    assert {(r.width, r.height) for r in plain.records} == {(W, H), (64, 48)}
    settings = settings_for(big_data, tmp_path / "on", 1)
    loaded = load_annotations(settings, progress=False)
    records = {r.image_id.rsplit("/", 1)[1]: r for r in loaded.records}
    assert (records["big_0001.png"].width, records["big_0001.png"].height) == FULL_HD
    np.testing.assert_allclose(records["big_0001.png"].boxes, [[20, 20, 120, 120]])
    assert (records["small_0001.png"].width, records["small_0001.png"].height) == (64, 48)
    assert "dropped 1 box(es) outside the full-HD crop" in caplog.text
    ordered = [records["big_0001.png"], records["small_0001.png"]]
    # training data: the decoded image is the crop (the red marker at its corner), boxes unchanged
    dataset = DetectionDataset(ordered, ClassMap(("weed",)), train=False)
    image, target = dataset[0]
    assert tuple(image.shape) == (3, 1080, 1920) and image[0, 0, 0] == 1.0 and image[1, 0, 0] == 0.0
    assert dataset.original_size(0) == (1080, 1920)
    np.testing.assert_allclose(target["boxes"].numpy(), [[20, 20, 120, 120]])
    # the image cache stores the crop, under another key than the whole frame
    cache = ImageCache.build(ordered, 1080, 1920, progress=False)
    assert cache.original_size(0) == (1080, 1920)
    assert cache.image(0)[0, 0, 0] == 255
    # lint sees no size mismatch for a cropped record
    result = lint(ordered, ClassMap(("weed",)), settings.lint, progress=False)
    assert not [i for i in result.issues if i.rule == "size_mismatch"]
    assert [(r.width, r.height) for r in result.records] == [FULL_HD, (64, 48)]
    # split features: of the crop, cached apart from the whole frame
    features = compute_features(ordered, [PixelExtractor()], FeatureCache(tmp_path / "f"))["pixels-v1"]
    whole = compute_features([plain.by_id()[ordered[0].image_id]], [PixelExtractor()],
                             FeatureCache(tmp_path / "f"))["pixels-v1"]
    assert not np.allclose(features[0], whole[0])


def test_evaluation_rows_and_mosaic_tiles_are_in_frame_pixels() -> None:
    from obdb.evaluation.report import image_tile
    from obdb.fullhd import rows_to_frame

    record = ImageRecord("t/a.png", Path("a.png"), W, H, [[100, 100, 200, 200]], ["weed"], task="t")
    crop_record(record)  # offset (40, 20)
    other = ImageRecord("t/b.png", Path("b.png"), 64, 48, [[1, 1, 9, 9]], ["weed"], task="t")
    rows = [{"image_id": "t/a.png", "kind": "TP", "label": "weed", "score": 0.9, "gt_index": 0,
             "pred_x1": 60.0, "pred_y1": 80.0, "pred_x2": 160.0, "pred_y2": 180.0,
             "gt_x1": 60.0, "gt_y1": 80.0, "gt_x2": 160.0, "gt_y2": 180.0},
            {"image_id": "t/a.png", "kind": "FN", "label": "weed", "score": None, "gt_index": 0,
             "pred_x1": None, "pred_y1": None, "pred_x2": None, "pred_y2": None,
             "gt_x1": 60.0, "gt_y1": 80.0, "gt_x2": 160.0, "gt_y2": 180.0},
            {"image_id": "t/b.png", "kind": "TP", "label": "weed", "score": 0.9, "gt_index": 0,
             "pred_x1": 1.0, "pred_y1": 1.0, "pred_x2": 9.0, "pred_y2": 9.0,
             "gt_x1": 1.0, "gt_y1": 1.0, "gt_x2": 9.0, "gt_y2": 9.0}]
    rows_to_frame(rows, [record, other])
    assert [rows[0][k] for k in ("pred_x1", "pred_y1", "gt_x2", "gt_y2")] == [100.0, 100.0, 200.0, 200.0]
    assert rows[1]["pred_x1"] is None and rows[1]["gt_x1"] == 100.0 and rows[2]["pred_x1"] == 1.0
    tile = image_tile(record, {"tp": 1, "fp": 0, "fn": 0, "f1": 1.0}, rows[:1])
    assert tuple(tile.crop) == (40, 20, 1960, 1100)
    assert [b[0] for b in tile.boxes] == [[100.0, 100.0, 200.0, 200.0], [100.0, 100.0, 200.0, 200.0]]
