"""Pretrained weight files: torchvision's names and URLs, found in local folders or downloaded once.

Every file is the one torchvision itself would download (``<name>-<sha256 prefix>.pth`` from its
weights enums), so an existing torch hub cache works unchanged and a file copied by hand from a
connected machine is recognised by its name. Lookup order: ``model.weights_dir``,
``$OBDB_WEIGHTS_DIR``, the torch hub cache (``torch.hub.get_dir()/checkpoints``; in the container
``TORCH_HOME=/weights/torch``, on the ``/weights`` volume). Missing files are downloaded once with
torch's own ``download_url_to_file``: a temporary file renamed into place only when complete and
its sha256 starts with the hash in the file name, so an interrupted or forged download leaves no
file behind. ``$OBDB_WEIGHTS_URL_BASE`` replaces ``https://download.pytorch.org/models/`` (a mirror
inside an air-gapped network; the tests' local server).

Commands that only read a saved model (``test_model.py``, ``auto_annotate.py``, ``obdb review``)
run inside :func:`downloads_forbidden`: for them a missing file is an error, never a network call.
"""
from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import urlparse

import torch
import torchvision

from .weights import ModelError

log = logging.getLogger(__name__)

ENV_WEIGHTS_DIR = "OBDB_WEIGHTS_DIR"
ENV_URL_BASE = "OBDB_WEIGHTS_URL_BASE"
TORCHVISION_URL_BASE = "https://download.pytorch.org/models/"
IMAGENET, COCO = "imagenet", "coco"

#: ``(backbone, head, version) -> torchvision detection model`` with COCO weights (version 2: the
#: "_v2" models of torchvision's improved recipe; chosen by a variant name ending in ``_v2``).
COCO_MODELS: dict[tuple[str, str, int], str] = {
    ("resnet50", "faster_rcnn", 1): "fasterrcnn_resnet50_fpn",
    ("resnet50", "faster_rcnn", 2): "fasterrcnn_resnet50_fpn_v2",
    ("resnet50", "retinanet", 1): "retinanet_resnet50_fpn",
    ("resnet50", "retinanet", 2): "retinanet_resnet50_fpn_v2",
    ("resnet50", "fcos", 1): "fcos_resnet50_fpn",
    ("mobilenet_v3_large", "faster_rcnn", 1): "fasterrcnn_mobilenet_v3_large_fpn",
}


class WeightsUnavailable(ModelError):
    """A weights file that is neither in a local folder nor downloadable (exit 2: the user can
    provide it)."""


def hash_prefix(file_name: str) -> str | None:
    """The sha256 prefix torch.hub checks (``check_hash=True``): the hex after the last dash."""
    found = torch.hub.HASH_REGEX.search(file_name)
    return found.group(1) if found and found.group(1) else None


@dataclass(frozen=True)
class WeightsFile:
    """One downloadable file: ``name`` is the torchvision model it belongs to (a backbone such as
    ``resnet18`` for ImageNet, a detector such as ``fasterrcnn_resnet50_fpn`` for COCO)."""

    name: str
    kind: str
    file_name: str
    url: str

    @property
    def hash_prefix(self) -> str | None:
        return hash_prefix(self.file_name)

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"


#: Entries here win over torchvision's enums: a mirror with its own files, or the tests' small ones.
REGISTRY: dict[tuple[str, str], WeightsFile] = {}

_downloads_forbidden: str | None = None


@contextlib.contextmanager
def downloads_forbidden(command: str) -> Iterator[None]:
    """No weights are downloaded inside this block; ``command`` names who said so in the error."""
    global _downloads_forbidden
    before, _downloads_forbidden = _downloads_forbidden, command
    try:
        yield
    finally:
        _downloads_forbidden = before


def coco_model_name(backbone: str, head: str, version: int = 1) -> str:
    """The torchvision detector with COCO weights for this variant, or a ModelError listing them."""
    name = COCO_MODELS.get((backbone, head, version))
    if name is None:
        where = ", ".join(f"{b} {h}" + (" v2" if v == 2 else "") for b, h, v in COCO_MODELS)
        raise ModelError(f"model.pretrained 'coco': torchvision has no COCO weights for a {backbone} {head}"
                         f"{' v2' if version == 2 else ''} detector; they exist for: {where} (use 'imagenet' "
                         f"for this variant)")
    return name


def weights_file(name: str, kind: str) -> WeightsFile:
    """The file torchvision downloads for model ``name`` (``kind``: imagenet backbone or coco detector)."""
    if (kind, name) in REGISTRY:
        return REGISTRY[(kind, name)]
    try:
        enum = torchvision.models.get_model_weights(name)
        member = enum.COCO_V1 if kind == COCO else enum.DEFAULT
    except (ValueError, KeyError, AttributeError) as err:
        raise ModelError(f"torchvision has no {kind} weights for {name!r}") from err
    return WeightsFile(name, kind, os.path.basename(urlparse(member.url).path), member.url)


def imagenet_file_names(backbone: str) -> list[str]:
    """Names an ImageNet file for ``backbone`` may have locally, best first: the registry's or
    torchvision's DEFAULT and IMAGENET1K_V1 names, then a hand-written ``<backbone>.pth``/``.pt``."""
    names: list[str] = []
    try:
        names.append(weights_file(backbone, IMAGENET).file_name)
    except ModelError:
        pass
    try:
        enum = torchvision.models.get_model_weights(backbone)
        v1 = getattr(enum, "IMAGENET1K_V1", None)
        if v1 is not None:
            names.append(os.path.basename(urlparse(v1.url).path))
    except (ValueError, KeyError, AttributeError):
        pass
    names += [f"{backbone}.pth", f"{backbone}.pt"]
    return list(dict.fromkeys(names))


def hub_cache_dir() -> Path:
    """torch's own download folder (honours ``$TORCH_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def search_dirs(weights_dir: str | os.PathLike[str] | None = None) -> list[Path]:
    """Folders searched, in order: ``weights_dir``, ``$OBDB_WEIGHTS_DIR`` (each with the torch hub
    layouts ``checkpoints/`` and ``hub/checkpoints/`` below it, so a copied ``TORCH_HOME`` just
    works), then the torch hub cache."""
    dirs: list[Path] = []
    for root in (weights_dir, os.environ.get(ENV_WEIGHTS_DIR) or None):
        if root:
            base = Path(root).expanduser()
            dirs += [base, base / "checkpoints", base / "hub" / "checkpoints"]
    dirs.append(hub_cache_dir())
    return list(dict.fromkeys(dirs))


def url_for(entry: WeightsFile) -> str:
    """The entry's URL with ``$OBDB_WEIGHTS_URL_BASE`` in place of torchvision's download base."""
    base = os.environ.get(ENV_URL_BASE)
    if base and entry.url.startswith(TORCHVISION_URL_BASE):
        return base.rstrip("/") + "/" + entry.url[len(TORCHVISION_URL_BASE):]
    return entry.url


def find_local(names: Iterable[str], weights_dir: str | os.PathLike[str] | None = None) -> Path | None:
    names = list(names)
    for folder in search_dirs(weights_dir):
        for name in names:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def offline_hint(entry: WeightsFile) -> str:
    named = entry.name + (" --pretrained coco" if entry.kind == COCO else "")
    return (f"to provide it offline, run `obdb weights fetch -f <settings.json>` (or `obdb weights fetch "
            f"{named}`) on a machine with internet and copy {entry.file_name} into model.weights_dir or "
            f"${ENV_WEIGHTS_DIR}")


def download(entry: WeightsFile, dest_dir: str | os.PathLike[str] | None = None, *, progress: bool = True) -> Path:
    """Download ``entry`` into ``dest_dir`` (default: the torch hub cache) with torch.hub's
    hash check; any failure is a :class:`WeightsUnavailable` naming the file, URL and the way out."""
    url = url_for(entry)
    folder = Path(dest_dir) if dest_dir is not None else hub_cache_dir()
    target = folder / entry.file_name
    log.info("downloading %s weights for %s: %s -> %s", entry.kind, entry.name, url, target)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(target), hash_prefix=entry.hash_prefix, progress=progress)
    except Exception as err:  # URLError, HTTPError, hash mismatch (RuntimeError), OSError, ...
        reason = " ".join(str(err).split())[:300]
        raise WeightsUnavailable(f"cannot download {entry.file_name} from {url} ({type(err).__name__}: {reason}); "
                                 f"{offline_hint(entry)}") from err
    return target


def ensure(entry: WeightsFile, weights_dir: str | os.PathLike[str] | None = None, *,
           names: Iterable[str] = (), progress: bool = True) -> Path:
    """The local file for ``entry`` (also under any of ``names``), downloaded once when missing."""
    found = find_local([entry.file_name, *names], weights_dir)
    if found is not None:
        log.info("%s weights for %s: %s", entry.kind, entry.name, found)
        return found
    if _downloads_forbidden:
        raise WeightsUnavailable(f"{entry.file_name} ({entry.kind} weights for {entry.name}) is not in "
                                 f"{', '.join(str(d) for d in search_dirs(weights_dir))} and {_downloads_forbidden} "
                                 f"never downloads; {offline_hint(entry)}")
    return download(entry, progress=progress)


def imagenet_weights(backbone: str, weights_dir: str | os.PathLike[str] | None = None, *,
                     progress: bool = True) -> Path:
    """ImageNet weights for ``backbone``: local file, else downloaded into the hub cache."""
    return ensure(weights_file(backbone, IMAGENET), weights_dir, names=imagenet_file_names(backbone),
                  progress=progress)


def coco_weights(model_name: str, weights_dir: str | os.PathLike[str] | None = None, *,
                 progress: bool = True) -> Path:
    return ensure(weights_file(model_name, COCO), weights_dir, progress=progress)


def entry_for(backbone: str, head: str, pretrained: str, version: int = 1) -> WeightsFile:
    """The file a detector trained from ``pretrained`` (``imagenet``/``coco``) starts from."""
    if pretrained == COCO:
        return weights_file(coco_model_name(backbone, head, version), COCO)
    return weights_file(backbone, IMAGENET)


def fetch(entry: WeightsFile, dest_dir: str | os.PathLike[str], *, weights_dir: str | os.PathLike[str] | None = None,
          progress: bool = True) -> tuple[Path, str]:
    """Put ``entry`` into ``dest_dir`` (for ``obdb weights fetch``): kept when there, copied when
    another local folder has it, else downloaded. Returns the file and what was done."""
    from ..fileio import write_with

    target = Path(dest_dir) / entry.file_name
    if target.is_file():
        return target, "present"
    found = find_local([entry.file_name], weights_dir)
    if found is not None:
        write_with(target, lambda tmp: shutil.copyfile(found, tmp))
        return target, f"copied from {found}"
    return download(entry, dest_dir, progress=progress), f"downloaded from {url_for(entry)}"


def served_by(file_name: str) -> list[str]:
    """Which models a cached file serves: ImageNet backbones and COCO detectors whose torchvision
    file (or the registry's) has this name."""
    served = [f"coco: {' '.join(str(p) for p in key[:2])}{' v2' if key[2] == 2 else ''} ({model})"
              for key, model in COCO_MODELS.items() if _file_name(model, COCO) == file_name]
    from .backbones import known_backbones

    served += [f"imagenet: {b}" for b in known_backbones() if file_name in imagenet_file_names(b)[:2]]
    return served


def _file_name(name: str, kind: str) -> str | None:
    try:
        return weights_file(name, kind).file_name
    except ModelError:
        return None

