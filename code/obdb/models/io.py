"""Model files: a state_dict plus a JSON-able header saying how to rebuild the architecture.

The original tool pickled whole ``nn.Module`` objects, which break with every refactor and can run
arbitrary code when loaded. Here a model file is a plain dict of tensors and primitives, readable
with ``torch.load(weights_only=True)``; the header (spec, class map, versions) is enough to rebuild
the model, and the class map travels with it so label indices never drift between runs.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from ..fileio import save_torch
from ..records import ClassMap
from .detectors import ModelSpec, assemble_detector
from .weights import MODEL_FORMAT, ModelError, load_weights_file

FORMAT_VERSION = 1


def _jsonable(extra: dict[str, Any] | None) -> dict[str, Any]:
    """``extra`` reduced to JSON types (unknown objects become strings), because anything else would
    make the file unreadable under ``weights_only=True``."""
    if extra is None:
        return {}
    if not isinstance(extra, dict):
        raise ModelError(f"extra must be a dict, got {type(extra).__name__}")
    return json.loads(json.dumps(extra, default=str))


def save_model(path: str | os.PathLike[str], model: nn.Module, spec: ModelSpec, class_map: ClassMap,
               extra: dict[str, Any] | None = None) -> None:
    """Atomically write ``model``'s weights with a header to rebuild it (see :func:`load_model`)."""
    if spec.num_classes != class_map.num_classes:
        raise ModelError(f"spec has {spec.num_classes} classes but the class map has {class_map.num_classes} "
                         f"(background included): {list(class_map.names)}")
    header = {"spec": spec.to_json(), "class_map": class_map.to_json(),
              "torch_version": str(torch.__version__), "torchvision_version": str(torchvision.__version__),
              "extra": _jsonable(extra)}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {"format": MODEL_FORMAT, "format_version": FORMAT_VERSION, "header": header, "state_dict": state}
    save_torch(path, payload)


def _check_payload(payload: Any, path: Path) -> dict[str, Any]:
    if not isinstance(payload, dict) or payload.get("format") != MODEL_FORMAT:
        raise ModelError(f"{path} is not an obdb model file (a raw state_dict can seed training through "
                         f"pretrained_model_path, but cannot be loaded as a model)")
    version = payload.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelError(f"{path} has model format version {version!r}; this obdb reads up to {FORMAT_VERSION}")
    header = payload.get("header")
    if not isinstance(header, dict) or "spec" not in header or "class_map" not in header:
        raise ModelError(f"{path}: model header is missing or incomplete")
    return payload


def read_header(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The header of a model file (spec, class_map, versions, extra) without building the model.
    Memory-mapped, so the tensors are not read."""
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception:  # noqa: BLE001 - load_weights_file below gives the clear error
        payload = load_weights_file(path)  # not mmap-able (legacy format) or not ours: clear error
    return _check_payload(payload, path)["header"]


def load_model(path: str | os.PathLike[str], map_location: Any = "cpu"
               ) -> tuple[nn.Module, ModelSpec, ClassMap, dict[str, Any]]:
    """Rebuild a saved model (no weight lookup: the file holds every weight) in eval mode.

    The state_dict must fit the rebuilt architecture exactly; a mismatch means the header does not
    describe these weights, reported as "wrong architecture" rather than a torch traceback.
    """
    path = Path(path)
    payload = _check_payload(load_weights_file(path, map_location=map_location), path)
    header = payload["header"]
    spec = ModelSpec.from_json(header["spec"])
    try:
        class_map = ClassMap.from_json(header["class_map"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelError(f"{path}: bad class map in header: {exc}") from exc
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise ModelError(f"{path}: model file has no state_dict")
    model = assemble_detector(spec)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        problem = " ".join(str(exc).split())
        if len(problem) > 600:
            problem = problem[:600] + " ..."
        raise ModelError(f"{path}: wrong architecture: its weights do not fit a {spec.backbone} "
                         f"{spec.head} model as its header says ({problem})") from exc
    model.to(map_location if isinstance(map_location, (str, torch.device)) else "cpu")
    model.eval()
    return model, spec, class_map, header
