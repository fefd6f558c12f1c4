"""Reading CVAT tasks: listing and finding them by exact name, frame metadata, annotations (with
tracks expanded to per-frame shapes) and frame images.

Task names are matched exactly, never as prefixes or regexes (a task ``a`` never matches
``a_b``); a glob ``pattern`` is matched here, on the client, not sent to the server.
"""
from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Iterable

from cvat_sdk.core.helpers import get_paginated_collection

from .connection import CvatError, CvatSession

STATUSES = ("annotation", "validation", "completed")
PAGE_SIZE = 100
MAX_FILTER_CHARS = 2000  # keep the filter query well inside the request line limits of proxies


@dataclass(frozen=True)
class TaskInfo:
    id: int
    name: str
    status: str
    updated_date: datetime
    created_date: datetime
    size: int
    labels: dict[int, str] = field(default_factory=dict)
    label_specs: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class FrameMeta:
    index: int
    name: str
    width: int
    height: int
    deleted: bool = False


def _statuses(status: str | Iterable[str] | None) -> list[str] | None:
    if status is None:
        return None
    chosen = [status] if isinstance(status, str) else list(status)
    unknown = [s for s in chosen if s not in STATUSES]
    if unknown:
        raise CvatError(f"unknown task status {unknown[0]!r}: use one of {', '.join(STATUSES)}")
    return chosen


def _server_filter(names: list[str] | None, statuses: list[str] | None) -> str | None:
    """A JSON Logic ``filter`` narrowing the listing on the server; exact matching is still done
    here. A long name list is left out (filtered client side) to keep the URL short."""
    conditions: list[dict[str, Any]] = []
    if statuses is not None:
        conditions.append({"in": [{"var": "status"}, statuses]})
    if names is not None:
        by_name = {"in": [{"var": "name"}, names]}
        if len(json.dumps(by_name)) <= MAX_FILTER_CHARS:
            conditions.append(by_name)
    if not conditions:
        return None
    return json.dumps(conditions[0] if len(conditions) == 1 else {"and": conditions})


def task_labels(session: CvatSession, task_id: int) -> list[dict[str, Any]]:
    """The task's labels as ``{"id", "name", "color", "attributes": [{"id", "name", "input_type",
    "mutable", "values", "default_value"}]}``."""
    endpoint = session.client.api_client.labels_api.list_endpoint
    raw = session.with_retries(lambda: get_paginated_collection(endpoint, return_json=True, task_id=task_id,
                                                                page_size=PAGE_SIZE),
                               what=f"reading the labels of task {task_id}")
    keys = ("id", "name", "input_type", "mutable", "values", "default_value")
    return [{"id": label["id"], "name": label["name"], "color": label.get("color", ""),
             "attributes": [{k: a.get(k) for k in keys} for a in label.get("attributes", [])]}
            for label in raw]


def _task_info(session: CvatSession, task: Any, with_labels: bool) -> TaskInfo:
    specs = task_labels(session, task.id) if with_labels else []
    return TaskInfo(id=task.id, name=task.name, status=str(task.status),
                    updated_date=task.updated_date.astimezone(timezone.utc),
                    created_date=task.created_date.astimezone(timezone.utc), size=task.size or 0,
                    labels={spec["id"]: spec["name"] for spec in specs}, label_specs=specs)


def list_tasks(session: CvatSession, *, names: Iterable[str] | None = None, pattern: str | None = None,
               status: str | Iterable[str] | None = None, with_labels: bool = True) -> list[TaskInfo]:
    """Tasks whose name is one of ``names`` (exactly) and/or matches the glob ``pattern``, in one
    of the ``status`` values; sorted by name, then id. ``with_labels=False`` saves one request
    per task when only names and dates are needed."""
    wanted = None if names is None else list(dict.fromkeys(names))
    statuses = _statuses(status)
    if wanted == []:
        return []
    query: dict[str, Any] = {"page_size": PAGE_SIZE, "sort": "id"}
    server_filter = _server_filter(wanted, statuses)
    if server_filter is not None:
        query["filter"] = server_filter
    endpoint = session.client.api_client.tasks_api.list_endpoint
    found = session.with_retries(lambda: get_paginated_collection(endpoint, **query), what="listing tasks")
    chosen, seen = [], set()
    for task in found:
        if task.id in seen:  # a task created while paging can shift an item onto the next page
            continue
        seen.add(task.id)
        if wanted is not None and task.name not in wanted:
            continue
        if pattern is not None and not fnmatch.fnmatchcase(task.name, pattern):
            continue
        if statuses is not None and str(task.status) not in statuses:
            continue
        chosen.append(task)
    chosen.sort(key=lambda t: (t.name, t.id))
    return [_task_info(session, task, with_labels) for task in chosen]


def find_task(session: CvatSession, name: str, *, with_labels: bool = True) -> TaskInfo:
    """The one task called exactly ``name`` (any status)."""
    found = list_tasks(session, names=[name], with_labels=with_labels)
    if not found:
        raise CvatError(f"CVAT at {session.url} has no task named {name!r}")
    if len(found) > 1:
        ids = ", ".join(str(t.id) for t in found)
        raise CvatError(f"CVAT at {session.url} has {len(found)} tasks named {name!r} (ids {ids}); "
                        "rename or delete all but one")
    return found[0]


def get_task(session: CvatSession, task_id: int, *, with_labels: bool = True) -> TaskInfo:
    api = session.client.api_client.tasks_api
    task, _ = session.with_retries(lambda: api.retrieve(task_id), what=f"reading task {task_id}")
    return _task_info(session, task, with_labels)


def task_frames(session: CvatSession, task_id: int) -> list[FrameMeta]:
    """One entry per task frame (index = CVAT frame number). A video task has one size for all its
    frames and gets CVAT's export names ``frame_000000``…"""
    api = session.client.api_client.tasks_api
    meta, _ = session.with_retries(lambda: api.retrieve_data_meta(task_id),
                                   what=f"reading the frame list of task {task_id}")
    frames = list(meta.frames or [])
    deleted = set(meta.deleted_frames or [])
    if len(frames) < meta.size and frames:
        first = frames[0]
        return [FrameMeta(i, f"frame_{i:06d}", first.width, first.height, i in deleted) for i in range(meta.size)]
    return [FrameMeta(i, f.name, f.width, f.height, i in deleted) for i, f in enumerate(frames)]


def get_annotations(session: CvatSession, task_id: int) -> dict[str, Any]:
    """The task's annotations as CVAT returns them: ``{"version", "tags", "shapes", "tracks"}``
    (plain JSON; not parsed into SDK models, which is slow for large tasks)."""
    api = session.client.api_client.tasks_api

    def fetch() -> dict[str, Any]:
        _, response = api.retrieve_annotations(task_id, _parse_response=False)
        return json.loads(response.data)

    data = session.with_retries(fetch, what=f"reading the annotations of task {task_id}")
    return {key: data.get(key, 0 if key == "version" else []) for key in ("version", "tags", "shapes", "tracks")}


def download_frame(session: CvatSession, task_id: int, index: int) -> bytes:
    """Frame ``index`` of the task as the originally uploaded image bytes."""
    api = session.client.api_client.tasks_api

    def fetch() -> bytes:
        _, response = api.retrieve_data(task_id, number=index, type="frame", quality="original",
                                        _parse_response=False)
        return response.data

    return session.with_retries(fetch, what=f"downloading frame {index} of task {task_id}")


# ---------------------------------------------------------------------------------------- tracks


def _lerp(a: list[float], b: list[float], t: float) -> list[float]:
    return [x + (y - x) * t for x, y in zip(a, b)]


def _rotation(a: float, b: float, t: float) -> float:
    """Angles interpolate the short way round, as in CVAT."""
    diff = (b - a + 180.0) % 360.0 - 180.0
    return (a + diff * t) % 360.0


def _frame_shape(track: dict[str, Any], key: dict[str, Any], frame: int, points: list[float],
                 rotation: float, keyframe: bool) -> dict[str, Any]:
    return {"type": key["type"], "frame": frame, "label_id": track["label_id"], "points": points,
            "occluded": bool(key.get("occluded", False)), "outside": False,
            "z_order": key.get("z_order", 0), "rotation": rotation,
            "attributes": list(track.get("attributes", [])) + list(key.get("attributes", [])),
            "group": track.get("group") or 0, "source": track.get("source", "manual"),
            "track_id": track.get("id"), "keyframe": keyframe}


def _track_shapes(track: dict[str, Any], n_frames: int) -> list[dict[str, Any]]:
    keys = sorted(track.get("shapes", []), key=lambda s: s["frame"])
    out: list[dict[str, Any]] = []
    for i, key in enumerate(keys):
        if key["frame"] >= n_frames:
            break
        if key.get("outside"):
            continue  # hidden from this keyframe until the next one
        nxt = keys[i + 1] if i + 1 < len(keys) else None
        stop = min(nxt["frame"] if nxt is not None else n_frames, n_frames)
        same = (nxt is not None and nxt["type"] == key["type"]
                and len(nxt.get("points", [])) == len(key.get("points", [])))
        for frame in range(key["frame"], stop):
            t = (frame - key["frame"]) / (nxt["frame"] - key["frame"]) if nxt is not None else 0.0
            if same and t > 0:
                points = _lerp(key["points"], nxt["points"], t)
                rotation = _rotation(key.get("rotation", 0.0), nxt.get("rotation", 0.0), t)
            else:
                points, rotation = list(key["points"]), key.get("rotation", 0.0)
            out.append(_frame_shape(track, key, frame, points, rotation, frame == key["frame"]))
    return out


def expand_tracks(annotations: dict[str, Any], n_frames: int) -> list[dict[str, Any]]:
    """All shapes of a task, one dict per frame, tracks included.

    A track is visible from each keyframe that is not ``outside`` up to the next keyframe (or the
    task's end); positions between two keyframes of the same point count are interpolated
    linearly (CVAT's rule for boxes and points; polygons of changing point count keep the earlier
    keyframe's points). Track shapes carry ``track_id`` and ``keyframe``; plain shapes are copied.
    """
    shapes = [dict(s) for s in annotations.get("shapes", []) if 0 <= s.get("frame", -1) < n_frames]
    for track in annotations.get("tracks", []):
        shapes.extend(_track_shapes(track, n_frames))
    shapes.sort(key=lambda s: s["frame"])
    return shapes
