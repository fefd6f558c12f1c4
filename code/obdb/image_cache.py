"""Decoded images at the size the network sees, built once and shared by every trial of a run.

Why: a search trains many short trials on the same images. Decoding full-size frames from disk
every epoch of every trial (and then letting the detector shrink them) was the original system's
data pipeline; on a GPU it starves the model. This cache decodes each image once, resizes it
exactly as torchvision's ``GeneralizedRCNNTransform`` would (bilinear, no antialias, same scale
rule: see :func:`network_size`) and stores the uint8 pixels.

Layout of one cache (``<root>/<key>/``)::

    pixels.u8    every image's uint8 C×H×W bytes, one after the other
    index.json   format, version, sizes, and per image: offset, original and cached height/width

``key`` hashes the resize rule, the training size and every record's path, file size and
modification time, so changed images or another ``model.min_size`` give a new cache and a stale
one is never read. The folder is built under a temporary name and renamed into place, so a killed
build leaves nothing that looks complete; the temporary name carries the host and process id, so
the next build removes what a killed one left (see :func:`remove_abandoned_builds`). Readers open
``pixels.u8`` as a read-only memory map: data-loader workers, later trials and later runs share the
same pages through the OS page cache (which keeps it in RAM when it fits) instead of each holding a
copy. Without a ``root`` the cache is one in-memory array (what tests and library users without an
output folder get).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm
try:
    from torchvision.io import ImageReadMode, decode_image
except ImportError:  # pragma: no cover - future torchvision without its own decoders
    ImageReadMode = decode_image = None  # type: ignore[assignment,misc]

from .fileio import host_name, process_gone, process_start, read_json, write_json
from .fullhd import crop_tensor, record_crop
from .imageio import image_size, open_rgb
from .records import ImageRecord

log = logging.getLogger(__name__)

FORMAT = "obdb-image-cache"
#: bump when the resize rule, the decoding or the file layout changes: old caches then get a new key
#: (2: EXIF orientation applied, 16-bit images scaled instead of clipped)
VERSION = 2
PIXELS = "pixels.u8"
INDEX = "index.json"


def decode_rgb(path: Path) -> Tensor:
    """Decode an image file to a uint8 ``3×H×W`` RGB tensor, as CVAT shows it (EXIF orientation
    applied, high bit depths scaled: see :mod:`obdb.imageio`).

    ``torchvision.io.decode_image`` (libjpeg-turbo / libpng, no PIL round trip) is tried first
    for 8-bit files because it is markedly faster than PIL, with the EXIF orientation applied by
    torchvision itself; anything it decodes to another depth (16-bit PNGs come back as uint16), and
    formats it cannot read (TIFF, ...), go through :func:`obdb.imageio.open_rgb`.

    torchvision 0.29 deprecates its decoders in favour of TorchCodec and warns on every call; the
    pinned version still ships them, so that one warning is silenced here instead of flooding
    logs. Should they be removed, the PIL path takes over.
    """
    with warnings.catch_warnings():
        quiet_decoder_warning()
        return _decode(path)


def quiet_decoder_warning() -> None:
    warnings.filterwarnings("ignore", message=".*image decoding.*deprecated", category=DeprecationWarning)


def _decode(path: Path) -> Tensor:
    """:func:`decode_rgb` without touching the warning filters (``catch_warnings`` is not
    thread-safe: the cache builder sets the filter once around its decoding threads)."""
    if decode_image is not None and _fast_format(path):
        try:
            image = decode_image(str(path), mode=ImageReadMode.RGB, apply_exif_orientation=True)
        except (RuntimeError, ValueError):
            image = None  # unsupported format: PIL below
        if image is not None and image.dtype == torch.uint8:
            return image
    array = np.array(open_rgb(path), dtype=np.uint8)
    return torch.from_numpy(array).permute(2, 0, 1).contiguous()


def _fast_format(path: Path) -> bool:
    """JPEG or PNG by content: the formats whose EXIF orientation torchvision applies like PIL
    (it ignores WebP's, for one), so only they take the fast path."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
    except OSError:
        return False
    return head.startswith(b"\xff\xd8\xff") or head.startswith(b"\x89PNG\r\n\x1a\n")


def network_size(height: int, width: int, min_size: int, max_size: int) -> tuple[int, int]:
    """The height and width torchvision detectors resize an image to (shorter side ``min_size``
    unless the longer one would exceed ``max_size``).

    The bounding side is set to its bound exactly, so that an image already at this size gets a
    scale of exactly 1.0 in the model's own transform and passes through it unchanged (the
    model's float32 ``floor`` can otherwise land one pixel short and resize a second time).
    """
    short, long = min(height, width), max(height, width)
    short_scale, long_scale = min_size / short, max_size / long
    if short_scale <= long_scale:  # the shorter side reaches min_size first
        new_short, new_long = min_size, min(max_size, math.floor(long * short_scale + 1e-6))
    else:
        new_short, new_long = max(1, min(min_size, math.floor(short * long_scale + 1e-6))), max_size
    return (new_short, new_long) if height <= width else (new_long, new_short)


def resize_to(image: Tensor, size: tuple[int, int]) -> Tensor:
    """uint8 ``C×H×W`` → uint8 at ``size`` with the detector's own interpolation (bilinear,
    ``align_corners=False``, no antialias), rounded to the nearest integer."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    resized = torch.nn.functional.interpolate(image[None].to(torch.float32), size=size, mode="bilinear",
                                              align_corners=False)[0]
    return resized.round_().clamp_(0, 255).to(torch.uint8)


def detector_max_size(model: object) -> int | None:
    """The ``max_size`` of a torchvision detector's own transform (what :func:`pad_thin` needs),
    or None for a model without one."""
    return getattr(getattr(model, "transform", None), "max_size", None)


def pad_thin(image: Tensor, max_size: int | None) -> Tensor:
    """``image`` (``C×H×W``) padded with zeros at the bottom/right so the detector's own resize
    cannot make a side 0 px.

    torchvision's ``GeneralizedRCNNTransform`` scales the longer side to at most ``max_size`` and
    floors the shorter one: a 5000×2 image (aspect ratio above ``max_size``:1) becomes 0 px high
    and ``interpolate`` raises. Padding the short side to ``long / max_size`` (+1) keeps it at
    >= 1 px; the pixels and box coordinates of the image itself are unchanged, so detections need
    only be clipped to the original size. Images that are not that thin are returned as they are.
    """
    if not max_size:
        return image
    height, width = int(image.shape[-2]), int(image.shape[-1])
    need = math.ceil(max(height, width) / max_size) + 1
    if min(height, width) >= need:
        return image
    pad_bottom, pad_right = max(0, need - height), max(0, need - width)
    return torch.nn.functional.pad(image, (0, pad_right, 0, pad_bottom))


def image_size_on_disk(path: Path) -> tuple[int, int]:
    """``(height, width)`` as shown (EXIF orientation applied), from the file header (no decode)."""
    width, height = image_size(path)
    return height, width


@dataclass(frozen=True)
class Entry:
    offset: int
    original: tuple[int, int]  # decoded (height, width)
    shape: tuple[int, int]     # cached (height, width)

    @property
    def nbytes(self) -> int:
        return 3 * self.shape[0] * self.shape[1]


def cache_key(records: Sequence[ImageRecord], min_size: int, max_size: int) -> str:
    digest = hashlib.sha256(json.dumps([FORMAT, VERSION, min_size, max_size]).encode())
    for record in records:
        stat = os.stat(record.path)
        digest.update(f"\n{Path(record.path).resolve()}\t{stat.st_size}\t{stat.st_mtime_ns}".encode())
        digest.update(f"\t{record_crop(record)}".encode() if record_crop(record) else b"")
    return digest.hexdigest()[:20]


class ImageCache:
    """uint8 images of ``records`` (same order) at the network's input size.

    Use :meth:`build` (on disk under ``root`` or in memory) and :meth:`image`. The object pickles
    without its pixels (a spawned loader worker reopens the memory map), so it is cheap to hand to
    data-loader workers.
    """

    def __init__(self, entries: Sequence[Entry], min_size: int, max_size: int, *, folder: Path | None = None,
                 array: np.ndarray | None = None) -> None:
        self.entries = list(entries)
        self.min_size = min_size
        self.max_size = max_size
        self.folder = folder
        self._array = array
        if folder is None and array is None:
            raise ValueError("an ImageCache needs a folder or an in-memory array")

    # --- reading --------------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.entries)

    @property
    def nbytes(self) -> int:
        return sum(entry.nbytes for entry in self.entries)

    def _pixels(self) -> np.ndarray:
        if self._array is None:
            assert self.folder is not None
            self._array = np.memmap(self.folder / PIXELS, dtype=np.uint8, mode="r") if self.nbytes else \
                np.zeros(0, dtype=np.uint8)
        return self._array

    def image(self, index: int) -> Tensor:
        """A fresh (writable) uint8 ``3×H×W`` tensor; the cache itself is never modified."""
        entry = self.entries[index]
        flat = self._pixels()[entry.offset:entry.offset + entry.nbytes]
        return torch.from_numpy(np.array(flat, copy=True)).view(3, *entry.shape)

    def original_size(self, index: int) -> tuple[int, int]:
        return self.entries[index].original

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        if self.folder is not None:
            state["_array"] = None  # reopened as a memory map in the receiving process
        return state

    # --- building -------------------------------------------------------------------------------
    @classmethod
    def find(cls, records: Sequence[ImageRecord], min_size: int, max_size: int, root: Path) -> "ImageCache | None":
        """The complete cache of these records at this size under ``root``, if there is one."""
        return cls.open(Path(root) / cache_key(records, min_size, max_size), len(records), min_size, max_size)

    @classmethod
    def build(cls, records: Sequence[ImageRecord], min_size: int, max_size: int, *, root: Path | None = None,
              workers: int | None = None, progress: bool = True) -> "ImageCache":
        """Open the cache for these records and size under ``root``, building it first if there is
        none; without ``root`` build it in memory."""
        if root is not None:
            folder = Path(root) / cache_key(records, min_size, max_size)
            cache = cls.open(folder, len(records), min_size, max_size)
            if cache is not None:
                log.info("image cache: %d images at training size from %s", len(cache), folder)
                return cache
        threads = workers or max(1, min(8, os.cpu_count() or 1))
        entries: list[Entry] = []
        chunks: list[np.ndarray] = []
        offset = 0

        def load(record: ImageRecord) -> tuple[tuple[int, int], Tensor]:
            image = crop_tensor(_decode(record.path), record)  # full_hd: the record's crop (obdb.fullhd)
            original = (int(image.shape[-2]), int(image.shape[-1]))
            return original, resize_to(image, network_size(*original, min_size, max_size))

        tmp_dir: Path | None = None
        handle = None
        if root is not None:
            Path(root).mkdir(parents=True, exist_ok=True)
            remove_abandoned_builds(Path(root))
            start = process_start(os.getpid()) or "unknown"
            tmp_dir = Path(tempfile.mkdtemp(prefix=f".{folder.name}.{_builder_tag()}.{start}.", suffix=".tmp",
                                            dir=root))
            handle = open(tmp_dir / PIXELS, "wb")
        try:
            with warnings.catch_warnings(), ThreadPoolExecutor(threads) as pool:
                quiet_decoder_warning()
                step = 4 * threads  # a few images per thread in flight, not the whole data set in memory
                decoded = (item for start in range(0, len(records), step)
                           for item in pool.map(load, records[start:start + step]))
                for original, image in tqdm(decoded, total=len(records), disable=not progress,
                                            desc="image cache", unit="image", leave=False, dynamic_ncols=True):
                    data = image.contiguous().numpy()
                    entries.append(Entry(offset, original, (int(image.shape[-2]), int(image.shape[-1]))))
                    offset += data.size
                    if handle is not None:
                        handle.write(data.tobytes())
                    else:
                        chunks.append(data.reshape(-1))
            if handle is None:
                array = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.uint8)
                log.info("image cache: %d images at training size in memory (%.1f MB)", len(entries), offset / 1e6)
                return cls(entries, min_size, max_size, array=array)
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
            write_json(tmp_dir / INDEX, {"format": FORMAT, "version": VERSION, "min_size": min_size,
                                         "max_size": max_size, "count": len(entries), "bytes": offset,
                                         "entries": [[e.offset, *e.original, *e.shape] for e in entries]})
            try:
                os.replace(tmp_dir, folder)
            except OSError:  # another process finished the same cache first: use theirs
                shutil.rmtree(tmp_dir, ignore_errors=True)
            tmp_dir = None
            log.info("image cache: %d images at training size written to %s (%.1f MB)", len(entries), folder,
                     offset / 1e6)
            cache = cls.open(folder, len(records), min_size, max_size)
            if cache is None:
                raise RuntimeError(f"image cache {folder} could not be read back after building it")
            return cache
        finally:
            if handle is not None and not handle.closed:
                handle.close()
            if tmp_dir is not None:
                shutil.rmtree(tmp_dir, ignore_errors=True)

    @classmethod
    def open(cls, folder: Path, count: int, min_size: int, max_size: int) -> "ImageCache | None":
        """The complete cache in ``folder``, or None when there is none (or it does not match)."""
        index_file = folder / INDEX
        if not index_file.is_file():
            return None
        try:
            index = read_json(index_file)
            entries = [Entry(int(o), (int(h0), int(w0)), (int(h), int(w))) for o, h0, w0, h, w in index["entries"]]
            complete = (index["format"] == FORMAT and index["version"] == VERSION and len(entries) == count
                        and (index["min_size"], index["max_size"]) == (min_size, max_size)
                        and (folder / PIXELS).stat().st_size == index["bytes"] == sum(e.nbytes for e in entries))
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("image cache %s is unreadable (%s); it is rebuilt", folder, err)
            complete = False
        if not complete:
            shutil.rmtree(folder, ignore_errors=True)
            return None
        return cls(entries, min_size, max_size, folder=folder)


#: A temporary build folder from another host is removed once it is this old (its builder cannot
#: be asked whether it still runs; no build of a training set takes a day).
ABANDONED_AFTER_S = 24 * 3600


def _builder_tag() -> str:
    return f"{host_name()}.{os.getpid()}"


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def remove_abandoned_builds(root: Path) -> list[Path]:
    """Delete the temporary folders of builds that will never finish (their process was killed).

    A folder ``.<key>.<host>.<pid>.<start>.<random>.tmp`` is abandoned when ``host`` is this
    machine and process ``pid`` is gone or is another process that reuses the pid (its start time
    differs: PID 1 of a restarted container, see :func:`obdb.fileio.process_gone`), or when it is
    older than :data:`ABANDONED_AFTER_S` (another host's). Folders named
    ``.<key>.<host>.<pid>.<random>.tmp`` (before the start time was recorded) count as abandoned
    when no process ``pid`` runs. Builds of other live processes, here or on hosts sharing the
    volume, are left alone. Returns the removed folders."""
    removed = []
    here = host_name()
    for folder in root.glob(".*.tmp"):
        parts = folder.name[1:].split(".")
        mine = len(parts) >= 5 and parts[1] == here and parts[2].isdigit()
        try:
            age = time.time() - folder.stat().st_mtime
        except OSError:
            continue
        if mine and len(parts) >= 6:
            gone = process_gone(here, int(parts[2]), parts[3])
        else:
            gone = mine and not _process_alive(int(parts[2]))
        if gone or age > ABANDONED_AFTER_S:
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    if removed:
        log.info("image cache: removed %d unfinished build folder(s) left by killed runs in %s", len(removed), root)
    return removed


def estimated_bytes(records: Sequence[ImageRecord], min_size: int, max_size: int) -> int:
    """Size of the cache from the records' width/height (file headers where those are unknown)."""
    total = 0
    for record in records:
        height, width = (record.height, record.width) if record.width > 0 and record.height > 0 else \
            image_size_on_disk(record.path)
        h, w = network_size(height, width, min_size, max_size)
        total += 3 * h * w
    return total


def fits_on_disk(root: Path, needed: int, share: float = 0.5) -> bool:
    """Whether ``needed`` bytes take at most ``share`` of the free space under ``root``."""
    probe = Path(root)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return needed <= shutil.disk_usage(probe).free * share
