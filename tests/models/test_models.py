"""Tests for obdb.models: building every backbone/head, offline weights, safe model files."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torchvision
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

from obdb.models import (ENV_WEIGHTS_DIR, ModelError, ModelSpec, build_detector, freeze_batchnorm, load_model,
                         read_header, resolve_variant, save_model, weight_file_names)
from obdb.records import ClassMap

SIZE = {"min_size": 128, "max_size": 128}
CLASSES = ClassMap(("weed", "crop"))


@pytest.fixture(autouse=True)
def _no_env_weights(monkeypatch: pytest.MonkeyPatch, no_weight_server: str) -> None:
    """A developer's $OBDB_WEIGHTS_DIR or hub cache must not change what the tests build, and
    nothing may be downloaded (the URL base is a closed port)."""
    monkeypatch.delenv(ENV_WEIGHTS_DIR, raising=False)


def _images() -> list[torch.Tensor]:
    return [torch.rand(3, 96, 128, generator=torch.Generator().manual_seed(0))]


def _targets() -> list[dict[str, torch.Tensor]]:
    return [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([1])}]


def _spec(backbone: str = "resnet18", head: str = "faster_rcnn", **kw: object) -> ModelSpec:
    return ModelSpec(backbone, head, **{"num_classes": CLASSES.num_classes, **SIZE, **kw})  # type: ignore[arg-type]


def _predict(model: nn.Module) -> list[dict[str, torch.Tensor]]:
    model.eval()
    with torch.no_grad():
        return model(_images())


@pytest.mark.parametrize("backbone,head", [
    ("resnet18", "faster_rcnn"), ("resnet50", "faster_rcnn"), ("mobilenet_v3_large", "faster_rcnn"),
    ("efficientnet_b0", "faster_rcnn"), ("convnext_tiny", "faster_rcnn"), ("resnet18", "retinanet"),
    ("resnet18", "fcos"), ("mobilenet_v3_large", "retinanet"), ("efficientnet_b0", "fcos"),
])
def test_build_train_and_eval(backbone: str, head: str) -> None:
    torch.set_flush_denormal(True)
    torch.manual_seed(0)
    model, spec = build_detector(_spec(backbone, head))
    assert spec.pretrained_backbone is False
    # Random init: trainable norm everywhere and every parameter trains.
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert all(p.requires_grad for p in model.parameters())
    assert model.transform.min_size == (128,) and model.transform.max_size == 128
    model.train()
    losses = model(_images(), _targets())
    assert losses and all(math.isfinite(v.item()) for v in losses.values())
    sum(losses.values()).backward()
    out = _predict(model)
    assert set(out[0]) == {"boxes", "labels", "scores"}
    assert out[0]["boxes"].shape[1:] == (4,) and len(out[0]["labels"]) == len(out[0]["scores"])


def test_num_classes_reach_the_heads() -> None:
    frcnn, _ = build_detector(_spec("resnet18", num_classes=5))
    assert frcnn.roi_heads.box_predictor.cls_score.out_features == 5
    retina, _ = build_detector(_spec("resnet18", "retinanet", num_classes=5))
    assert retina.head.classification_head.num_classes == 5


def test_large_resnet_builds() -> None:
    model, _ = build_detector(_spec("resnet152"))
    assert sum(p.numel() for p in model.parameters()) > 70_000_000


def test_unknown_and_unsupported_backbones() -> None:
    with pytest.raises(ModelError, match="unknown backbone 'resnet500'.*resnet18"):
        build_detector(_spec("resnet500"))
    with pytest.raises(ModelError, match="swin_t.*not supported"):
        build_detector(_spec("swin_t"))
    with pytest.raises(ModelError, match="unknown head"):
        ModelSpec("resnet18", "yolo")


def test_spec_json_round_trip() -> None:
    spec = _spec("efficientnet_b0", "fcos", trainable_layers=2, pretrained_backbone=True)
    assert ModelSpec.from_json(spec.to_json()) == spec
    assert ModelSpec.from_json({**spec.to_json(), "future_field": 1}) == spec
    with pytest.raises(ModelError):
        ModelSpec.from_json({"head": "fcos"})


@pytest.mark.parametrize("variant,expected", [
    ("resnet50", ("resnet50", "faster_rcnn")),
    ("resnet18_weeds_pretrained", ("resnet18", "faster_rcnn")),
    ("resnet101", ("resnet101", "faster_rcnn")),
    ("retina_net", ("resnet50", "retinanet")),
    ("retinanet", ("resnet50", "retinanet")),
    ("fcos", ("resnet50", "fcos")),
    ("retinanet_resnet18", ("resnet18", "retinanet")),
    ("fasterrcnn_mobilenet_v3_large_fpn", ("mobilenet_v3_large", "faster_rcnn")),
    ("efficientnet_b0_fcos", ("efficientnet_b0", "fcos")),
    ("Wide_ResNet50_2", ("wide_resnet50_2", "faster_rcnn")),
])
def test_resolve_variant(variant: str, expected: tuple[str, str]) -> None:
    assert resolve_variant(variant) == expected


def test_resolve_variant_explicit_args_and_errors() -> None:
    assert resolve_variant("retina_net", backbone="resnet18") == ("resnet18", "retinanet")
    assert resolve_variant("resnet50", head="fcos") == ("resnet50", "fcos")
    assert resolve_variant("my_weed_model", backbone="resnet34", head="retinanet") == ("resnet34", "retinanet")
    with pytest.raises(ModelError, match="resnet18_weeds_pretrained"):
        resolve_variant("my_weed_model")
    with pytest.raises(ModelError, match="resnet500"):
        resolve_variant("resnet500")
    with pytest.raises(ModelError, match="unknown head"):
        resolve_variant("resnet50", head="yolo")


def test_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model, spec = build_detector(_spec("resnet18"))
    before = _predict(model)
    path = tmp_path / "out" / "model.pt"
    save_model(path, model, spec, CLASSES, extra={"epoch": 3, "path": tmp_path})
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temp file left behind
    loaded, spec2, classes2, header = load_model(path)
    assert spec2 == spec and classes2 == CLASSES and not loaded.training
    assert header["extra"] == {"epoch": 3, "path": str(tmp_path)}
    assert header["torchvision_version"] == torchvision.__version__
    assert read_header(path) == header
    after = _predict(loaded)
    assert len(after[0]["boxes"]) > 0
    for key in ("boxes", "labels", "scores"):
        assert torch.equal(before[0][key], after[0][key])


def test_save_refuses_class_count_mismatch(tmp_path: Path) -> None:
    model, spec = build_detector(_spec("resnet18", "fcos", num_classes=4))
    with pytest.raises(ModelError, match="class map"):
        save_model(tmp_path / "m.pt", model, spec, CLASSES)


def test_pickled_models_are_refused(tmp_path: Path) -> None:
    model, _ = build_detector(_spec("resnet18", "fcos"))
    pickled = tmp_path / "resnet18_weeds_pretrained.pth"
    torch.save(model, pickled)  # the original tool's format: a whole pickled nn.Module
    with pytest.raises(ModelError, match="is not a state_dict file.*pickled models are refused"):
        load_model(pickled)
    with pytest.raises(ModelError, match="pickled models are refused"):
        build_detector(_spec("resnet18", "fcos"), pretrained_model_path=pickled)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(ModelError, match="notes.pt"):
        load_model(text)


def test_foreign_file_and_wrong_architecture(tmp_path: Path) -> None:
    model, spec = build_detector(_spec("resnet18"))
    raw = tmp_path / "raw.pth"
    torch.save(model.state_dict(), raw)
    with pytest.raises(ModelError, match="not an obdb model file"):
        load_model(raw)
    path = tmp_path / "model.pt"
    save_model(path, model, spec, CLASSES)
    payload = torch.load(path, weights_only=True)
    payload["header"]["spec"]["backbone"] = "resnet34"
    torch.save(payload, path)
    with pytest.raises(ModelError, match=r"model\.pt: wrong architecture.*resnet34"):
        load_model(path)


def test_pretrained_model_path_partial_load(tmp_path: Path) -> None:
    torch.manual_seed(2)
    old, old_spec = build_detector(_spec("resnet18"))
    ours, raw = tmp_path / "old.pt", tmp_path / "old_state.pth"
    save_model(ours, old, old_spec, CLASSES)
    torch.save({"model": old.state_dict(), "epoch": 7}, raw)  # a training checkpoint wrapper
    for source in (ours, raw):
        torch.manual_seed(3)
        new, _ = build_detector(_spec("resnet18", num_classes=5), pretrained_model_path=source)
        assert torch.equal(new.backbone.body.layer1[0].conv1.weight, old.backbone.body.layer1[0].conv1.weight)
        assert torch.equal(new.rpn.head.conv[0][0].weight, old.rpn.head.conv[0][0].weight)
        assert new.roi_heads.box_predictor.cls_score.out_features == 5  # 3-class head was skipped
    with pytest.raises(ModelError, match=r"old_state\.pth does not fit.*0 of \d+ backbone tensors"):
        build_detector(_spec("efficientnet_b0", "fcos"), pretrained_model_path=raw)


def _imagenet_resnet18(folder: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    torch.manual_seed(4)
    state = torchvision.models.resnet18(weights=None).state_dict()
    path = folder / "checkpoints" / weight_file_names("resnet18")[0]  # torch hub cache layout
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return path, state


def test_backbone_weights_lookup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, state = _imagenet_resnet18(tmp_path)
    assert path.name == "resnet18-f37072fd.pth"
    model, spec = build_detector(_spec("resnet18", trainable_layers=3), pretrained="imagenet", weights_dir=tmp_path)
    assert spec.pretrained_backbone is True
    assert any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.backbone.modules())
    body = model.backbone.body
    assert torch.equal(body.conv1.weight, state["conv1.weight"])
    assert torch.equal(body.layer3[0].bn1.running_var, state["layer3.0.bn1.running_var"])
    assert not body.conv1.weight.requires_grad and not body.layer1[0].conv1.weight.requires_grad
    assert body.layer2[0].conv1.weight.requires_grad and body.layer4[0].conv1.weight.requires_grad
    # The env variable is the fallback folder.
    monkeypatch.setenv(ENV_WEIGHTS_DIR, str(tmp_path))
    assert build_detector(_spec("resnet18", "retinanet"), pretrained="imagenet")[1].pretrained_backbone is True
    # A fine-tuned (frozen-BN) model reloads into the same layout, without the weights file.
    saved = tmp_path / "ft.pt"
    save_model(saved, model, spec, CLASSES)
    monkeypatch.delenv(ENV_WEIGHTS_DIR)
    path.unlink()
    loaded, spec2, _, _ = load_model(saved)
    assert spec2.pretrained_backbone is True
    assert torch.equal(loaded.backbone.body.conv1.weight, state["conv1.weight"])


def test_missing_or_wrong_backbone_weights(tmp_path: Path) -> None:
    # no silent random init: missing ImageNet weights that cannot be downloaded are an error
    with pytest.raises(ModelError, match=r"cannot download resnet18-f37072fd\.pth"):
        build_detector(_spec("resnet18"), pretrained="imagenet", weights_dir=tmp_path / "nowhere")
    _, spec = build_detector(_spec("resnet18", pretrained_backbone=True), pretrained="none", weights_dir=tmp_path)
    assert spec.pretrained_backbone is False  # "none" is random init, whatever the spec said
    wrong = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.mobilenet_v3_small(weights=None).state_dict(), wrong)
    with pytest.raises(ModelError, match=r"resnet18\.pth does not fit"):
        build_detector(_spec("resnet18"), pretrained="imagenet", weights_dir=tmp_path)


def test_generic_backbone_pretrained_layout(tmp_path: Path) -> None:
    state = torchvision.models.efficientnet_b0(weights=None).state_dict()
    torch.save(state, tmp_path / "efficientnet_b0.pth")
    model, spec = build_detector(_spec("efficientnet_b0", trainable_layers=2), pretrained="imagenet",
                                 weights_dir=tmp_path)
    assert spec.pretrained_backbone
    frozen = [m for m in model.backbone.modules() if isinstance(m, FrozenBatchNorm2d)]
    assert len(frozen) == sum(isinstance(m, nn.BatchNorm2d)
                              for m in torchvision.models.efficientnet_b0().features.modules())
    body = model.backbone.body
    assert not body["0"][0].weight.requires_grad  # stem frozen
    assert body["8"][0].weight.requires_grad      # last stage trains


def test_freeze_batchnorm_keeps_statistics_and_eps() -> None:
    net = torchvision.models.mobilenet_v3_small(weights=None).features[:3]
    bn = net[0][1]
    with torch.no_grad():
        bn.running_mean.uniform_()
    mean, eps = bn.running_mean.clone(), bn.eps
    freeze_batchnorm(net)
    frozen = net[0][1]
    assert isinstance(frozen, FrozenBatchNorm2d) and eps == pytest.approx(1e-3)
    assert frozen.eps == eps and torch.equal(frozen.running_mean, mean)
