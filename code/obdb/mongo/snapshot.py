"""Snapshots of the annotations database as mongoexport-compatible files, and their import.

One file per collection (``tasks.json``, ``meta.json``, ``annotation_data.json``), one document per
line in MongoDB extended JSON, relaxed mode, as ``mongoexport`` (database tools 100.x) writes it:
``{"_id":{"$oid":"…"},"created_date":{"$date":"2023-05-08T12:29:12.123Z"},…}``. Files made by
``mongoexport`` (also with ``--jsonArray``, and the legacy/canonical forms of older tools) import,
and our files import with ``mongoimport``.

Import is idempotent: documents are upserted by ``_id``, and a ``tasks``/``meta`` document replaces
the stored one of the same task name. Collections are written shapes first and ``tasks`` last, as
:func:`obdb.mongo.layout.write_task` does, so a task never appears before its shapes.

Every document is checked before anything is written; a malformed one is reported with file and
line.
"""
from __future__ import annotations

from obdb.errors import UserError
import contextlib
import hashlib
import json
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timezone
from functools import partial
from pathlib import Path
from typing import Any, Callable

from bson import ObjectId, json_util
from bson.errors import BSONError
from bson.json_util import RELAXED_JSON_OPTIONS, JSONOptions
from pymongo import DeleteMany, ReplaceOne
from pymongo.database import Database
from tqdm.auto import tqdm

from obdb.fileio import atomic_path
from obdb.mongo.connection import ensure_indexes

logger = logging.getLogger(__name__)

#: Collections of the layout, in the order an import writes them (``tasks`` last: the commit).
COLLECTIONS = ("annotation_data", "meta", "tasks")
_KEY = {"tasks": "name", "meta": "task_name", "annotation_data": "task_name"}
_READ_OPTIONS = JSONOptions(tz_aware=True, tzinfo=timezone.utc)
_BATCH = 1000


class SnapshotError(UserError, ValueError):
    """A snapshot file cannot be imported; the message names the file (and line)."""


# --------------------------------------------------------------------------- export


def dump_line(doc: dict[str, Any]) -> str:
    """One document as mongoexport writes it: relaxed extended JSON, compact, UTF-8 as is."""
    return json_util.dumps(doc, json_options=RELAXED_JSON_OPTIONS, separators=(",", ":"), ensure_ascii=False)


def export_snapshot(db: Database, out_dir: Path, tasks: list[str] | None = None,
                    progress: bool = True) -> dict[str, int]:
    """Write the three collections (or the documents of ``tasks``, exact names) to ``out_dir``.

    Documents are sorted by ``_id`` so the same data always gives the same bytes. All three files
    are written to temporary files first and renamed together at the end, so an interrupted export
    leaves the previous snapshot (if any) untouched. Returns the document count per collection."""
    if tasks:
        found = {doc["name"] for doc in db["tasks"].find({"name": {"$in": list(tasks)}}, {"name": 1})}
        missing = [name for name in tasks if name not in found]
        if missing:  # checked before any file is touched: a typo must not replace a snapshot with nothing
            raise SnapshotError(f"no task named {', '.join(repr(m) for m in missing)} in database {db.name!r} "
                                "(task names match exactly)")
    counts: dict[str, int] = {}
    with contextlib.ExitStack() as stack:
        for name in COLLECTIONS:
            query = {_KEY[name]: {"$in": list(tasks)}} if tasks else {}
            tmp = stack.enter_context(atomic_path(Path(out_dir) / f"{name}.json"))
            total = db[name].count_documents(query)
            with open(tmp, "w", encoding="utf-8", newline="\n") as handle:
                cursor = db[name].find(query).sort("_id", 1)
                for doc in tqdm(cursor, total=total, desc=f"export {name}", unit="doc", disable=not progress):
                    handle.write(dump_line(doc) + "\n")
            counts[name] = total
    return counts


# --------------------------------------------------------------------------- reading files


@dataclass
class Item:
    """One document read from a file, with where it came from (for error messages)."""

    doc: Any
    where: str


def _decoder() -> json.JSONDecoder:
    return json.JSONDecoder(object_pairs_hook=partial(json_util.object_pairs_hook, json_options=_READ_OPTIONS))


def _read_lines(path: Path, text: str) -> Iterator[Item]:
    decoder = _decoder()
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            doc, end = decoder.raw_decode(line, len(line) - len(line.lstrip()))
        except (json.JSONDecodeError, BSONError, ValueError, TypeError, OverflowError) as err:
            raise SnapshotError(f"{path}:{number}: malformed JSON line: {_reason(err)}") from err
        if line[end:].strip():
            raise SnapshotError(f"{path}:{number}: more than one JSON value on the line")
        yield Item(doc, f"{path}:{number}")


def _read_array(path: Path, text: str) -> Iterator[Item]:
    """A ``--jsonArray`` file, read item by item so an error can still name its line.

    Linear in the file's size: line numbers are counted only over the text between one item and the
    next (:class:`_LineCounter`), never from the start of the file again."""
    decoder = _decoder()
    lines = _LineCounter(text)
    pos = text.index("[") + 1
    index = 0
    while True:
        pos = _skip_space(text, pos)
        if pos >= len(text):
            raise SnapshotError(f"{path}:{lines.at(pos)}: JSON array is not closed with ']'")
        if text[pos] == "]":
            if text[pos + 1:].strip():
                raise SnapshotError(f"{path}:{lines.at(pos)}: text after the closing ']'")
            return
        if index:
            if text[pos] != ",":
                raise SnapshotError(f"{path}:{lines.at(pos)}: expected ',' or ']' between array items")
            pos = _skip_space(text, pos + 1)
        line = lines.at(pos)
        try:
            doc, pos = decoder.raw_decode(text, pos)
        except (json.JSONDecodeError, BSONError, ValueError, TypeError, OverflowError) as err:
            where = f"{path}:{err.lineno}" if isinstance(err, json.JSONDecodeError) else f"{path}:{line}"
            raise SnapshotError(f"{where}: malformed JSON in array item {index}: {_reason(err)}") from err
        yield Item(doc, f"{path}:{line}")
        index += 1


_SPACE = re.compile(r"\s*")


def _skip_space(text: str, pos: int) -> int:
    return _SPACE.match(text, pos).end()  # type: ignore[union-attr]  # \s* always matches


class _LineCounter:
    """Line numbers of increasing offsets into one text, each character counted once in all."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.line = 1
        self.scanned = 0  # characters looked at, for the test that reading stays linear

    def at(self, pos: int) -> int:
        if pos < self.pos:  # only forward; a step back would rescan
            raise ValueError("line numbers are asked for increasing offsets only")
        self.line += self.text.count("\n", self.pos, pos)
        self.scanned += pos - self.pos
        self.pos = pos
        return self.line


def _reason(err: Exception) -> str:
    return err.msg if isinstance(err, json.JSONDecodeError) else str(err)


def read_file(path: Path) -> list[Item]:
    """All documents of a JSON-lines or JSON-array file (UTF-8, a BOM is allowed)."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise SnapshotError(f"{path}: cannot read: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise SnapshotError(f"{path}: not UTF-8 text: {err}") from err
    stripped = text.lstrip()
    reader = _read_array if stripped.startswith("[") else _read_lines
    return list(reader(path, text))


# --------------------------------------------------------------------------- checks


def _need(cond: bool, item: Item, message: str) -> None:
    if not cond:
        raise SnapshotError(f"{item.where}: {message}")


def _is_str(value: Any) -> bool:
    return isinstance(value, str) and bool(value)


def _check_tasks(item: Item) -> None:
    _need(_is_str(item.doc.get("name")), item, "tasks document needs a non-empty string 'name'")
    labels = item.doc.get("labels", [])
    _need(isinstance(labels, list) and all(isinstance(x, dict) for x in labels), item,
          "'labels' must be a list of {id, name, color, attributes} documents")


def _check_meta(item: Item) -> None:
    doc = item.doc
    _need(_is_str(doc.get("task_name")), item, "meta document needs a non-empty string 'task_name'")
    frames = doc.get("frames")
    _need(isinstance(frames, list), item, "meta document needs a 'frames' list")
    for i, frame in enumerate(frames):
        _need(isinstance(frame, dict) and _is_str(frame.get("name")), item,
              f"frames[{i}] needs a string 'name' (the image path)")


def _check_shape(item: Item) -> None:
    doc = item.doc
    _need(_is_str(doc.get("task_name")), item, "annotation_data document needs a non-empty string 'task_name'")
    frame = doc.get("frame")
    _need(isinstance(frame, int) and not isinstance(frame, bool) and frame >= 0, item,
          f"'frame' must be a whole number >= 0, got {frame!r}")
    _need(_is_str(doc.get("shape_types")), item, "'shape_types' must be a string (rectangle, polygon, points)")
    points = doc.get("points")
    _need(isinstance(points, list) and all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                           for v in points), item, "'points' must be a flat list of numbers")


_CHECKS: dict[str, Callable[[Item], None]] = {"tasks": _check_tasks, "meta": _check_meta,
                                              "annotation_data": _check_shape}


def collection_of(path: Path) -> str:
    """``tasks.json`` → ``tasks``; ``annotations.meta.json`` (db-prefixed) → ``meta``."""
    name = path.name.split(".")[-2] if path.name.count(".") >= 1 else path.name
    if name not in COLLECTIONS:
        raise SnapshotError(f"{path}: cannot tell the collection from the file name; name it "
                            f"{', '.join(c + '.json' for c in COLLECTIONS)}")
    return name


def snapshot_files(items: list[Path]) -> dict[str, Path]:
    """Collection → file for a folder (its known ``*.json`` files) and/or single files."""
    files: dict[str, Path] = {}
    for item in items:
        found = [item / f"{c}.json" for c in COLLECTIONS if (item / f"{c}.json").is_file()] if item.is_dir() else [item]
        if item.is_dir() and not found:
            raise SnapshotError(f"{item}: folder holds none of {', '.join(c + '.json' for c in COLLECTIONS)}")
        for path in found:
            if not path.is_file():
                raise SnapshotError(f"{path}: file does not exist")
            name = collection_of(path)
            if name in files and files[name].resolve() != path.resolve():
                raise SnapshotError(f"two files for collection {name!r}: {files[name]} and {path}")
            files[name] = path
    if not files:
        raise SnapshotError("no snapshot files given")
    return files


def load_documents(name: str, path: Path) -> list[dict[str, Any]]:
    """Read and check every document of one collection's file (nothing is written yet)."""
    items = read_file(path)
    check = _CHECKS[name]
    first: dict[str, str] = {}
    for item in items:
        _need(isinstance(item.doc, dict), item, f"expected a document (JSON object), got {type(item.doc).__name__}")
        check(item)
        if name != "annotation_data":  # one tasks/meta document per task
            key = item.doc[_KEY[name]]
            _need(key not in first, item, f"task {key!r} already has a {name} document at {first.get(key)}")
            first[key] = item.where
    return [item.doc for item in items]


# --------------------------------------------------------------------------- import


def _content_id(doc: dict[str, Any], seen: dict[bytes, int]) -> ObjectId:
    """A stable ``_id`` for a document that has none, so importing the same file twice does not
    duplicate it (identical documents are told apart by their order)."""
    digest = hashlib.sha256(dump_line(doc).encode()).digest()[:12]
    nth = seen.get(digest, 0)
    seen[digest] = nth + 1
    if nth:
        digest = hashlib.sha256(digest + nth.to_bytes(4, "big")).digest()[:12]
    return ObjectId(digest)


def _operations(name: str, docs: list[dict[str, Any]]) -> Iterator[Any]:
    seen: dict[bytes, int] = {}
    for doc in docs:
        if name == "annotation_data":
            if "_id" not in doc:
                doc = {"_id": _content_id(doc, seen), **doc}
            yield ReplaceOne({"_id": doc["_id"]}, doc, upsert=True)
            continue
        key = {_KEY[name]: doc[_KEY[name]]}
        if "_id" in doc:  # the same task under another _id (written by sync, say) is replaced
            yield DeleteMany({**key, "_id": {"$ne": doc["_id"]}})
            yield ReplaceOne({"_id": doc["_id"]}, doc, upsert=True)
        else:
            yield ReplaceOne(key, doc, upsert=True)


def import_snapshot(db: Database, files: dict[str, Path], *, drop: bool = False,
                    progress: bool = True) -> dict[str, int]:
    """Check every file, then upsert their documents (``drop``: empty those collections first).
    Returns the document count per imported collection."""
    loaded = {name: load_documents(name, files[name]) for name in COLLECTIONS if name in files}
    if drop:
        for name in loaded:
            db[name].drop()
            logger.info("dropped collection %s.%s", db.name, name)
    ensure_indexes(db)
    counts: dict[str, int] = {}
    for name, docs in loaded.items():
        ops = list(_operations(name, docs))
        with tqdm(total=len(docs), desc=f"import {name}", unit="doc", disable=not progress) as bar:
            for start in range(0, len(ops), _BATCH):
                chunk = ops[start:start + _BATCH]
                db[name].bulk_write(chunk, ordered=True)
                bar.update(sum(isinstance(op, ReplaceOne) for op in chunk))
        counts[name] = len(docs)
    return counts
