"""Loading weight files into models: ImageNet backbones, COCO detectors, users' state_dicts.

Where the files come from (local folders, torchvision's download) is :mod:`obdb.models.hub`.

Every file is read with ``torch.load(weights_only=True)``: a pickled model can run arbitrary code
when loaded, and model files travel between machines and people, so they are refused outright.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from obdb.errors import UserError

log = logging.getLogger(__name__)

MODEL_FORMAT = "obdb-model"
MIN_BACKBONE_MATCH = 0.9
MIN_PARTIAL_BODY_MATCH = 0.5
BODY_PREFIX = "backbone.body."

# Keys of wrapper dicts that training scripts commonly put a state_dict under.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


class ModelError(UserError, ValueError):
    """Any user-facing model problem (unknown backbone/head, bad or foreign weights file, wrong
    architecture). A ``ValueError`` so settings validation code can treat it like other bad input."""


def load_weights_file(path: str | os.PathLike[str], map_location: Any = "cpu") -> Any:
    """``torch.load`` with ``weights_only=True``; any failure becomes a ModelError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise ModelError(f"weights file {path} does not exist")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # UnpicklingError, RuntimeError (not a zip/pickle), EOFError, ...
        raise ModelError(f"{path} is not a state_dict file (pickled models are refused; save "
                         f"model.state_dict() instead): {type(exc).__name__}: {exc}") from exc


def extract_state_dict(obj: Any, path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The tensor mapping inside a loaded file: our own model format, a raw state_dict, or a
    training checkpoint wrapping one under ``state_dict`` / ``model_state_dict`` / ``model``.
    A ``module.`` prefix (DataParallel) is stripped."""
    if isinstance(obj, Mapping) and obj.get("format") == MODEL_FORMAT:
        obj = obj.get("state_dict")
    elif isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping):
        raise ModelError(f"{path} is not a state_dict file: it holds a {type(obj).__name__}")
    state = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not state:
        raise ModelError(f"{path} is not a state_dict file: it holds no tensors")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def matching_tensors(module: nn.Module, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Entries of ``state`` whose name and shape both match ``module`` (others cannot be loaded)."""
    own = module.state_dict()
    return {k: v for k, v in state.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}


def load_backbone_weights(model: nn.Module, path: Path) -> int:
    """Load ImageNet weights into the classification ``model`` (before its features are extracted).

    ``strict=False`` tolerates files with or without ``num_batches_tracked`` and similar noise, but
    fewer than 90 % matching keys means the file is for another architecture, which would silently
    leave most of the backbone random, so that is an error.
    """
    state = extract_state_dict(load_weights_file(path), path)
    wanted = [k for k in model.state_dict() if not k.endswith("num_batches_tracked")]
    matched = matching_tensors(model, state)
    hits = sum(1 for k in wanted if k in matched)
    if not wanted or hits / len(wanted) < MIN_BACKBONE_MATCH:
        raise ModelError(f"{path} does not fit a {type(model).__name__} backbone: only {hits} of "
                         f"{len(wanted)} weights match by name and shape (need {MIN_BACKBONE_MATCH:.0%})")
    model.load_state_dict(matched, strict=False)
    log.info("loaded %d/%d backbone tensors from %s", hits, len(wanted), path)
    return hits


def load_partial_state(model: nn.Module, path: str | os.PathLike[str]) -> int:
    """Initialise ``model`` from a user's earlier model file, loading only tensors that match by
    name and shape, so a model trained on another class list still gives its backbone, FPN and
    RPN while the class-dependent head layers keep their fresh init. Returns the count loaded."""
    path = Path(path)
    state = extract_state_dict(load_weights_file(path), path)
    matched = matching_tensors(model, state)
    own = model.state_dict()
    total = len(own)
    # Head layers may legitimately differ, but a backbone that barely matches means the file is
    # for another backbone: training would silently start (almost) from scratch.
    body = [k for k in own if k.startswith(BODY_PREFIX) and not k.endswith("num_batches_tracked")]
    body_hits = sum(1 for k in body if k in matched)
    if not matched or (body and body_hits / len(body) < MIN_PARTIAL_BODY_MATCH):
        raise ModelError(f"{path} does not fit this model: {len(matched)} of its {len(state)} tensors and "
                         f"{body_hits} of {len(body)} backbone tensors match by name and shape (is it a "
                         f"model with another backbone?)")
    model.load_state_dict(matched, strict=False)
    skipped = len(state) - len(matched)
    log.info("pretrained model %s: loaded %d of %d model tensors (%d in the file skipped: name or "
             "shape differs)", path, len(matched), total, skipped)
    return len(matched)


#: Parameters that depend on the class list, per head: re-initialised when COCO weights are loaded.
CLASS_LAYERS = {"faster_rcnn": ("roi_heads.box_predictor.",),
                "retinanet": ("head.classification_head.cls_logits.",),
                "fcos": ("head.classification_head.cls_logits.",)}


def load_coco_weights(model: nn.Module, path: Path, head: str, name: str) -> int:
    """Load a whole COCO detector into ``model`` except its class-specific layers, which keep their
    fresh init for the user's classes. Everything else must match exactly: a file that leaves part
    of the detector random is for another architecture, an error rather than a quiet half-load."""
    state = extract_state_dict(load_weights_file(path), path)
    prefixes = CLASS_LAYERS[head]
    own = model.state_dict()
    wanted = [k for k in own if not k.startswith(prefixes) and not k.endswith("num_batches_tracked")]
    keep = {k: v for k, v in matching_tensors(model, state).items() if not k.startswith(prefixes)}
    missing = [k for k in wanted if k not in keep]
    if missing:
        raise ModelError(f"{path} does not fit a {name} detector: {len(missing)} of its {len(wanted)} tensors are "
                         f"missing or of another shape, e.g. {', '.join(missing[:3])}")
    model.load_state_dict(keep, strict=False)
    log.info("COCO weights %s: loaded %d tensors; class layers (%s) start fresh for this class list", path,
             len(keep), ", ".join(p.rstrip(".") for p in prefixes))
    return len(keep)
