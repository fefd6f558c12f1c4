"""Detector construction, pretrained weights (lookup and download) and safe model files (see the submodules)."""
from .backbones import HEADS, freeze_batchnorm, known_backbones
from .detectors import (PRETRAINED_MODES, ModelSpec, build_detector, check_pretrained, prepare_weights,
                        resolve_variant, variant_version)
from .hub import (ENV_URL_BASE, ENV_WEIGHTS_DIR, WeightsUnavailable, downloads_forbidden, imagenet_file_names,
                  imagenet_weights)
from .io import load_model, read_header, save_model
from .weights import ModelError

#: the ImageNet file names torchvision uses for a backbone (kept under its old name)
weight_file_names = imagenet_file_names

__all__ = ["ENV_URL_BASE", "ENV_WEIGHTS_DIR", "HEADS", "ModelError", "ModelSpec", "PRETRAINED_MODES",
           "WeightsUnavailable", "build_detector", "check_pretrained", "downloads_forbidden", "freeze_batchnorm",
           "imagenet_file_names", "imagenet_weights", "known_backbones", "load_model", "prepare_weights",
           "read_header", "resolve_variant", "save_model", "variant_version", "weight_file_names"]
