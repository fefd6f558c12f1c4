"""Pretrained weights: torchvision-named downloads from a local server, cache hits, refused and
interrupted downloads, COCO detectors with fresh class layers, ``obdb weights``, and commands
that never download."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
import torchvision
from torchvision.ops.misc import FrozenBatchNorm2d

from obdb.models import (ModelError, ModelSpec, WeightsUnavailable, build_detector, downloads_forbidden, hub,
                         load_model, save_model)
from obdb.models.detectors import assemble_detector
from obdb.records import ClassMap

SMALL = "mobilenet_v3_small"  # the smallest backbone that builds a detector: a ~10 MB state_dict
SIZE = {"min_size": 64, "max_size": 64}


def _imagenet_state(seed: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    return torchvision.models.get_model(SMALL, weights=None).state_dict()


def _cache(tmp_path: Path) -> Path:
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_first_run_downloads_into_the_hub_cache_second_is_a_cache_hit(weight_server: Any, tmp_path: Path) -> None:
    state = _imagenet_state()
    entry = weight_server.publish(state, SMALL)
    spec = ModelSpec(SMALL, "faster_rcnn", num_classes=3, **SIZE)
    model, built = build_detector(spec, pretrained="imagenet", progress=False)
    assert weight_server.requests == [f"/models/{entry.file_name}"]
    assert _files(_cache(tmp_path)) == [entry.file_name]  # torchvision's name, no temp file left
    assert built.pretrained_backbone and any(isinstance(m, FrozenBatchNorm2d) for m in model.modules())
    assert torch.equal(model.backbone.body["0"][0].weight, state["features.0.0.weight"])
    again, _ = build_detector(spec, pretrained="imagenet", progress=False)
    assert len(weight_server.requests) == 1  # cache hit: no network
    assert torch.equal(again.backbone.body["0"][0].weight, state["features.0.0.weight"])


def test_lookup_order_weights_dir_then_env_then_hub_cache(weight_server: Any, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    entry = weight_server.publish(_imagenet_state(), SMALL)
    first, env = tmp_path / "first", tmp_path / "env"
    for folder in (first / "checkpoints", env, _cache(tmp_path)):
        folder.mkdir(parents=True)
        (folder / entry.file_name).write_bytes((weight_server.root / "models" / entry.file_name).read_bytes())
    monkeypatch.setenv(hub.ENV_WEIGHTS_DIR, str(env))
    assert hub.imagenet_weights(SMALL, first) == first / "checkpoints" / entry.file_name
    assert hub.imagenet_weights(SMALL) == env / entry.file_name
    monkeypatch.delenv(hub.ENV_WEIGHTS_DIR)
    assert hub.imagenet_weights(SMALL) == _cache(tmp_path) / entry.file_name
    assert weight_server.requests == []


def test_wrong_hash_is_refused_and_leaves_no_file(weight_server: Any, tmp_path: Path) -> None:
    entry = weight_server.publish(_imagenet_state(), SMALL, wrong_hash=True)
    with pytest.raises(WeightsUnavailable, match=rf"cannot download {entry.file_name} from "
                       rf"{weight_server.url}{entry.file_name} \(RuntimeError: invalid hash value"):
        hub.imagenet_weights(SMALL, progress=False)
    assert _files(_cache(tmp_path)) == []


def test_interrupted_download_leaves_no_corrupt_cache_file(weight_server: Any, tmp_path: Path) -> None:
    entry = weight_server.publish(_imagenet_state(), SMALL)
    weight_server.truncate = True
    with pytest.raises(WeightsUnavailable, match=f"cannot download {entry.file_name}"):
        hub.imagenet_weights(SMALL, progress=False)
    assert _files(_cache(tmp_path)) == []
    weight_server.truncate = False  # the next try starts over and succeeds
    assert hub.imagenet_weights(SMALL, progress=False).name == entry.file_name


def test_coco_reinitialises_the_class_layers_and_keeps_the_rest(weight_server: Any,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(hub.COCO_MODELS, (SMALL, "fcos", 1), "tiny_fcos")
    torch.manual_seed(5)
    coco_spec = ModelSpec(SMALL, "fcos", num_classes=91, pretrained_backbone=True, **SIZE)
    coco = assemble_detector(coco_spec).state_dict()
    weight_server.publish(coco, "tiny_fcos", "coco")
    torch.manual_seed(6)
    model, spec = build_detector(ModelSpec(SMALL, "fcos", num_classes=3, **SIZE), pretrained="coco", progress=False)
    assert spec.torchvision_model == "tiny_fcos" and spec.pretrained_backbone
    own = model.state_dict()
    class_keys = {k for k in own if k.startswith("head.classification_head.cls_logits.")}
    assert class_keys == {"head.classification_head.cls_logits.weight", "head.classification_head.cls_logits.bias"}
    for key, value in own.items():
        if key not in class_keys:
            assert torch.equal(value, coco[key]), key
    assert own["head.classification_head.cls_logits.weight"].shape[0] == 3  # one anchor x 3 classes
    prior = -torch.log(torch.tensor((1 - 0.01) / 0.01))  # torchvision's fresh init of the class logits
    assert torch.allclose(own["head.classification_head.cls_logits.bias"], prior)
    with pytest.raises(ModelError, match=r"no COCO weights for a resnet18 faster_rcnn detector; they exist for: "
                       r"resnet50 faster_rcnn, resnet50 faster_rcnn v2, .*mobilenet_v3_large faster_rcnn"):
        build_detector(ModelSpec("resnet18", num_classes=3, **SIZE), pretrained="coco")


@pytest.mark.parametrize("name", sorted(set(hub.COCO_MODELS.values())))
def test_coco_architectures_fit_torchvision_coco_files(name: str) -> None:
    """Every COCO model we build has exactly the tensors (names, shapes) of torchvision's COCO
    file, so the real download loads; built on the meta device, so nothing is allocated."""
    (backbone, head, version), = [k for k, v in hub.COCO_MODELS.items() if v == name]
    with torch.device("meta"):
        ours = assemble_detector(ModelSpec(backbone, head, num_classes=91, pretrained_backbone=True,
                                           torchvision_model=name)).state_dict()
        theirs = torchvision.models.get_model(name, weights=None, weights_backbone=None, num_classes=91).state_dict()
    if not name.endswith("_v2"):  # torchvision's COCO v1 files come from FrozenBatchNorm models
        theirs = {k: v for k, v in theirs.items() if not k.endswith("num_batches_tracked")}
    assert {k: tuple(v.shape) for k, v in ours.items()} == {k: tuple(v.shape) for k, v in theirs.items()}


def test_no_server_stops_the_run_before_anything_is_written(no_weight_server: str,
                                                            settings_file: Callable[..., Path], tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    from obdb.cli.runner import main

    path = settings_file(model={"min_size": 96, "max_size": 96, "pretrained": "imagenet"})
    assert main(["-f", str(path), "--progress", "false"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert f"cannot download resnet18-f37072fd.pth from {no_weight_server}resnet18-f37072fd.pth" in err[0]
    assert "obdb weights fetch" in err[0] and "model.weights_dir or $OBDB_WEIGHTS_DIR" in err[0]
    assert not (tmp_path / "train").exists()


def test_weights_fetch_and_list(weight_server: Any, tmp_path: Path, settings_file: Callable[..., Path],
                                capsys: pytest.CaptureFixture[str]) -> None:
    from obdb.cli.main import main

    entry = weight_server.publish(_imagenet_state(), SMALL)
    folder = tmp_path / "airgap"
    assert main(["weights", "fetch", SMALL, "--dir", str(folder), "--progress", "false"]) == 0
    assert _files(folder) == [entry.file_name]
    assert f"downloaded from {weight_server.url}{entry.file_name}" in capsys.readouterr().out
    assert main(["weights", "fetch", SMALL, "--dir", str(folder)]) == 0
    assert "(present)" in capsys.readouterr().out and len(weight_server.requests) == 1
    (folder / "stray-0123abcd.pth").write_bytes(b"not that file")
    assert main(["weights", "list", "--dir", str(folder)]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if entry.file_name in x)
    assert "hash ok" in line and f"imagenet: {SMALL}" in line
    assert "HASH MISMATCH" in next(x for x in out.splitlines() if "stray" in x)
    # -f: what the settings' run needs (resnet18 here), into model.weights_dir
    resnet = weight_server.publish({"fc.bias": torch.zeros(3)}, "resnet18")
    settings = settings_file(model={"min_size": 96, "max_size": 96, "pretrained": "imagenet",
                                    "weights_dir": str(tmp_path / "wd")})
    assert main(["weights", "fetch", "-f", str(settings), "--progress", "false"]) == 0
    assert _files(tmp_path / "wd") == [resnet.file_name]


def test_test_model_never_downloads(no_weight_server: str, settings_file: Callable[..., Path], tiny_data: Path,
                                    tmp_path: Path) -> None:
    from obdb.cli.test_model import main

    torch.manual_seed(0)
    model, spec = build_detector(ModelSpec("resnet18", num_classes=3, min_size=96, max_size=96))
    saved = tmp_path / "model.pt"
    save_model(saved, model, spec, ClassMap(("red", "blue")))
    path = settings_file(model={"min_size": 96, "max_size": 96, "pretrained": "imagenet"})
    out = tmp_path / "result.json"
    assert main(["-m", str(saved), "-f", str(path), "--split", "all", "--metrics-json", str(out), "--no-plots",
                 "--progress", "false"]) == 0
    assert json.loads(out.read_text())
    assert not _cache(tmp_path).exists()


def test_forbidden_downloads_fail_without_a_request(weight_server: Any) -> None:
    weight_server.publish(_imagenet_state(), SMALL)
    with downloads_forbidden("test_model.py"):
        with pytest.raises(WeightsUnavailable, match=r"test_model.py never downloads; to provide it offline"):
            hub.imagenet_weights(SMALL)
    assert weight_server.requests == []


def test_saved_coco_and_file_models_reload_without_weights(tmp_path: Path) -> None:
    torch.manual_seed(7)
    state = _imagenet_state()
    own_file = tmp_path / "my_backbone.pth"
    torch.save(state, own_file)
    model, spec = build_detector(ModelSpec(SMALL, "retinanet", num_classes=3, **SIZE), pretrained=str(own_file))
    assert spec.pretrained_backbone and torch.equal(model.backbone.body["0"][0].weight, state["features.0.0.weight"])
    save_model(tmp_path / "m.pt", model, spec, ClassMap(("a", "b")))
    own_file.unlink()
    loaded, spec2, _, _ = load_model(tmp_path / "m.pt")
    assert spec2 == spec and torch.equal(loaded.backbone.body["0"][0].weight, state["features.0.0.weight"])
    with pytest.raises(ModelError, match="neither imagenet, coco, none nor an existing weights file"):
        build_detector(ModelSpec(SMALL, num_classes=3, **SIZE), pretrained=str(own_file))


def test_settings_check_pretrained_before_anything_runs(settings_file: Callable[..., Path], tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from obdb.cli.runner import main

    path = settings_file(model={"min_size": 96, "max_size": 96, "pretrained": "coco"})
    assert main(["-f", str(path), "--check"]) == 2
    err = capsys.readouterr().err
    assert "variants[0] (resnet18): model.pretrained 'coco': torchvision has no COCO weights" in err
    assert "resnet50 retinanet v2" in err
    path = settings_file(model={"min_size": 96, "max_size": 96, "pretrained": "imagnet"})
    assert main(["-f", str(path), "--check"]) == 2
    assert ("model.pretrained: 'imagnet' is not one of imagenet, coco, none nor a weights file"
            in capsys.readouterr().err)
    assert not (tmp_path / "train").exists()
