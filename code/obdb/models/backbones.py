"""Backbone + FPN construction for every supported torchvision classification model.

Three builders, chosen by family:

* ResNet family (resnet*, resnext*, wide_resnet*): torchvision's own ``_resnet_fpn_extractor``
  exactly as ``fasterrcnn_resnet50_fpn`` (layers 1-4) and ``retinanet/fcos_resnet50_fpn``
  (layers 2-4 + P6/P7) use it, so published recipes carry over.
* ``mobilenet_v3_large`` with Faster R-CNN: torchvision's ``_mobilenet_extractor(fpn=True)``,
  as in ``fasterrcnn_mobilenet_v3_large_fpn``.
* Anything else with a ``.features`` Sequential (efficientnet*, convnext*, mobilenet_v2/v3,
  densenet*, vgg*, ...): the strides of ``features`` are measured with one dummy forward, and the
  last layer of each of the last three stride levels >= 8 feeds an FPN (like C3-C5).

Every backbone gives 256-channel maps and works with all three heads. Models without a usable
``.features`` (vit, regnet, shufflenet, mnasnet, googlenet, inception) and channels-last ones
(swin, maxvit) are refused with a ModelError.

Normalisation: with ImageNet weights every BatchNorm2d becomes FrozenBatchNorm2d (torchvision's
fine-tuning default; batch statistics of small detection batches are too noisy to train) and only
``trainable_layers`` stages train. From random init FrozenBatchNorm2d would freeze the identity
statistics and Faster R-CNN diverges, so the model's own trainable norm stays and all layers train.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn
from torchvision.models.detection.backbone_utils import (BackboneWithFPN, _mobilenet_extractor,
                                                         _resnet_fpn_extractor)
from torchvision.ops import misc as misc_ops
from torchvision.ops.feature_pyramid_network import ExtraFPNBlock, LastLevelMaxPool, LastLevelP6P7

from .weights import ModelError, load_backbone_weights

FPN_CHANNELS = 256
HEADS = ("faster_rcnn", "retinanet", "fcos")
RESNET_PREFIXES = ("resnet", "resnext", "wide_resnet")
# Families whose torchvision model has an NCHW ``.features`` Sequential (checked again at build).
FEATURES_PREFIXES = ("mobilenet_v2", "mobilenet_v3", "efficientnet", "convnext", "densenet", "vgg")
# Channels-last or no ``.features``: listed so the error can say why instead of "unknown".
UNSUPPORTED_PREFIXES = ("swin", "maxvit", "vit", "regnet", "shufflenet", "mnasnet", "googlenet",
                        "inception", "alexnet", "squeezenet")
# Non-square probe so a channels-last (N, H, W, C) output cannot pass for (N, C, H, W).
_PROBE_SIZE = (192, 256)


@dataclass(frozen=True)
class BackboneInfo:
    """What the detector builder needs to know about a built backbone."""

    kind: str                       # "resnet" | "mobilenet" | "features"
    feature_names: tuple[str, ...]  # keys of the FPN output dict, finest first


def known_backbones() -> list[str]:
    """Backbone names accepted by :func:`build_backbone` (torchvision classification models)."""
    names = torchvision.models.list_models(module=torchvision.models)
    return sorted(n for n in names if n.startswith(RESNET_PREFIXES + FEATURES_PREFIXES))


def check_backbone_name(name: str) -> None:
    """Raise ModelError with a reason (unsupported family / unknown name) unless ``name`` is usable."""
    if name in known_backbones():
        return
    if name.startswith(UNSUPPORTED_PREFIXES):
        raise ModelError(f"backbone {name!r} is not supported: it has no channels-first `.features` "
                         f"stack to build an FPN on; use a ResNet, MobileNet, EfficientNet, ConvNeXt, "
                         f"DenseNet or VGG model")
    examples = ", ".join(["resnet18", "resnet50", "resnext50_32x4d", "mobilenet_v3_large",
                          "efficientnet_b0", "convnext_tiny"])
    raise ModelError(f"unknown backbone {name!r}; examples of valid names: {examples}")


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d below ``module`` with FrozenBatchNorm2d holding the same statistics
    and eps (MobileNet/EfficientNet use eps=1e-3, which torchvision's own swap would lose)."""
    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            frozen = misc_ops.FrozenBatchNorm2d(child.num_features, eps=child.eps)
            with torch.no_grad():
                if child.weight is not None:
                    frozen.weight.copy_(child.weight)
                    frozen.bias.copy_(child.bias)
                if child.running_mean is not None:
                    frozen.running_mean.copy_(child.running_mean)
                    frozen.running_var.copy_(child.running_var)
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def _stride(size: int, out: int) -> int | None:
    """Power-of-two stride from input/output size, or None if the ratio is not near one."""
    if out <= 0:
        return None
    ratio = size / out
    stride = 2 ** round(math.log2(ratio))
    return stride if abs(ratio / stride - 1) < 0.15 else None


def probe_feature_levels(features: nn.Sequential, name: str) -> list[tuple[int, int, int]]:
    """``(index, stride, channels)`` of the last layer at each stride level of ``features``.

    Measured by a dummy forward (eval mode, so BatchNorm statistics are untouched) because the
    stride layout differs per family and torchvision does not record it.
    """
    was_training = features.training
    features.eval()
    x = torch.zeros(1, 3, *_PROBE_SIZE)
    layers: list[tuple[int, int, int]] = []
    try:
        with torch.no_grad():
            for index, layer in enumerate(features):
                x = layer(x)
                strides = {_stride(s, o) for s, o in zip(_PROBE_SIZE, x.shape[-2:])} if x.dim() == 4 else {None}
                if len(strides) != 1 or None in strides:
                    raise ModelError(f"backbone {name!r}: features[{index}] gives shape {tuple(x.shape)}, "
                                     f"not a channels-first feature map; it cannot feed an FPN")
                layers.append((index, strides.pop(), int(x.shape[1])))
    finally:
        features.train(was_training)
    levels: dict[int, tuple[int, int, int]] = {}
    for entry in layers:
        levels[entry[1]] = entry  # later layers of the same stride overwrite earlier ones
    return sorted(levels.values(), key=lambda e: e[1])


def _features_fpn(model: nn.Module, name: str, trainable_layers: int,
                  extra_blocks: ExtraFPNBlock) -> BackboneWithFPN:
    features = getattr(model, "features", None)
    if not isinstance(features, nn.Sequential):
        raise ModelError(f"backbone {name!r} has no `.features` Sequential to build an FPN on")
    levels = probe_feature_levels(features, name)
    chosen = [lvl for lvl in levels if lvl[1] >= 8][-3:]
    if len(chosen) < 3:
        raise ModelError(f"backbone {name!r} has only {len(chosen)} feature levels with stride >= 8 "
                         f"(strides {[lvl[1] for lvl in levels]}); an FPN needs three")
    # Stage k starts right after the last layer of stage k-1; train the last `trainable_layers`.
    starts = [0] + [lvl[0] + 1 for lvl in levels[:-1]]
    if trainable_layers < len(starts):
        freeze_before = chosen[-1][0] + 1 if trainable_layers == 0 else starts[len(starts) - trainable_layers]
        for layer in features[:freeze_before]:
            for parameter in layer.parameters():
                parameter.requires_grad_(False)
    child_names = [child_name for child_name, _ in features.named_children()]  # densenet names them
    return_layers = {child_names[index]: str(k) for k, (index, _, _) in enumerate(chosen)}
    return BackboneWithFPN(features, return_layers, [ch for _, _, ch in chosen], FPN_CHANNELS,
                          extra_blocks=extra_blocks)


def build_backbone(name: str, head: str, *, pretrained: bool, trainable_layers: int,
                   weights_path: Path | None = None) -> tuple[BackboneWithFPN, BackboneInfo]:
    """Backbone with FPN for ``head``.

    ``pretrained`` selects the fine-tuning layout (frozen BatchNorm, ``trainable_layers``); it is
    separate from ``weights_path`` because a saved model is rebuilt in that layout without the
    ImageNet file, its own state_dict supplying the weights.
    """
    check_backbone_name(name)
    if head not in HEADS:
        raise ModelError(f"unknown head {head!r}; valid heads: {', '.join(HEADS)}")
    if trainable_layers < 0:
        raise ModelError(f"trainable_layers must be >= 0, got {trainable_layers}")
    model = torchvision.models.get_model(name, weights=None)
    if weights_path is not None:
        load_backbone_weights(model, weights_path)
    if pretrained:
        freeze_batchnorm(model)
    else:
        trainable_layers = 1000  # random init: every stage trains
    one_stage = head != "faster_rcnn"
    if name.startswith(RESNET_PREFIXES):
        fpn = _resnet_fpn_extractor(model, min(trainable_layers, 5),  # type: ignore[arg-type]
                                    returned_layers=[2, 3, 4] if one_stage else [1, 2, 3, 4],
                                    extra_blocks=LastLevelP6P7(FPN_CHANNELS, FPN_CHANNELS) if one_stage else None)
        names = ("0", "1", "2", "p6", "p7") if one_stage else ("0", "1", "2", "3", "pool")
        return fpn, BackboneInfo("resnet", names)
    if name == "mobilenet_v3_large" and not one_stage:
        stages = 2 + sum(1 for b in model.features if getattr(b, "_is_cn", False))  # type: ignore[union-attr]
        fpn = _mobilenet_extractor(model, True, min(trainable_layers, stages))  # type: ignore[arg-type]
        return fpn, BackboneInfo("mobilenet", ("0", "1", "pool"))
    extra: ExtraFPNBlock = LastLevelP6P7(FPN_CHANNELS, FPN_CHANNELS) if one_stage else LastLevelMaxPool()
    fpn = _features_fpn(model, name, trainable_layers, extra)
    names = ("0", "1", "2", "p6", "p7") if one_stage else ("0", "1", "2", "pool")
    return fpn, BackboneInfo("features", names)
