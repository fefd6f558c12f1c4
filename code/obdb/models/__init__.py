"""Detector construction, offline weight lookup and safe model files (see the submodules)."""
from .backbones import HEADS, freeze_batchnorm, known_backbones
from .detectors import ModelSpec, build_detector, resolve_variant
from .io import load_model, read_header, save_model
from .weights import ENV_WEIGHTS_DIR, ModelError, find_backbone_weights, weight_file_names

__all__ = ["ENV_WEIGHTS_DIR", "HEADS", "ModelError", "ModelSpec", "build_detector", "find_backbone_weights",
           "freeze_batchnorm", "known_backbones", "load_model", "read_header", "resolve_variant",
           "save_model", "weight_file_names"]
