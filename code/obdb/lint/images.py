"""Image rules: readable, not truncated, within the size limits, extension matching the content.

Decoding is the expensive part of linting, so every image file is read **once** by
:func:`inspect_image`, which collects everything all image-level rules need (size, format,
content sha256, 64-bit dHash) into an :class:`ImageFacts`. :func:`inspect_all` runs it in a thread
pool (PIL's decoders and hashlib release the GIL, so threads scale with the cores) and remembers
the facts per ``path|size|mtime`` in a small JSON cache, so a resumed run does not decode the
whole data set again. The rules themselves (:func:`check_images`) only compare facts to settings,
so changing a threshold never needs a new decode.

A file whose content is another format than its extension says (a PNG named ``.jpg``) is *kept*:
PIL reads images by content, and training does too, so it is only noted (``info``).
"""
from __future__ import annotations

import hashlib
import io
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Sequence

from PIL import Image, UnidentifiedImageError
from tqdm.auto import tqdm

from ..fileio import read_json, write_json
from ..fullhd import size_after_crop
from ..imageio import UnsupportedImage, describe_mode, shown_size, to_rgb8
from ..records import ImageRecord
from ..settings.schema import LintSettings
from ..split.features import DHashExtractor
from .base import CORRECTED, DROPPED_IMAGE, ERROR, INFO, KEPT, WARN, Issue, issue_for

log = logging.getLogger(__name__)

CACHE_VERSION = 2  # 2: sizes as shown (EXIF orientation), pixel mode recorded
_FORMAT_ALIASES = {"MPO": "JPEG"}  # multi-picture JPEGs from cameras are JPEG files


@dataclass
class ImageFacts:
    """What one read of an image file tells the image rules. ``problem`` is a rule name
    (``unreadable``/``truncated``) when the file is unusable, with ``reason`` saying why."""

    problem: str | None = None
    reason: str = ""
    width: int = 0
    height: int = 0
    format: str | None = None
    sha256: str = ""
    dhash: str = ""  # 16 hex digits; "" when not computed
    mode: str = ""  # PIL pixel mode of the file (width/height are as shown: EXIF orientation applied)


def inspect_image(path: Path, *, decode: bool = True, dhash: bool = True) -> ImageFacts:
    """Read ``path`` once: content hash, header, and (``decode``) a CRC check plus a full decode,
    which is what finds a truncated JPEG (``verify`` alone does not). ``dhash`` needs pixels; with
    ``decode`` off a JPEG is then decoded at reduced scale (``draft``), which is enough for a
    9 × 8 hash."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        return ImageFacts("unreadable", f"cannot read file: {err.strerror or err}")
    if not data:
        return ImageFacts("unreadable", "empty file (0 bytes)")
    facts = ImageFacts(sha256=hashlib.sha256(data).hexdigest())
    try:
        with Image.open(io.BytesIO(data)) as image:
            facts.format = image.format
            facts.mode = image.mode
            facts.width, facts.height = shown_size(image)
            if decode:
                image.verify()
    except UnidentifiedImageError:
        return replace(facts, problem="unreadable", reason="not an image file PIL can read")
    except Exception as err:  # noqa: BLE001 - PIL raises many types on corrupt input; all mean "corrupt"
        return replace(facts, problem="truncated", reason=f"corrupt image header or chunks: {_describe(err)}")
    if facts.width <= 0 or facts.height <= 0:
        return replace(facts, problem="unreadable", reason=f"image has no pixels ({facts.width}x{facts.height})")
    if not (decode or dhash):
        return facts
    try:
        with Image.open(io.BytesIO(data)) as image:
            if not decode and image.format == "JPEG":
                image.draft("L", (max(1, facts.width // 8), max(1, facts.height // 8)))
            image.load()
            shown = to_rgb8(image)  # as training sees it: a 16-bit image hashes by its real content
            if dhash:
                facts.dhash = DHashExtractor().extract([shown])[0].tobytes().hex()
    except UnsupportedImage as err:
        return replace(facts, problem="unconvertible", reason=str(err))
    except Exception as err:  # noqa: BLE001 - see above
        return replace(facts, problem="truncated", reason=f"pixel data does not decode: {_describe(err)}")
    return facts


def _describe(err: BaseException) -> str:
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def default_workers() -> int:
    return max(1, min(os.cpu_count() or 1, 16))


def inspect_all(paths: Sequence[Path], *, decode: bool = True, dhash: bool = True, workers: int | None = None,
                cache_file: Path | None = None, progress: bool = True) -> dict[str, ImageFacts]:
    """Facts for every distinct path (keyed by ``str(path)``), each file read once, in a thread pool."""
    unique = list(dict.fromkeys(str(p) for p in paths))
    cache = _load_cache(cache_file)
    wanted = f"decode={int(decode)},dhash={int(dhash)}"
    markers = {p: _marker(p, wanted) for p in unique}
    facts: dict[str, ImageFacts] = {}
    for path, marker in markers.items():
        entry = cache.get(marker) if marker else None
        if entry is not None:
            try:
                facts[path] = ImageFacts(**entry)
            except TypeError:
                pass  # an entry from another version: inspect again
    todo = [p for p in unique if p not in facts]
    if todo:
        with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool, \
                tqdm(total=len(todo), desc="lint images", unit="img", disable=not progress) as bar:
            for path, found in zip(todo, pool.map(lambda p: inspect_image(Path(p), decode=decode, dhash=dhash), todo)):
                facts[path] = found
                bar.update(1)
    log.debug("lint: %d image(s) inspected, %d from the cache", len(todo), len(unique) - len(todo))
    if cache_file is not None and todo:
        for path in todo:
            marker = markers[path]
            if marker:
                cache[marker] = asdict(facts[path])
        write_json(cache_file, {"version": CACHE_VERSION, "entries": cache})
    return facts


def _marker(path: str, wanted: str) -> str | None:
    """Cache key: a file that changed (size or mtime) or a different kind of check is a miss."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}|{wanted}"


def _load_cache(cache_file: Path | None) -> dict[str, Any]:
    if cache_file is None or not Path(cache_file).is_file():
        return {}
    try:
        data = read_json(cache_file)
    except (OSError, ValueError) as err:
        log.warning("lint cache %s is unreadable (%s); images are inspected again", cache_file, err)
        return {}
    if not isinstance(data, dict) or data.get("version") != CACHE_VERSION or not isinstance(data.get("entries"), dict):
        return {}
    return data["entries"]


def check_images(records: Sequence[ImageRecord], facts: dict[str, ImageFacts],
                 settings: LintSettings) -> tuple[list[ImageRecord], list[Issue]]:
    """Drop unreadable, truncated and out-of-size-range images; correct sizes that disagree with
    the file (boxes are checked against the real size later); note extension mismatches."""
    kept: list[ImageRecord] = []
    issues: list[Issue] = []
    for record in records:
        found = facts[str(record.path)]
        if found.problem:
            issues.append(issue_for(record, found.problem, ERROR, DROPPED_IMAGE, found.reason))
            continue
        size = f"{found.width}x{found.height}"
        low, high = settings.min_image_size, settings.max_image_size
        if low is not None and min(found.width, found.height) < low:
            issues.append(issue_for(record, "too_small", WARN, DROPPED_IMAGE,
                                    f"{size} is below min_image_size {low}", width=found.width, height=found.height))
            continue
        if high is not None and max(found.width, found.height) > high:
            issues.append(issue_for(record, "too_large", WARN, DROPPED_IMAGE,
                                    f"{size} is above max_image_size {high}", width=found.width, height=found.height))
            continue
        found = replace(found, **dict(zip(("width", "height"), size_after_crop(record, found.width, found.height))))
        if (record.width, record.height) != (found.width, found.height):
            issues.append(issue_for(record, "size_mismatch", WARN, CORRECTED,
                                    f"record says {record.width}x{record.height}, file is {size}",
                                    record_size=[record.width, record.height], file_size=[found.width, found.height]))
            record = replace(record, width=found.width, height=found.height)
        if found.mode and found.mode not in ("RGB", "L"):
            issues.append(issue_for(record, "pixel_mode", INFO, KEPT, f"pixel mode {describe_mode(found.mode)}",
                                    mode=found.mode))
        expected = Image.registered_extensions().get(record.path.suffix.lower())
        actual = _FORMAT_ALIASES.get(found.format or "", found.format)
        if expected is not None and actual is not None and _FORMAT_ALIASES.get(expected, expected) != actual:
            issues.append(issue_for(record, "extension_mismatch", INFO, KEPT,
                                    f"extension {record.path.suffix!r} but the content is {actual}", format=actual))
        kept.append(record)
    return kept, issues
