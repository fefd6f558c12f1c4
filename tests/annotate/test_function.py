"""The detection function: SDK spec from the class map, batched inference, detect() output."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from cvat_sdk import models as cvat_models
from cvat_sdk.auto_annotation import DetectionFunctionSpec
from cvat_sdk.auto_annotation.driver import _AnnotationMapper, _DetectionFunctionContextImpl
from PIL import Image

from helpers.annotate import FixedDetector, key_image
from obdb.annotate.function import Detections, ModelDetectionFunction
from obdb.models import ModelSpec, build_detector, save_model
from obdb.records import ClassMap

CLASSES = ClassMap(("red", "blue"))


def test_spec_comes_from_the_class_map() -> None:
    function = ModelDetectionFunction(FixedDetector({}), CLASSES)
    assert isinstance(function.spec, DetectionFunctionSpec)  # validated by the SDK on construction
    labels = function.spec.labels
    assert [(label.name, label.id) for label in labels] == [("red", 1), ("blue", 2)]
    for label in labels:
        assert label.type == "rectangle"
        attrs = {a.name: a for a in label.attributes}
        assert attrs["review"].input_type.value == "select"
        assert sorted(attrs["review"].values) == ["accepted", "n/a", "rejected", "unreviewed"]
        assert attrs["review"].default_value == "n/a"  # human shapes must not read as unreviewed
        assert attrs["score"].input_type.value == "text"


def test_predict_images_batches_keeps_order_and_threshold(tmp_path: Path) -> None:
    outputs = {k: [("red", 0.9, (1, 2, 11, 12)), ("blue", 0.2 + k / 100, (5, 5, 20, 30))] for k in range(1, 8)}
    detector = FixedDetector(outputs)
    function = ModelDetectionFunction(detector, CLASSES, threshold=0.25, batch_size=3, progress=False)
    paths = [key_image(tmp_path / f"{k}.png", k) for k in range(1, 8)]
    sources = [paths[0], str(paths[1]), paths[2].read_bytes(), Image.open(paths[3]), lambda: paths[4], *paths[5:]]
    found = function.predict_images(sources)
    assert detector.batches == [3, 3, 1]
    assert len(found) == 7
    for k, dets in enumerate(found, start=1):
        expected = ["red"] + (["blue"] if 0.2 + k / 100 >= 0.25 else [])
        assert dets.labels == expected, k
        np.testing.assert_allclose(dets.boxes[0], [1, 2, 11, 12])
    # a per-call threshold overrides the default
    assert [len(d) for d in function.predict_images(paths[:2], threshold=0.95)] == [0, 0]


def test_detect_output_passes_the_sdk_mapper(tmp_path: Path) -> None:
    """What annotate_task would do with our function: remap to a task's label/attribute ids."""
    detector = FixedDetector({3: [("blue", 0.87654, (2, 3, 40, 30)), ("red", 0.1, (0, 0, 5, 5))]})
    function = ModelDetectionFunction(detector, CLASSES, threshold=0.5)
    image = Image.open(key_image(tmp_path / "a.png", 3))
    shapes = function.detect(_DetectionFunctionContextImpl(frame_name="a.png"), image)
    assert len(shapes) == 1 and shapes[0].type.value == "rectangle"
    assert shapes[0].points == pytest.approx([2, 3, 40, 30])
    assert {a.value for a in shapes[0].attributes} == {"unreviewed", "0.8765"}

    def task_label(name: str, label_id: int) -> cvat_models.Label:
        return cvat_models.Label(name=name, id=label_id, type="any", sublabels=[], attributes=[
            cvat_models.Attribute(id=label_id * 10 + 1, name="review", mutable=True, input_type="select",
                                  default_value="n/a", values=["n/a", "unreviewed", "accepted", "rejected"]),
            cvat_models.Attribute(id=label_id * 10 + 2, name="score", mutable=False, input_type="text",
                                  default_value="", values=[]),
        ])

    mapper = _AnnotationMapper(logging.getLogger("test"), function.spec.labels,
                               [task_label("red", 7), task_label("blue", 8)],
                               allow_unmatched_labels=False, conv_mask_to_poly=False)
    _tags, mapped = mapper.validate_and_remap(shapes, 5)
    assert mapped[0].label_id == 8 and mapped[0].frame == 5
    assert sorted(a.spec_id for a in mapped[0].attributes) == [81, 82]
    # a lower conf_threshold from the SDK context is honoured
    low = function.detect(_DetectionFunctionContextImpl(frame_name="a.png", conf_threshold=0.05), image)
    assert len(low) == 2


def test_detections_above() -> None:
    dets = Detections(np.array([[0, 0, 1, 1], [0, 0, 2, 2]], np.float32), np.array([0.3, 0.7], np.float32),
                      ["a", "b"])
    assert dets.above(0.5).labels == ["b"] and dets.above(0.3).labels == ["a", "b"]


def test_bad_options_are_refused() -> None:
    with pytest.raises(ValueError, match="threshold"):
        ModelDetectionFunction(FixedDetector({}), CLASSES, threshold=1.5)
    with pytest.raises(ValueError, match="batch size"):
        ModelDetectionFunction(FixedDetector({}), CLASSES, batch_size=0)


def test_saved_model_file_loads_and_predicts(tmp_path: Path) -> None:
    spec = ModelSpec("resnet18", "faster_rcnn", num_classes=CLASSES.num_classes, min_size=64, max_size=64)
    model, spec = build_detector(spec, weights_dir=tmp_path / "no-weights")
    path = tmp_path / "model.pt"
    save_model(path, model, spec, CLASSES)
    function = ModelDetectionFunction.from_file(path, threshold=0.0, batch_size=2, progress=False,
                                                max_detections=7)
    assert function.label_names == ("red", "blue")
    found = function.predict_images([key_image(tmp_path / f"{k}.png", k) for k in range(3)])
    assert len(found) == 3
    for dets in found:
        assert dets.boxes.shape == (len(dets), 4) and len(dets) <= 7
        assert set(dets.labels) <= {"red", "blue"}
        assert np.all(dets.scores >= 0.0)
