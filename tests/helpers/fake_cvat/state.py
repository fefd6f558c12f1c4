"""In-memory state of the fake CVAT server: users, tasks (frames, labels, jobs, annotations) and
background requests.

Everything here is plain Python data in CVAT's JSON shapes; ``server.py`` turns it into HTTP
answers through the SDK's own models. One lock (held by the server) guards all of it.
"""
from __future__ import annotations

import copy
import io
import itertools
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterable

from PIL import Image

STATUSES = ("annotation", "validation", "completed")
SHAPE_TYPES = ("rectangle", "polygon", "polyline", "points", "ellipse", "cuboid", "mask", "skeleton")
# job stage/state that give each task status (CVAT derives a job's status from its stage)
STAGE_OF_STATUS = {"annotation": ("annotation", "new"), "validation": ("validation", "new"),
                   "completed": ("acceptance", "completed")}
STATUS_OF_STAGE = {"annotation": "annotation", "validation": "validation", "acceptance": "completed"}
COLOURS = ("#fa3253", "#33ddff", "#34d1b7", "#ff007c", "#ddff33", "#24b353", "#b83df5", "#66ff66")


class BadRequest(Exception):
    """A request the real server would refuse with 400; the message becomes the body."""


class NotFound(Exception):
    pass


@dataclass
class Frame:
    name: str
    width: int
    height: int
    data: bytes


@dataclass
class Task:
    id: int
    name: str
    created: datetime
    updated: datetime
    labels: list[dict[str, Any]] = field(default_factory=list)
    frames: list[Frame] = field(default_factory=list)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    shapes: list[dict[str, Any]] = field(default_factory=list)
    tracks: list[dict[str, Any]] = field(default_factory=list)
    tags: list[dict[str, Any]] = field(default_factory=list)
    version: int = 0
    image_quality: int = 70
    segment_size: int = 0

    @property
    def status(self) -> str:
        """Like CVAT: the least advanced job decides the task's status."""
        statuses = [job["status"] for job in self.jobs] or ["annotation"]
        return min(statuses, key=STATUSES.index)

    def label_ids(self) -> set[int]:
        return {label["id"] for label in self.labels}


def png_bytes(width: int, height: int, seed: int = 0) -> bytes:
    """A small PNG of the given size (a frame added by name and size only)."""
    image = Image.new("RGB", (width, height), ((37 * seed) % 256, (91 * seed) % 256, 128))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def frame_from(item: Any, index: int) -> Frame:
    """A frame from a path to an image, a ``(name, width, height)`` tuple, a dict with those keys
    (and optional ``data``), or ``(name, bytes)``."""
    if isinstance(item, Frame):
        return item
    if isinstance(item, (str, Path)):
        path = Path(item)
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as image:
            return Frame(path.name, image.width, image.height, data)
    if isinstance(item, dict):
        item = (item["name"], item.get("width"), item.get("height"), item.get("data"))
    name, *rest = item
    if len(rest) == 1 and isinstance(rest[0], bytes):
        with Image.open(io.BytesIO(rest[0])) as image:
            return Frame(str(name), image.width, image.height, rest[0])
    width, height = int(rest[0]), int(rest[1])
    data = rest[2] if len(rest) > 2 and rest[2] is not None else png_bytes(width, height, index)
    return Frame(str(name), width, height, data)


class State:
    """The server's data. Methods raise ``BadRequest``/``NotFound`` like CVAT's validation."""

    def __init__(self, username: str, password: str, token: str, *, legacy: bool = False) -> None:
        self.legacy = legacy  # answer as CVAT 2.23 does (see server.py)
        self.users = {username: {"id": 1, "username": username, "password": password}}
        self.tokens = {token: username}
        self.sessions: dict[str, tuple[str, str]] = {}  # sessionid -> (username, csrftoken)
        self.tasks: dict[int, Task] = {}
        self.requests: dict[str, dict[str, Any]] = {}
        self.uploads: dict[int, dict[str, Any]] = {}  # task id -> files received so far
        self.tus: dict[str, dict[str, Any]] = {}  # upload id -> {task, name, length, data}
        self._ids = {kind: itertools.count(1) for kind in ("task", "label", "attr", "job", "shape", "track")}
        self._last_time = datetime(2024, 1, 1, tzinfo=timezone.utc)

    # ------------------------------------------------------------------ time and ids

    def now(self) -> datetime:
        """Strictly increasing UTC times (≥ 1 ms apart), with microseconds like Django's."""
        now = datetime.now(timezone.utc)
        if now < self._last_time + timedelta(milliseconds=1):
            now = self._last_time + timedelta(milliseconds=1, microseconds=7)
        self._last_time = now
        return now

    def next_id(self, kind: str) -> int:
        return next(self._ids[kind])

    def task(self, task_id: int) -> Task:
        try:
            return self.tasks[task_id]
        except KeyError:
            raise NotFound(f"task {task_id}") from None

    def touch(self, task: Task) -> None:
        task.updated = self.now()

    # ------------------------------------------------------------------ tasks

    def make_labels(self, task_id: int, specs: Iterable[str | dict[str, Any]]) -> list[dict[str, Any]]:
        labels = []
        for i, spec in enumerate(specs):
            spec = {"name": spec} if isinstance(spec, str) else dict(spec)
            if not spec.get("name"):
                raise BadRequest("labels: every label needs a name")
            attributes = []
            for attr in spec.get("attributes") or []:
                input_type = attr.get("input_type", "text")
                values = list(attr.get("values") or [])
                attributes.append({"id": self.next_id("attr"), "name": attr["name"],
                                   "mutable": bool(attr.get("mutable", False)), "input_type": input_type,
                                   "values": values,
                                   "default_value": attr.get("default_value", values[0] if values else "")})
            labels.append({"id": self.next_id("label"), "name": spec["name"],
                           "color": spec.get("color") or COLOURS[i % len(COLOURS)], "attributes": attributes,
                           "type": spec.get("type", "any"), "svg": "", "sublabels": [], "task_id": task_id,
                           "project_id": None, "parent_id": None, "has_parent": False})
        names = [label["name"] for label in labels]
        if len(set(names)) != len(names):
            raise BadRequest("labels: label names must be unique")
        return labels

    def create_task(self, name: str, labels: Iterable[str | dict[str, Any]], *, segment_size: int = 0) -> Task:
        if not name:
            raise BadRequest("name: This field may not be blank.")
        task_id = self.next_id("task")
        now = self.now()
        task = Task(task_id, name, now, now, segment_size=segment_size)
        task.labels = self.make_labels(task_id, labels)
        self.tasks[task_id] = task
        return task

    def set_frames(self, task: Task, frames: list[Frame], *, status: str = "annotation") -> None:
        """Attach the data and cut it into jobs (``segment_size`` frames each; 0 = one job)."""
        if task.frames:
            raise BadRequest("Adding more data is not supported")
        task.frames = frames
        size = task.segment_size or max(len(frames), 1)
        stage, state = STAGE_OF_STATUS[status]
        for start in range(0, max(len(frames), 1), size):
            stop = min(start + size, len(frames)) - 1
            task.jobs.append({"id": self.next_id("job"), "task_id": task.id, "start_frame": start,
                              "stop_frame": stop, "stage": stage, "state": state,
                              "status": STATUS_OF_STAGE[stage], "created": task.created, "updated": task.created})
        self.touch(task)

    def set_job(self, job_id: int, *, stage: str | None = None, state: str | None = None) -> dict[str, Any]:
        for task in self.tasks.values():
            for job in task.jobs:
                if job["id"] == job_id:
                    if stage is not None:
                        job["stage"] = stage
                        job["status"] = STATUS_OF_STAGE[stage]
                    if state is not None:
                        job["state"] = state
                    job["updated"] = self.now()
                    self.touch(task)
                    return job
        raise NotFound(f"job {job_id}")

    def set_status(self, task: Task, status: str) -> None:
        stage, state = STAGE_OF_STATUS[status]
        for job in task.jobs:
            job.update(stage=stage, state=state, status=STATUS_OF_STAGE[stage])
        self.touch(task)

    # ------------------------------------------------------------------ annotations

    def _check_object(self, task: Task, obj: dict[str, Any], kind: str) -> None:
        if obj.get("label_id") not in task.label_ids():
            raise BadRequest(f"{kind}: label_id {obj.get('label_id')!r} is not a label of task {task.id}")
        frame = obj.get("frame")
        if not isinstance(frame, int) or not 0 <= frame < max(len(task.frames), 1):
            raise BadRequest(f"{kind}: frame {frame!r} is outside task {task.id} (size {len(task.frames)})")
        for shape in [obj] if kind == "shape" else obj.get("shapes", []):
            if shape.get("type") not in SHAPE_TYPES:
                raise BadRequest(f"{kind}: unknown shape type {shape.get('type')!r}")
            if not shape.get("points") and shape.get("type") != "skeleton":
                raise BadRequest(f"{kind}: points must not be empty")

    def _normalise(self, obj: dict[str, Any], kind: str) -> dict[str, Any]:
        obj = copy.deepcopy(obj)
        obj.setdefault("group", 0)
        obj.setdefault("source", "manual")
        obj.setdefault("attributes", [])
        if kind in ("shape", "tracked"):
            obj.setdefault("occluded", False)
            obj.setdefault("outside", False)
            obj.setdefault("z_order", 0)
            obj.setdefault("rotation", 0.0)
            obj["points"] = [float(p) for p in obj.get("points", [])]
        if kind == "shape":
            obj.setdefault("elements", [])
            if self.legacy:  # 2.23 has no score field: the serializer drops it
                obj.pop("score", None)
            else:
                obj.setdefault("score", 0.0)
        if kind == "tracked":  # a track's keyframe: no label, group or source of its own
            obj.pop("group", None)
            obj.pop("source", None)
            obj["id"] = self.next_id("shape")
        if kind == "track":
            obj.setdefault("elements", [])
            obj["shapes"] = [self._normalise(s, "tracked") for s in obj.get("shapes", [])]
        return obj

    def add_annotations(self, task: Task, data: dict[str, Any]) -> dict[str, Any]:
        """PATCH action=create: new ids for everything; returns what was created."""
        created = {"version": task.version + 1, "tags": [], "shapes": [], "tracks": []}
        for kind, key, id_kind in (("shape", "shapes", "shape"), ("track", "tracks", "track"),
                                   ("tag", "tags", "shape")):
            for obj in data.get(key) or []:
                self._check_object(task, obj, kind)
                new = self._normalise(obj, kind)
                new["id"] = self.next_id(id_kind)
                created[key].append(new)
        for key in ("shapes", "tracks", "tags"):
            getattr(task, key).extend(created[key])
        task.version += 1
        self.touch(task)
        return created

    def update_annotations(self, task: Task, data: dict[str, Any]) -> dict[str, Any]:
        """PATCH action=update: replace objects by id."""
        for key, kind in (("shapes", "shape"), ("tracks", "track"), ("tags", "tag")):
            current = {obj["id"]: i for i, obj in enumerate(getattr(task, key))}
            for obj in data.get(key) or []:
                if obj.get("id") not in current:
                    raise BadRequest(f"{key}: no object with id {obj.get('id')!r} in task {task.id}")
                self._check_object(task, obj, kind)
                getattr(task, key)[current[obj["id"]]] = {**self._normalise(obj, kind), "id": obj["id"]}
        task.version += 1
        self.touch(task)
        return data

    def delete_annotations(self, task: Task, data: dict[str, Any]) -> dict[str, Any]:
        """PATCH action=delete: drop the objects whose ids are given."""
        for key in ("shapes", "tracks", "tags"):
            ids = {obj.get("id") for obj in data.get(key) or []}
            setattr(task, key, [obj for obj in getattr(task, key) if obj["id"] not in ids])
        task.version += 1
        self.touch(task)
        return data

    def replace_annotations(self, task: Task, data: dict[str, Any]) -> dict[str, Any]:
        """PUT: the task's annotations become exactly ``data`` (new ids)."""
        task.shapes, task.tracks, task.tags = [], [], []
        return self.add_annotations(task, data)

    def clear_annotations(self, task: Task) -> None:
        task.shapes, task.tracks, task.tags = [], [], []
        task.version += 1
        self.touch(task)

    def annotations(self, task: Task, *, as_read: bool = False) -> dict[str, Any]:
        """The stored annotations; ``as_read`` in legacy mode: as a 2.23 server answers a read,
        with every attribute of an object's label that the object has no value for filled in with
        the attribute's default (nothing is stored)."""
        data = copy.deepcopy({"version": task.version, "tags": task.tags, "shapes": task.shapes,
                              "tracks": task.tracks})
        if as_read and self.legacy:
            specs = {label["id"]: label["attributes"] for label in task.labels}
            for obj in data["shapes"] + data["tags"] + data["tracks"]:
                have = {a["spec_id"] for a in obj.get("attributes") or []}
                obj["attributes"] = list(obj.get("attributes") or []) + [
                    {"spec_id": a["id"], "value": a.get("default_value", "")}
                    for a in specs.get(obj.get("label_id"), []) if a["id"] not in have]
        return data
