"""``obdb weights fetch|list``: pretrained weight files ahead of time, for machines without internet.

``fetch`` downloads (with torchvision's names and hash check, see :mod:`obdb.models.hub`) what a
settings file will need (``-f``), or the ImageNet/COCO files of named variants, into ``--dir``
(default: ``model.weights_dir``, else ``$OBDB_WEIGHTS_DIR``, else the torch hub cache). Copy that
folder to the air-gapped machine and point ``model.weights_dir`` or ``$OBDB_WEIGHTS_DIR`` at it.
``list`` shows the files in every folder a run searches, with their sha256, whether it matches the
hash in the file name, and which variants each serves.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from .common import EXIT_OK, EXIT_USAGE, add_common, guarded, setup_logging


def build_parser(prog: str = "obdb weights") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Pretrained weight files: fetch ahead of time, list "
                                     "what is cached.")
    sub = parser.add_subparsers(dest="action", required=True)
    fetch = sub.add_parser("fetch", help="download the weight files a settings file or named variants need")
    fetch.add_argument("names", nargs="*", metavar="VARIANT",
                       help="variant or backbone names (e.g. resnet50 retinanet_resnet18 fasterrcnn_resnet50_fpn_v2)")
    fetch.add_argument("-f", "--settings", help="settings JSON file: every file its run will need")
    fetch.add_argument("--pretrained", choices=["imagenet", "coco"], default=None,
                       help="for named variants (default imagenet; with -f: the file's model.pretrained)")
    fetch.add_argument("--dir", type=Path, help="where the files go (default: model.weights_dir, else "
                       "$OBDB_WEIGHTS_DIR, else the torch hub cache)")
    add_common(fetch)
    listing = sub.add_parser("list", help="show cached weight files with hashes and the variants they serve")
    listing.add_argument("-f", "--settings", help="settings JSON file (its model.weights_dir is searched first)")
    listing.add_argument("--dir", type=Path, help="a folder to search first")
    add_common(listing)
    return parser


def needed(settings: Any, pretrained: str | None = None) -> list[Any]:
    """Every weights file a run of ``settings`` downloads: each variant's, and the t-SNE split's."""
    from .. import pipeline
    from ..models import variant_version
    from ..models.hub import IMAGENET, entry_for, weights_file

    mode = pretrained or settings.model.pretrained
    entries = []
    if mode in ("imagenet", "coco"):
        for variant in settings.variants:
            spec = pipeline.model_spec(settings, variant, 2)
            entries.append(entry_for(spec.backbone, spec.head, mode, variant_version(variant)))
    tsne = settings.split.tsne
    if settings.split.method == "tsne" and tsne.features == "backbone" and mode != "none":
        entries.append(weights_file(tsne.backbone, IMAGENET))
    return list({e.key: e for e in entries}.values())


def named(names: Sequence[str], pretrained: str) -> list[Any]:
    from ..models import resolve_variant, variant_version
    from ..models.hub import entry_for

    entries = []
    for name in names:
        backbone, head = resolve_variant(name)
        entries.append(entry_for(backbone, head, pretrained, variant_version(name)))
    return list({e.key: e for e in entries}.values())


def fetch(args: argparse.Namespace) -> int:
    from ..models.hub import ENV_WEIGHTS_DIR, fetch as fetch_one, hub_cache_dir

    settings = None
    if args.settings:
        from ..settings import load_settings

        settings = load_settings(args.settings, [])
    if settings is None and not args.names:
        print("error: name variants/backbones to fetch or give a settings file with -f", file=sys.stderr)
        return EXIT_USAGE
    entries = needed(settings, args.pretrained) if settings is not None else []
    entries += named(args.names, args.pretrained or "imagenet")
    weights_dir = settings.model.weights_dir if settings is not None else None
    dest = args.dir or (Path(weights_dir) if weights_dir else None) or (
        Path(os.environ[ENV_WEIGHTS_DIR]) if os.environ.get(ENV_WEIGHTS_DIR) else hub_cache_dir())
    if not entries:
        print("nothing to fetch: model.pretrained is 'none' and no split needs pretrained features")
        return EXIT_OK
    for entry in {e.key: e for e in entries}.values():
        path, action = fetch_one(entry, dest, weights_dir=weights_dir, progress=args.progress)
        print(f"{entry.kind} {entry.name}: {path} ({action})")
    print(f"copy {dest} to the machine without internet and set model.weights_dir or ${ENV_WEIGHTS_DIR} to it")
    return EXIT_OK


def list_cached(args: argparse.Namespace) -> int:
    from ..fileio import file_sha256
    from ..models.hub import hash_prefix, search_dirs, served_by

    first = args.dir
    if first is None and args.settings:
        from ..settings import load_settings

        weights_dir = load_settings(args.settings, []).model.weights_dir
        first = Path(weights_dir) if weights_dir else None
    shown = 0
    for folder in search_dirs(first):
        files = sorted(p for p in folder.glob("*.pt*") if p.is_file() and p.suffix in (".pth", ".pt"))
        if not files:
            continue
        print(f"{folder}:")
        for path in files:
            digest = file_sha256(path)
            prefix = hash_prefix(path.name)
            check = "no hash in name" if prefix is None else ("hash ok" if digest.startswith(prefix) else
                                                              "HASH MISMATCH")
            serves = ", ".join(served_by(path.name)) or "no known variant (a file given by path?)"
            print(f"  {path.name}  {path.stat().st_size / 1e6:.1f} MB  sha256 {digest[:16]}  {check}  serves: {serves}")
            shown += 1
    if not shown:
        print("no weight files in " + ", ".join(str(d) for d in search_dirs(first)))
    return EXIT_OK


def main(argv: Sequence[str] | None = None, prog: str = "obdb weights") -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.log_level)
    return guarded(lambda: fetch(args) if args.action == "fetch" else list_cached(args))
