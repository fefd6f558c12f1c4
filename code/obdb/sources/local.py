"""Local annotation source: export files on disk (CVAT for images 1.1 XML, COCO JSON, Pascal VOC
XML) plus a folder of images. Each file is one task; the format is detected from the content.
Everything after parsing (images, boxes, negatives) is :mod:`obdb.sources.driver`'s.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from obdb.records import AnnotationSet
from obdb.sources.coco import parse_coco
from obdb.sources.contract import SourceError, Task
from obdb.sources.cvat_xml import parse_cvat, parse_xml
from obdb.sources.driver import LoadOptions, load
from obdb.sources.voc import parse_voc

ANNOTATION_SUFFIXES = (".xml", ".json")


def collect_annotation_files(annotations: list[Path] | Path | str | list[str]) -> list[Path]:
    """Expand files and directories (non-recursive: every *.xml and *.json, sorted by name) into
    a de-duplicated list of files, so passing a file and its folder does not load it twice."""
    items: Iterable[Path | str] = [annotations] if isinstance(annotations, (str, Path)) else annotations
    files: list[Path] = []
    seen: set[Path] = set()
    for item in items:
        item = Path(item)
        if item.is_dir():
            found = sorted((p for p in item.iterdir() if p.is_file() and p.suffix.lower() in ANNOTATION_SUFFIXES),
                           key=lambda p: p.name)
            if not found:
                raise SourceError(f"{item}: folder holds no annotation files (*.xml, *.json)")
        elif item.is_file():
            found = [item]
        else:
            raise SourceError(f"{item}: annotation file or folder does not exist")
        for path in found:
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                files.append(path)
    if not files:
        raise SourceError("no annotation files given")
    return files


def parse_file(path: Path, images_dir: Path | None = None) -> Task:
    """Read one annotation file, detecting its format from its content (not only its suffix, since
    tools are careless about extensions). Its images resolve under ``images_dir`` (default: the
    file's folder). Raises SourceError naming the file (and line) when it is malformed or unknown."""
    images_dir = path.parent if images_dir is None else images_dir
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise SourceError(f"{path}: cannot read annotation file: {err}") from err
    body = raw[3:] if raw.startswith(b"\xef\xbb\xbf") else raw  # UTF-8 BOM written by some Windows tools
    head = body.lstrip()[:1]
    if not head:
        raise SourceError(f"{path}: annotation file is empty")
    if head in (b"{", b"["):
        try:
            data = json.loads(raw.decode("utf-8-sig"))
        except UnicodeDecodeError as err:
            raise SourceError(f"{path}: JSON is not valid UTF-8: {err}") from err
        except json.JSONDecodeError as err:
            raise SourceError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err
        if isinstance(data, dict) and "images" in data and "annotations" in data:
            return parse_coco(path, data, images_dir)
        raise SourceError(f"{path}: unknown annotation format (JSON but not COCO: expected "
                          f"top-level 'images' and 'annotations')")
    if head == b"<":
        root = parse_xml(raw, path)
        if root.tag == "annotations":
            return parse_cvat(path, root, images_dir)
        if root.tag == "annotation":
            return parse_voc(path, root, images_dir)
        raise SourceError(f"{path}: unknown annotation format (XML root <{root.tag}>; expected "
                          f"CVAT <annotations> or Pascal VOC <annotation>)")
    raise SourceError(f"{path}: unknown annotation format (neither XML nor JSON)")


@dataclass
class LocalSource:
    """Annotation files and/or folders of them, images under ``images_dir``. ``tasks`` keeps only
    those task names, *exactly*: ``gt_val_A`` must not pull in ``gt_val_A_2``, or validation data
    would silently leak into another task list (a missing one is an error listing what exists)."""

    annotations: list[Path] | Path
    images_dir: Path
    tasks: list[str] | None = None

    def read_tasks(self, progress: bool = True) -> list[Task]:
        files = collect_annotation_files(self.annotations)
        images_dir = Path(self.images_dir)
        parsed = [parse_file(path, images_dir)
                  for path in tqdm(files, desc="reading annotations", unit="file", disable=not progress)]
        if self.tasks:
            available = list(dict.fromkeys(t.name for t in parsed))
            missing = [t for t in dict.fromkeys(self.tasks) if t not in available]
            if missing:
                raise SourceError(f"task(s) not found: {missing}; available tasks: {available}")
            parsed = [t for t in parsed if t.name in set(self.tasks)]
        if not images_dir.is_dir():
            raise SourceError(f"{images_dir}: images folder does not exist")
        return parsed


def load_local(annotations: list[Path] | Path, *, images_dir: Path, tasks: list[str] | None = None,
               keep_empty: bool = True, label_map: dict[str, str | None] | None = None,
               group_regex: str | None = None, progress: bool = True,
               include_auto: str = "accepted") -> AnnotationSet:
    """:class:`LocalSource` through the driver, for callers that have no settings (demo, scoring,
    tests). ``label_map`` renames labels (``""``/``None`` drops them); ``group_regex``: see
    :func:`obdb.sources.grouping.frame_group`; ``include_auto``: which model proposals of a CVAT XML
    export (``source="auto"``) count as ground truth (:mod:`obdb.sources.truth`)."""
    options = LoadOptions(keep_empty=keep_empty, label_map=dict(label_map or {}), group_regex=group_regex,
                          include_auto=include_auto)
    return load(LocalSource(annotations, Path(images_dir), tasks), options, progress=progress)
