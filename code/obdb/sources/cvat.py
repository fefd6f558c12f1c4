"""CVAT source: train straight from CVAT tasks (``data.source = "cvat"``), through a local cache.

Each task of ``annotations_list`` (exact names) is kept under
``<cache_dir>/<task id>-<safe name>/``: its frames as ``frames/<frame:06d><ext>`` (the original
uploaded bytes) and ``task.json`` (labels, frame list, annotations, CVAT's ``updated_date``),
written last, atomically, so a cache entry is either complete or absent. A task whose
``updated_date`` did not change is not downloaded again; frames already cached are never
downloaded twice (a CVAT task's images cannot change). With ``data.cvat.offline`` only the cache
is read and no server is needed.

Tracks are expanded to per-frame shapes; shapes keep their ``source`` and attributes (by name) and
become boxes in :mod:`obdb.sources.driver`, as those of a CVAT XML export do, so a CVAT run and a
run on exported files of the same tasks see the same records.

Model proposals (``source`` ``auto``) are left out unless a person accepted them
(``data.cvat.include_auto``, see :mod:`obdb.sources.truth`); the driver counts them.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from tqdm.auto import tqdm

from obdb.errors import ServiceUnavailable
from obdb.fileio import atomic_path, write_json
from obdb.settings.schema import CvatSettings
from obdb.sources.contract import Frame, Shape, SourceError, Task
from obdb.sources.truth import attribute_values

logger = logging.getLogger(__name__)

CACHE_FORMAT = "obdb-cvat-cache"


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:80] or "task"


def parsed_task(entry: dict[str, Any], folder: Path) -> Task:
    """A cached task as a parsed task; its frames are files under ``folder`` (by frame number)."""
    from obdb.cvat.tasks import expand_tracks  # pure function; no server involved

    name = entry["name"]
    labels = {spec["id"]: spec["name"] for spec in entry["labels"]}
    attribute_names = {a["id"]: a["name"] for spec in entry["labels"] for a in spec.get("attributes") or []
                       if "id" in a}
    frames = [Frame(f["name"], i, f["width"], f["height"], file=frame_file(folder, i, f["name"]).relative_to(folder)
                    .as_posix()) for i, f in enumerate(entry["frames"])]
    for shape in expand_tracks(entry["annotations"], len(frames)):
        if shape.get("label_id") not in labels:
            raise SourceError(f"{folder / 'task.json'}: task {name!r} frame {shape['frame']}: label id "
                              f"{shape.get('label_id')!r} is not one of the task's labels")
        frames[shape["frame"]].shapes.append(api_shape(shape, labels[shape["label_id"]], attribute_names))
    kept = [frame for frame, info in zip(frames, entry["frames"]) if not info.get("deleted")]
    return Task(name=name, frames=kept, root=folder, origin=str(folder), format="cvat-api",
                labels=list(labels.values()))


def api_shape(shape: dict[str, Any], label: str, attribute_names: Mapping[Any, str]) -> Shape:
    """A shape of CVAT's annotations API (JSON) as a parsed shape; ``attribute_names`` maps the
    attribute spec ids of the task's labels to their names."""
    attributes = attribute_values(shape.get("attributes"), attribute_names)
    return Shape(kind=str(shape.get("type")), points=[float(v) for v in shape.get("points") or []], label=label,
                 rotation=float(shape.get("rotation") or 0.0), occluded=bool(shape.get("occluded")),
                 source=shape.get("source"), attributes=attributes, z_order=int(shape.get("z_order") or 0),
                 group=int(shape.get("group") or 0), ref=f"frame {shape.get('frame')} {shape.get('type')}")


class CvatSourceUnavailable(SourceError, ServiceUnavailable):
    """CVAT could not be reached after retries: exit code 3, like the CVAT error it wraps."""

    exit_code = ServiceUnavailable.exit_code


def _source_error(err: Exception) -> SourceError:
    """A CVAT failure as the source's error, keeping its exit code (3 for an unreachable server)."""
    message = f"{err} (data.cvat.offline: true trains on the cached copies)"
    return CvatSourceUnavailable(message) if isinstance(err, ServiceUnavailable) else SourceError(message)


def frame_file(folder: Path, index: int, name: str) -> Path:
    suffix = Path(name).suffix.lower() if re.fullmatch(r"\.[A-Za-z0-9]{1,5}", Path(name).suffix) else ".img"
    return folder / "frames" / f"{index:06d}{suffix}"


def read_entry(folder: Path) -> dict[str, Any] | None:
    path = folder / "task.json"
    try:
        entry = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as err:
        logger.warning("ignoring the unreadable CVAT cache entry %s (%s)", path, err)
        return None
    return entry if isinstance(entry, dict) and entry.get("format") == CACHE_FORMAT else None


def cached_folders(cache_dir: Path, name: str) -> list[tuple[Path, dict[str, Any]]]:
    """Cache entries of the task called exactly ``name`` (newest CVAT ``updated_date`` first)."""
    found = []
    for folder in cache_dir.glob(f"*-{_safe_name(name)}"):
        entry = read_entry(folder)
        if entry is not None and entry.get("name") == name:
            found.append((folder, entry))
    return sorted(found, key=lambda item: item[1]["updated_date"], reverse=True)


@dataclass
class CvatSource:
    """The tasks ``tasks`` of the CVAT server in ``cvat`` (credentials from ``env``), through the cache."""

    cvat: CvatSettings
    cache_dir: Path
    tasks: list[str]
    env: Mapping[str, str] = field(default_factory=lambda: os.environ)

    def read_tasks(self, progress: bool = True) -> list[Task]:
        """Bring the cache up to date (unless offline), then parse the cached tasks."""
        if not self.tasks:
            raise SourceError("data.source is 'cvat' but annotations_list is empty: name the CVAT tasks to use")
        names = list(dict.fromkeys(self.tasks))
        folders = self._offline(names) if self.cvat.offline else self._online(names, progress)
        return [parsed_task(entry, folder) for folder, entry in folders]

    # ------------------------------------------------------------------ cache

    def _offline(self, names: list[str]) -> list[tuple[Path, dict[str, Any]]]:
        out, missing = [], []
        for name in names:
            found = cached_folders(self.cache_dir, name)
            if found:
                out.append(found[0])
            else:
                missing.append(name)
        if missing:
            raise SourceError(f"data.cvat.offline is set but task(s) {missing} are not in the CVAT cache "
                              f"{self.cache_dir}; run once with offline false to download them")
        return out

    def _online(self, names: list[str], progress: bool) -> list[tuple[Path, dict[str, Any]]]:
        from obdb.cvat import CvatCredentials, CvatError, connect, list_tasks

        try:
            creds = CvatCredentials.from_env(self.env, url=self.cvat.url)
            with connect(creds, allow_version_mismatch=self.cvat.allow_version_mismatch,
                         retries=self.cvat.retries) as session:
                found = list_tasks(session, names=names, with_labels=False)
                missing = [n for n in names if n not in {t.name for t in found}]
                if missing:
                    raise SourceError(f"CVAT at {session.url} has no task named {missing} (names match exactly)")
                doubles = sorted({t.name for t in found if sum(u.name == t.name for u in found) > 1})
                if doubles:
                    raise SourceError(f"CVAT at {session.url} has several tasks named {doubles}; rename all but one")
                by_name = {t.name: t for t in found}
                return [self._refresh(session, by_name[name], progress) for name in names]
        except CvatError as err:
            raise _source_error(err) from err

    def _refresh(self, session: Any, task: Any, progress: bool) -> tuple[Path, dict[str, Any]]:
        """The task's cache folder, downloading what changed since it was written."""
        from obdb.cvat import download_frame, get_annotations, task_frames, task_labels

        folder = self.cache_dir / f"{task.id}-{_safe_name(task.name)}"
        updated = task.updated_date.isoformat()
        entry = read_entry(folder)
        stale = entry is None or entry.get("updated_date") != updated or entry.get("name") != task.name
        if stale:
            frames = task_frames(session, task.id)
            entry = {"format": CACHE_FORMAT, "server": session.url, "id": task.id, "name": task.name,
                     "status": task.status, "updated_date": updated, "labels": task_labels(session, task.id),
                     "frames": [{"name": f.name, "width": f.width, "height": f.height, "deleted": f.deleted}
                                for f in frames],
                     "annotations": get_annotations(session, task.id)}
        todo = [(i, f["name"]) for i, f in enumerate(entry["frames"])
                if not f.get("deleted") and not frame_file(folder, i, f["name"]).is_file()]
        for index, name in tqdm(todo, desc=f"downloading {task.name}", unit="frame", disable=not progress):
            data = download_frame(session, task.id, index)
            with atomic_path(frame_file(folder, index, name)) as tmp:
                tmp.write_bytes(data)
        if stale or todo:
            write_json(folder / "task.json", entry)  # last: the entry is complete once this exists
        return folder, entry
