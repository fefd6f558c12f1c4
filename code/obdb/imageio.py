"""Reading images the way CVAT shows them.

Every stage that opens an image (sources probing sizes, the image cache, training, evaluation,
split features, lint, auto_annotate) goes through this module, so a frame has one size and one
look everywhere.

What "as CVAT shows them" means (CVAT's media extractor, when it stores a task's frames):

* **EXIF orientation is applied** (``ImageOps.exif_transpose``). A phone photo stored sideways
  with orientation 6 is shown upright in CVAT, and people drew their boxes on the upright frame,
  so training, evaluation and auto_annotate must see the same upright pixels and size.
* **Everything becomes 8-bit RGB**. PIL's own ``convert("RGB")`` *clips* 16- and 32-bit grey
  values to 255, which turns a 16-bit PNG into a white image. Here high-bit-depth grey is scaled
  by its real range instead (see :func:`to_rgb8`); alpha is dropped (CVAT stores frames as
  JPEG, which has none); palette, 1-bit, CMYK and the other PIL modes use PIL's conversion.
"""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

ImageInput = Union[str, os.PathLike, bytes, bytearray]

#: EXIF tag 0x0112; values 5-8 turn the image by 90 degrees (width and height swap)
ORIENTATION_TAG = 0x0112
#: bumped whenever the pixels decoded from a file change; caches of pixels or features include it
#: (2: EXIF orientation applied, high bit depths scaled instead of clipped)
DECODE_VERSION = 2
_SWAPS_SIDES = {5, 6, 7, 8}
#: modes PIL converts to RGB correctly on its own (8 bits per channel or fewer)
_PIL_CONVERTS = {"1", "L", "P", "PA", "LA", "La", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr", "LAB", "HSV"}
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N"}


class UnsupportedImage(ValueError):
    """An image whose pixels cannot be converted to 8-bit RGB (the reason is the message)."""


def _open(source: ImageInput) -> Image.Image:
    if isinstance(source, (bytes, bytearray)):
        return Image.open(io.BytesIO(bytes(source)))
    return Image.open(source)


def _png_late_exif(image: Image.Image) -> bool:
    """Whether an opened, not yet loaded PNG has an ``eXIf`` chunk after its pixels (PIL reads
    those only on a full decode). Walks the chunk headers, reading 8 bytes per chunk."""
    fp = getattr(image, "fp", None)
    if fp is None:  # already loaded: PIL has read the trailing chunks into ``info``
        return False
    position = fp.tell()
    try:
        fp.seek(8)
        while True:
            head = fp.read(8)
            if len(head) < 8 or head[4:] == b"IEND":
                return False
            if head[4:] == b"eXIf":
                return True
            fp.seek(int.from_bytes(head[:4], "big") + 4, os.SEEK_CUR)
    except (OSError, ValueError):
        return False
    finally:
        fp.seek(position)


def orientation(image: Image.Image) -> int:
    """The EXIF orientation (1-8) still to apply to an opened image; 1 when there is none or it is
    invalid. PIL's TIFF reader turns the image itself (its ``size`` is already upright), so a
    TIFF has nothing left to apply."""
    if image.format == "TIFF":
        return 1
    if (image.format == "PNG" and "exif" not in image.info and "Raw profile type exif" not in image.info
            and not _png_late_exif(image)):
        return 1  # PIL's PNG getexif() would decode the whole image to look for it
    try:
        value = int(image.getexif().get(ORIENTATION_TAG, 1))
    except Exception:  # noqa: BLE001 - a damaged EXIF block means "no usable orientation", as in CVAT
        return 1
    return value if 1 <= value <= 8 else 1


def shown_size(image: Image.Image) -> tuple[int, int]:
    """``(width, height)`` of an opened image as CVAT shows it (after EXIF orientation)."""
    width, height = image.size
    return (height, width) if orientation(image) in _SWAPS_SIDES else (width, height)


def _grey_to_rgb8(values: np.ndarray, full_scale: float) -> Image.Image:
    scaled = np.clip(np.rint(values.astype(np.float64) * (255.0 / full_scale)), 0, 255).astype(np.uint8)
    return Image.fromarray(scaled, mode="L").convert("RGB")


def to_rgb8(image: Image.Image) -> Image.Image:
    """A loaded PIL image (any mode) as 8-bit RGB, EXIF orientation applied.

    High bit depths are scaled by their real range, never clipped: 16-bit grey (``I;16*``, and
    ``I`` whose values fit 16 bits, which is how PIL opens 16-bit PNGs) by 65535, so a value
    keeps its relative brightness (32768 → 128); ``I`` with larger values by 2**32 - 1; float
    (``F``) as 0..1 when its values lie there, else 0..255. Raises :class:`UnsupportedImage` for a
    mode with no 8-bit equivalent.
    """
    try:
        image = ImageOps.exif_transpose(image) or image
    except Exception:  # noqa: BLE001 - damaged EXIF: shown unrotated, as CVAT does when it cannot read it
        pass
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _SIXTEEN_BIT:
        return _grey_to_rgb8(np.asarray(image).astype(np.uint16, copy=False), 65535.0)
    if mode == "I":
        values = np.asarray(image, dtype=np.int64)
        peak = int(values.max()) if values.size else 0
        return _grey_to_rgb8(np.maximum(values, 0), 65535.0 if peak <= 65535 else 4294967295.0)
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
        peak = float(values.max()) if values.size else 0.0
        return _grey_to_rgb8(np.maximum(values, 0.0), 1.0 if peak <= 1.0 else 255.0)
    if mode in ("P", "PA"):
        # a palette with transparency: go through RGBA so PIL does not warn, then drop alpha
        return image.convert("RGBA").convert("RGB")
    if mode in _PIL_CONVERTS:
        return image.convert("RGB")
    raise UnsupportedImage(f"pixel mode {mode!r} has no 8-bit RGB conversion")


def describe_mode(mode: str) -> str:
    """What :func:`to_rgb8` does with a PIL mode, in words (for lint's report)."""
    if mode in _SIXTEEN_BIT or mode == "I":
        return f"{mode} (high bit depth grey): scaled to 8 bits by its range"
    if mode == "F":
        return "F (float grey): scaled to 8 bits"
    if mode in ("RGBA", "LA", "La", "RGBa", "PA"):
        return f"{mode}: alpha dropped, as CVAT stores frames"
    if mode in _PIL_CONVERTS:
        return f"{mode}: converted to RGB"
    return f"{mode}: cannot be converted to 8-bit RGB"


def open_rgb(source: ImageInput) -> Image.Image:
    """Decode a file (or encoded bytes) into an 8-bit RGB image as CVAT shows it (loaded; the file
    is closed). Raises PIL's errors for unreadable files, :class:`UnsupportedImage` for modes
    that cannot be converted."""
    with _open(source) as image:
        image.load()
        return to_rgb8(image)


def image_size(source: ImageInput) -> tuple[int, int]:
    """``(width, height)`` as shown (EXIF orientation applied), from the header where possible."""
    with _open(source) as image:
        return shown_size(image)


def probe_image(path: Path) -> tuple[int, int] | str:
    """``(width, height)`` as shown (after EXIF orientation) of a usable image, else the reason it
    is unusable.

    Cheap enough to run on every frame: ``verify()`` walks PNG chunks (CRC-checked, so a cut-off
    file fails), and JPEGs are decoded at 1/8 scale with ``draft`` because ``verify()`` does not
    notice a truncated JPEG. Other formats get a full decode. A mode :func:`to_rgb8` cannot
    convert is unusable too.
    """
    try:
        path = Path(path)
        if path.stat().st_size == 0:
            return "empty image file (0 bytes)"
        with Image.open(path) as im:
            size = im.size
            fmt = im.format
            mode = im.mode
            turned = orientation(im) in _SWAPS_SIDES
            im.verify()
        if fmt != "PNG":
            with Image.open(path) as im:
                if fmt == "JPEG":
                    im.draft("RGB", (max(1, size[0] // 8), max(1, size[1] // 8)))
                im.load()
    except UnidentifiedImageError:
        return "not a readable image"
    except Image.DecompressionBombError as err:  # a header claiming billions of pixels: never decoded
        return f"image too large to open safely: {err}"
    except (OSError, SyntaxError, ValueError) as err:
        return f"corrupt or truncated image: {err}"
    if size[0] <= 0 or size[1] <= 0:
        return f"image has no pixels ({size[0]}x{size[1]})"
    if mode not in _PIL_CONVERTS and mode not in _SIXTEEN_BIT and mode not in ("I", "F"):
        return f"pixel mode {mode!r} has no 8-bit RGB conversion"
    return (size[1], size[0]) if turned else size
