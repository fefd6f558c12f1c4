"""Detector specs, variant-name parsing and detector assembly.

A :class:`ModelSpec` is everything needed to rebuild the exact architecture of a saved model, so it
travels in every model file's header; weights never influence the architecture except through
``pretrained_backbone`` (frozen BatchNorm and frozen stages when fine-tuning) and ``torchvision_model``
(the COCO detector a model was fine-tuned from; its "_v2" architectures differ from ours).

``model.pretrained`` (see :func:`build_detector`): ``imagenet`` backbone weights, ``coco`` whole-detector
weights with the class layers re-initialised, ``none`` (random init with trainable BatchNorm: frozen
statistics from random init make Faster R-CNN diverge), or the path of a backbone state_dict.
"""
from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torchvision
from torch import nn
from torchvision.models.detection import FCOS, FasterRCNN, RetinaNet
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

from . import hub
from .backbones import HEADS, BackboneInfo, build_backbone, check_backbone_name, known_backbones

from .weights import ModelError, load_coco_weights, load_partial_state

log = logging.getLogger(__name__)

DEFAULT_BACKBONE = "resnet50"
DEFAULT_HEAD = "faster_rcnn"
# Spellings found in users' settings files; "retina_net" is the historical one.
HEAD_ALIASES = {"faster_rcnn": "faster_rcnn", "fasterrcnn": "faster_rcnn", "frcnn": "faster_rcnn",
                "retina_net": "retinanet", "retinanet": "retinanet", "fcos": "fcos"}
PRETRAINED_MODES = ("imagenet", "coco", "none")
VARIANT_EXAMPLES = ("resnet50", "resnet18_weeds_pretrained", "retina_net", "fcos", "mobilenet_v3_large",
                    "efficientnet_b0", "convnext_tiny_fcos", "retinanet_resnet18")


@dataclass(frozen=True)
class ModelSpec:
    """Architecture of a detector (background is class 0 and counted in ``num_classes``).

    ``trainable_layers`` counts backbone stages from the top that train when pretrained weights were
    loaded; from random init every layer trains regardless. ``pretrained_backbone`` and
    ``torchvision_model`` are set by :func:`build_detector` from ``model.pretrained``, because they
    change the architecture (frozen BatchNorm; torchvision's v2 detectors) and so must be known to
    rebuild a saved model.
    """

    backbone: str
    head: str = DEFAULT_HEAD
    num_classes: int = 2
    min_size: int = 800
    max_size: int = 1333
    trainable_layers: int = 5
    pretrained_backbone: bool = False
    torchvision_model: str | None = None

    def __post_init__(self) -> None:
        if self.head not in HEADS:
            raise ModelError(f"unknown head {self.head!r}; valid heads: {', '.join(HEADS)}")
        if self.num_classes < 2:
            raise ModelError(f"num_classes counts the background and must be >= 2, got {self.num_classes}")
        if not 0 < self.min_size <= self.max_size:
            raise ModelError(f"need 0 < min_size <= max_size, got {self.min_size} and {self.max_size}")
        if self.trainable_layers < 0:
            raise ModelError(f"trainable_layers must be >= 0, got {self.trainable_layers}")

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "ModelSpec":
        """Rebuild from :meth:`to_json`; unknown keys (from a newer obdb) are ignored."""
        if not isinstance(data, dict) or not isinstance(data.get("backbone"), str):
            raise ModelError(f"not a model spec (needs a 'backbone' name): {data!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in names})
        except TypeError as exc:
            raise ModelError(f"bad model spec {data!r}: {exc}") from exc


def _match_backbone(text: str, names: list[str]) -> str | None:
    """Longest known backbone name that ``text`` starts with, ending at a ``_``/``-`` boundary, so
    "resnet18_weeds_pretrained" gives resnet18 but "resnet500" gives nothing."""
    for name in sorted(names, key=len, reverse=True):
        if text == name or (text.startswith(name) and text[len(name)] in "_-"):
            return name
    return None


def resolve_variant(variant: str, backbone: str | None = None, head: str | None = None) -> tuple[str, str]:
    """``(backbone, head)`` for a variant name from users' settings.

    Accepts a backbone name with any suffix ("resnet18_weeds_pretrained"), a bare head
    ("retina_net", "fcos": ResNet-50 as torchvision's reference models), and head/backbone
    combinations in either order ("retinanet_resnet18", "resnet18_fcos"). Explicit ``backbone`` /
    ``head`` arguments (the variant's settings block) win over what the name suggests.
    """
    text = re.sub(r"[\s-]+", "_", (variant or "").strip().lower())
    names = known_backbones()
    parsed_backbone: str | None = None
    parsed_head: str | None = None
    for alias in sorted(HEAD_ALIASES, key=len, reverse=True):
        if text == alias or text.startswith(alias + "_"):
            parsed_head, text = HEAD_ALIASES[alias], text[len(alias):].lstrip("_")
            break
    parsed_backbone = _match_backbone(text, names) if text else DEFAULT_BACKBONE
    if parsed_backbone is not None and parsed_head is None:
        tokens = text[len(parsed_backbone):].strip("_").split("_")
        joined = ["_".join(tokens[i:i + 2]) for i in range(len(tokens))] + tokens
        parsed_head = next((HEAD_ALIASES[t] for t in joined if t in HEAD_ALIASES), None)
    chosen_backbone = backbone or parsed_backbone
    if chosen_backbone is None:
        raise ModelError(f"cannot tell the backbone from variant name {variant!r}: it should start with "
                         f"a torchvision backbone or head name, e.g. {', '.join(VARIANT_EXAMPLES)}; "
                         f"or set 'backbone' in the variant's settings")
    check_backbone_name(chosen_backbone)
    chosen_head = head or parsed_head or DEFAULT_HEAD
    if chosen_head not in HEADS:
        chosen_head = HEAD_ALIASES.get(chosen_head.lower(), chosen_head)
    if chosen_head not in HEADS:
        raise ModelError(f"unknown head {head!r}; valid heads: {', '.join(HEADS)}")
    return chosen_backbone, chosen_head


def _faster_rcnn_parts(info: BackboneInfo) -> dict[str, Any]:
    """Anchor generator and RoI pooler matching the backbone's feature maps.

    ResNet FPNs have five maps (strides 4-64) and torchvision's defaults fit. MobileNetV3 has three
    coarse maps, so every map gets every size (torchvision's fasterrcnn_mobilenet_v3_large_fpn).
    ``.features`` FPNs have strides 8-64: two sizes per map (4x and 8x the stride) cover 32-512
    with the same anchor count per location, which the shared RPN head requires.
    """
    if info.kind == "resnet":
        return {}
    ratios = (0.5, 1.0, 2.0)
    if info.kind == "mobilenet":
        sizes: tuple[tuple[int, ...], ...] = ((32, 64, 128, 256, 512),) * len(info.feature_names)
    else:
        sizes = tuple((32 * 2 ** i, 64 * 2 ** i) for i in range(len(info.feature_names)))
    pooled = [n for n in info.feature_names if n != "pool"]
    return {"rpn_anchor_generator": AnchorGenerator(sizes, (ratios,) * len(sizes)),
            "box_roi_pool": MultiScaleRoIAlign(featmap_names=pooled, output_size=7, sampling_ratio=2)}


def variant_version(variant: str) -> int:
    """2 for variant names ending in ``v2`` (torchvision's improved ResNet-50 detectors), else 1."""
    return 2 if re.search(r"(^|[_-])v2$", (variant or "").strip().lower()) else 1


def _freeze_resnet_stages(body: nn.Module, trainable_layers: int) -> None:
    """torchvision's rule (``_resnet_fpn_extractor``): only the top ``trainable_layers`` stages train."""
    train = ["layer4", "layer3", "layer2", "layer1", "conv1"][:trainable_layers]
    if trainable_layers == 5:
        train.append("bn1")
    for name, parameter in body.named_parameters():
        if all(not name.startswith(layer) for layer in train):
            parameter.requires_grad_(False)


def _torchvision_v2(spec: ModelSpec) -> nn.Module:
    """torchvision's own "_v2" detector (its BatchNorm stays trainable, as in its recipe)."""
    model = torchvision.models.get_model(spec.torchvision_model or "", weights=None, weights_backbone=None,
                                         num_classes=spec.num_classes, min_size=spec.min_size,
                                         max_size=spec.max_size)
    _freeze_resnet_stages(model.backbone.body, min(spec.trainable_layers, 5))
    return model


def assemble_detector(spec: ModelSpec, weights_path: Path | None = None) -> nn.Module:
    """Build the detector for ``spec`` exactly; ``weights_path`` optionally supplies ImageNet
    backbone weights (only meaningful with ``spec.pretrained_backbone``)."""
    if spec.torchvision_model and spec.torchvision_model.endswith("_v2"):
        return _torchvision_v2(spec)
    backbone, info = build_backbone(spec.backbone, spec.head, pretrained=spec.pretrained_backbone,
                                    trainable_layers=spec.trainable_layers, weights_path=weights_path)
    common = {"min_size": spec.min_size, "max_size": spec.max_size}
    if spec.head == "faster_rcnn":
        return FasterRCNN(backbone, num_classes=spec.num_classes, **_faster_rcnn_parts(info), **common)
    if len(info.feature_names) != 5:  # the default one-stage anchor generators expect P3-P7
        raise ModelError(f"{spec.backbone} gives {len(info.feature_names)} feature maps; {spec.head} needs 5")
    if spec.head == "retinanet":
        return RetinaNet(backbone, num_classes=spec.num_classes, **common)
    return FCOS(backbone, num_classes=spec.num_classes, **common)


def check_pretrained(value: str) -> str:
    """``imagenet``, ``coco``, ``none`` or an existing file (a ModelError otherwise)."""
    if value in PRETRAINED_MODES:
        return value
    if not Path(value).expanduser().is_file():
        raise ModelError(f"model.pretrained: {value!r} is neither {', '.join(PRETRAINED_MODES)} nor an existing "
                         f"weights file")
    return value


def build_detector(spec: ModelSpec, *, pretrained: str = "none", weights_dir: Path | None = None,
                   pretrained_model_path: Path | None = None, version: int = 1,
                   progress: bool = True) -> tuple[nn.Module, ModelSpec]:
    """Build a detector for training from ``pretrained`` weights (see the module docstring).

    ImageNet and COCO files are looked up in ``weights_dir``, ``$OBDB_WEIGHTS_DIR`` and the torch
    hub cache, else downloaded once (:mod:`obdb.models.hub`); a file that cannot be had is an
    error, never a silent random init. ``version`` 2 picks torchvision's "_v2" COCO detectors.
    Returns the model and ``spec`` with ``pretrained_backbone``/``torchvision_model`` set.
    ``pretrained_model_path`` (a user's earlier obdb model or raw state_dict) is loaded on top,
    tensor by tensor where name and shape match, so a model trained for other classes still seeds
    backbone, FPN and RPN.
    """
    check_backbone_name(spec.backbone)
    check_pretrained(pretrained)
    spec = dataclasses.replace(spec, pretrained_backbone=pretrained != "none", torchvision_model=None)
    if pretrained == "coco":
        name = hub.coco_model_name(spec.backbone, spec.head, version)
        path = hub.coco_weights(name, weights_dir, progress=progress)
        spec = dataclasses.replace(spec, torchvision_model=name)
        model = assemble_detector(spec)
        load_coco_weights(model, path, spec.head, name)
    elif pretrained == "none":
        model = assemble_detector(spec)
    else:
        path = (hub.imagenet_weights(spec.backbone, weights_dir, progress=progress) if pretrained == "imagenet"
                else Path(pretrained).expanduser())
        model = assemble_detector(spec, weights_path=path)
    if pretrained_model_path is not None:
        load_partial_state(model, pretrained_model_path)
    return model, spec


def prepare_weights(spec: ModelSpec, pretrained: str, *, weights_dir: Path | None = None, version: int = 1,
                    progress: bool = True) -> Path | None:
    """Make sure the weights ``build_detector`` will need are local (downloading them now), so a
    run fails on a missing file before it writes anything. Returns the file (None for ``none``)."""
    check_backbone_name(spec.backbone)
    if check_pretrained(pretrained) == "none":
        return None
    if pretrained == "coco":
        return hub.coco_weights(hub.coco_model_name(spec.backbone, spec.head, version), weights_dir,
                                progress=progress)
    if pretrained == "imagenet":
        return hub.imagenet_weights(spec.backbone, weights_dir, progress=progress)
    return Path(pretrained).expanduser()
