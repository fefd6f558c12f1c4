"""Reading images the way CVAT shows them.

Every stage that opens an image (sources probing sizes, the image cache, training, evaluation,
split features, lint, auto_annotate) goes through this module, so a frame has one size and one
look everywhere.
"""
from __future__ import annotations

from pathlib import Path

from PIL import Image, UnidentifiedImageError


def open_rgb(path: Path | str) -> Image.Image:
    """Decode ``path`` into an 8-bit RGB image (loaded; the file is closed)."""
    with Image.open(path) as image:
        return image.convert("RGB")


def probe_image(path: Path) -> tuple[int, int] | str:
    """``(width, height)`` of a readable image, else the reason it is unusable.

    Cheap enough to run on every frame: ``verify()`` walks PNG chunks (CRC-checked, so a cut-off
    file fails), and JPEGs are decoded at 1/8 scale with ``draft`` because ``verify()`` does not
    notice a truncated JPEG. Other formats get a full decode.
    """
    try:
        if path.stat().st_size == 0:
            return "empty image file (0 bytes)"
        with Image.open(path) as im:
            size = im.size
            fmt = im.format
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
    return size


