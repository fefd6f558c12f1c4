"""Changing CVAT: creating tasks, adding, replacing and deleting shapes, backing annotations up,
and moving jobs between stages.

Shapes travel in chunks (``add_shapes``): one request per chunk, never one per shape. Every write
names one task by id, so nothing here can touch a task other than the one it was given.
"""
from __future__ import annotations

import json
import logging
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Sequence

from cvat_sdk.api_client import Configuration, exceptions, models
from cvat_sdk.api_client.model_utils import validate_and_convert_types
from cvat_sdk.core.helpers import DeferredTqdmProgressReporter, get_paginated_collection
from tqdm import tqdm

from ..fileio import write_json
from .connection import CvatError, CvatSession
from .tasks import PAGE_SIZE, TaskInfo, get_annotations, get_task, list_tasks

log = logging.getLogger(__name__)

JOB_STAGES = ("annotation", "validation", "acceptance")
JOB_STATES = ("new", "in progress", "completed", "rejected")
SHAPE_DEFAULTS = {"occluded": False, "outside": False, "z_order": 0, "rotation": 0.0, "group": 0,
                  "source": "manual", "attributes": []}
SHAPE_KEYS = ("type", "frame", "label_id", "points", "score", *SHAPE_DEFAULTS)
_CONFIGURATION = Configuration()


def _label_request(spec: str | dict[str, Any]) -> models.PatchedLabelRequest:
    """A label from a name or ``{"name", "color"?, "attributes"?: [{"name", "input_type", "values",
    "default_value"?, "mutable"?}]}``."""
    if isinstance(spec, str):
        return models.PatchedLabelRequest(name=spec)
    if not spec.get("name"):
        raise CvatError(f"label {spec!r}: needs a name")
    attributes = [models.AttributeRequest(
        name=a["name"], mutable=bool(a.get("mutable", False)), input_type=a.get("input_type", "text"),
        values=[str(v) for v in a.get("values", [])],
        **({"default_value": str(a["default_value"])} if "default_value" in a else {}))
        for a in spec.get("attributes", [])]
    extra = {"color": spec["color"]} if spec.get("color") else {}
    return models.PatchedLabelRequest(name=spec["name"], attributes=attributes, **extra)


def create_task(session: CvatSession, name: str, labels: Sequence[str | dict[str, Any]], images: Sequence[Path], *,
                progress: bool = True, image_quality: int = 100, segment_size: int | None = None,
                allow_duplicate_name: bool = False) -> TaskInfo:
    """A new task with ``labels`` whose frames are ``images`` in the given order (frame i is
    ``images[i]``). A task that fails while its data uploads is deleted again, so no half-made
    task is left behind. A second task of the same name is refused (names identify tasks)."""
    paths = [Path(p) for p in images]
    if not paths:
        raise CvatError(f"task {name!r}: no images to upload")
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise CvatError(f"task {name!r}: image file not found: {missing[0]}"
                        + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    basenames = [p.name for p in paths]
    if len(set(basenames)) != len(basenames):
        dup = next(n for n in basenames if basenames.count(n) > 1)
        raise CvatError(f"task {name!r}: two images are named {dup!r}; CVAT keeps only file names")
    if not allow_duplicate_name and list_tasks(session, names=[name], with_labels=False):
        raise CvatError(f"CVAT at {session.url} already has a task named {name!r}")
    try:
        spec = models.TaskWriteRequest(name=name, labels=[_label_request(label) for label in labels],
                                       **({"segment_size": segment_size} if segment_size else {}))
    except (exceptions.ApiTypeError, exceptions.ApiValueError) as error:
        raise CvatError(f"task {name!r}: bad label specification: {error}") from error
    client = session.client
    task = session.with_retries(lambda: client.tasks.create(spec), what=f"creating task {name!r}",
                                idempotent=False)
    try:
        _upload(session, task, name, paths, progress=progress, image_quality=image_quality)
    except BaseException:
        log.warning("removing task %r (id %d): its data upload failed", name, task.id)
        try:
            delete_task(session, task.id)
        except CvatError as error:
            log.error("could not remove the half-made task %d: %s", task.id, error)
        raise
    return get_task(session, task.id)


def _upload(session: CvatSession, task: Any, name: str, paths: Sequence[Path], *, progress: bool,
            image_quality: int) -> None:
    client = session.client
    pbar = DeferredTqdmProgressReporter({"desc": f"upload {name}", "leave": False}) if progress else None
    session.with_retries(
        lambda: task.upload_data(list(paths), pbar=pbar, status_check_period=client.config.status_check_period,
                                 params={"image_quality": image_quality, "sorting_method": "predefined"}),
        what=f"uploading {len(paths)} images to task {name!r}", idempotent=False)


def fill_task(session: CvatSession, task_id: int, images: Sequence[Path], *, progress: bool = True,
              image_quality: int = 100) -> TaskInfo:
    """Upload ``images`` (frame i is ``images[i]``) into an existing task that holds none: the
    empty leftover of a creation cut off before its data arrived. A rerun fills it instead of
    failing on it; nothing is deleted if this fails too, so the next rerun tries again."""
    current = get_task(session, task_id, with_labels=False)
    if current.size:
        raise CvatError(f"task {current.name!r} (id {task_id}) already holds {current.size} images")
    paths = [Path(p) for p in images]
    client = session.client
    task = session.with_retries(lambda: client.tasks.retrieve(task_id), what=f"reading task {task_id}")
    _upload(session, task, current.name, paths, progress=progress, image_quality=image_quality)
    return get_task(session, task_id)


def delete_task(session: CvatSession, task_id: int) -> None:
    api = session.client.api_client.tasks_api
    session.with_retries(lambda: api.destroy(task_id), what=f"deleting task {task_id}")


def add_label_attributes(session: CvatSession, label_id: int, attributes: Sequence[dict[str, Any]]) -> None:
    """Add attribute specs (``{"name", "input_type", "values", "default_value"?, "mutable"?}``) to
    an existing label (PATCH ``/api/labels/<id>``). Existing attributes and shapes are unchanged."""
    if not attributes:
        return
    request = _label_request({"name": "_", "attributes": list(attributes)})
    patch = models.PatchedLabelRequest(attributes=request.attributes)
    api = session.client.api_client.labels_api
    session.with_retries(lambda: api.partial_update(label_id, patched_label_request=patch, _parse_response=False),
                         what=f"adding attributes {', '.join(a['name'] for a in attributes)} to label {label_id}")


def update_label_attributes(session: CvatSession, label_id: int, attributes: Sequence[dict[str, Any]]) -> None:
    """Change existing attribute specs of a label (each ``{"id", "name", "input_type", "values",
    "default_value", "mutable"}``; PATCH ``/api/labels/<id>``). Stored values are unchanged."""
    if not attributes:
        return
    try:
        patch = models.PatchedLabelRequest(attributes=[models.AttributeRequest(
            id=int(a["id"]), name=a["name"], mutable=bool(a.get("mutable", False)),
            input_type=a.get("input_type", "text"), values=[str(v) for v in a.get("values", [])],
            default_value=str(a.get("default_value", ""))) for a in attributes])
    except (exceptions.ApiTypeError, exceptions.ApiValueError, KeyError) as error:
        raise CvatError(f"label {label_id}: bad attribute specification: {error}") from error
    api = session.client.api_client.labels_api
    session.with_retries(lambda: api.partial_update(label_id, patched_label_request=patch, _parse_response=False),
                         what=f"changing attributes {', '.join(a['name'] for a in attributes)} of label {label_id}")


def update_objects(session: CvatSession, task_id: int, data: dict[str, Any], *, chunk_size: int = 2000) -> int:
    """Rewrite existing objects of the task by id (PATCH ``action=update``): ``data`` holds
    ``shapes``/``tags``/``tracks`` as read, changed. Returns the number of requests made."""
    requests = 0
    for key in ("shapes", "tags", "tracks"):
        objects = list(data.get(key) or [])
        for i in range(0, len(objects), chunk_size):
            chunk = objects[i:i + chunk_size]
            _patch(session, task_id, "update", {"shapes": [], "tags": [], "tracks": [], key: chunk},
                   f"updating {len(chunk)} {key} of task {task_id}", idempotent=True)
            requests += 1
    return requests


def _clean_shape(shape: dict[str, Any], index: int) -> dict[str, Any]:
    missing = [k for k in ("type", "frame", "label_id", "points") if k not in shape]
    if missing:
        raise CvatError(f"shape {index}: missing {', '.join(missing)}")
    clean = {**SHAPE_DEFAULTS, **{k: v for k, v in shape.items() if k in SHAPE_KEYS}}
    clean["points"] = [float(p) for p in clean["points"]]
    clean["rotation"] = float(clean["rotation"])
    clean["attributes"] = [{"spec_id": int(a["spec_id"]), "value": str(a["value"])} for a in clean["attributes"]]
    return clean


def _labeled_data(data: dict[str, Any], model: type, what: str) -> Any:
    """Plain CVAT JSON → the SDK request model, with a clear error for a malformed shape."""
    try:
        return validate_and_convert_types(data, (model,), ["annotations"], True, True, configuration=_CONFIGURATION)
    except (exceptions.ApiTypeError, exceptions.ApiValueError) as error:
        raise CvatError(f"{what}: malformed annotations: {error}") from error


def _patch(session: CvatSession, task_id: int, action: str, data: dict[str, Any], what: str,
           idempotent: bool) -> None:
    api = session.client.api_client.tasks_api
    body = _labeled_data({"version": 0, "tags": [], "tracks": [], **data}, models.PatchedLabeledDataRequest, what)
    session.with_retries(lambda: api.partial_update_annotations(action, task_id, patched_labeled_data_request=body,
                                                                _parse_response=False),
                         what=what, idempotent=idempotent)


def add_shapes(session: CvatSession, task_id: int, shapes: Sequence[dict[str, Any]], *, chunk_size: int = 2000,
               progress: bool = False) -> int:
    """Append ``shapes`` (CVAT JSON dicts; any ``id`` is dropped) to the task with PATCH
    ``action=create``, ``chunk_size`` shapes per request. Returns the number of requests made."""
    if chunk_size < 1:
        raise ValueError("chunk_size must be at least 1")
    clean = [_clean_shape(shape, i) for i, shape in enumerate(shapes)]
    chunks = [clean[i:i + chunk_size] for i in range(0, len(clean), chunk_size)]
    for n, chunk in enumerate(tqdm(chunks, desc=f"shapes → task {task_id}", unit="chunk", disable=not progress,
                                   leave=False)):
        _patch(session, task_id, "create", {"shapes": chunk},
               f"adding shapes {n * chunk_size}-{n * chunk_size + len(chunk) - 1} to task {task_id}",
               idempotent=False)
    log.info("added %d shapes to task %d in %d requests", len(clean), task_id, len(chunks))
    return len(chunks)


def replace_annotations(session: CvatSession, task_id: int, data: dict[str, Any]) -> None:
    """Make the task's annotations exactly ``data`` (``{"shapes", "tracks", "tags"}``), e.g. to
    restore a backup."""
    api = session.client.api_client.tasks_api
    what = f"replacing the annotations of task {task_id}"
    body = _labeled_data({"version": int(data.get("version", 0)), "tags": data.get("tags", []),
                          "shapes": data.get("shapes", []), "tracks": data.get("tracks", [])},
                         models.LabeledDataRequest, what)
    session.with_retries(lambda: api.update_annotations(task_id, labeled_data_request=body), what=what)


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:80] or "task"


def backup_annotations(session: CvatSession, task_id: int, out_dir: Path) -> Path:
    """Save the task's annotations to ``<out_dir>/<id>-<safe name>-<UTC time>.json`` (atomically)
    before changing them; ``read_backup`` + ``replace_annotations`` restore it."""
    task = get_task(session, task_id, with_labels=True)
    annotations = get_annotations(session, task_id)
    stamp = datetime.now(timezone.utc)
    path = Path(out_dir) / f"{task_id}-{_safe_name(task.name)}-{stamp.strftime('%Y%m%dT%H%M%S.%fZ')}.json"
    write_json(path, {"format": "obdb-cvat-backup", "saved_at": stamp.isoformat(), "server": session.url,
                      "task": {"id": task.id, "name": task.name, "status": task.status,
                               "updated_date": task.updated_date.isoformat(), "labels": task.label_specs},
                      "annotations": annotations})
    log.info("backed up %d shapes and %d tracks of task %d to %s", len(annotations["shapes"]),
             len(annotations["tracks"]), task_id, path)
    return path


def read_backup(path: Path) -> dict[str, Any]:
    """The annotations saved by ``backup_annotations``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("format") != "obdb-cvat-backup":
        raise CvatError(f"{path}: not an obdb CVAT annotation backup")
    return data["annotations"]


def set_jobs_state(session: CvatSession, task_id: int, *, state: str | None = None,
                   stage: str | None = None) -> int:
    """Move every job of the task to ``stage`` and/or ``state`` (e.g. ``stage="acceptance",
    state="completed"`` marks the task completed). Returns how many jobs changed."""
    if state is None and stage is None:
        raise ValueError("set_jobs_state: give a state and/or a stage")
    if state is not None and state not in JOB_STATES:
        raise CvatError(f"unknown job state {state!r}: use one of {', '.join(JOB_STATES)}")
    if stage is not None and stage not in JOB_STAGES:
        raise CvatError(f"unknown job stage {stage!r}: use one of {', '.join(JOB_STAGES)}")
    api = session.client.api_client.jobs_api
    jobs = session.with_retries(lambda: get_paginated_collection(api.list_endpoint, task_id=task_id,
                                                                 page_size=PAGE_SIZE),
                                what=f"listing the jobs of task {task_id}")
    change = {k: v for k, v in (("state", state), ("stage", stage)) if v is not None}
    changed = 0
    for job in jobs:
        if all(str(getattr(job, k)) == v for k, v in change.items()):
            continue
        request = models.PatchedJobWriteRequest(**change)
        session.with_retries(lambda: api.partial_update(job.id, patched_job_write_request=request),
                             what=f"updating job {job.id} of task {task_id}")
        changed += 1
    return changed


def delete_shapes(session: CvatSession, task_id: int, shape_ids: Iterable[int], *, chunk_size: int = 2000) -> int:
    """Delete the task's shapes with these ids (ids the task does not have are logged and
    skipped). Returns how many were deleted."""
    wanted = set(int(i) for i in shape_ids)
    if not wanted:
        return 0
    shapes = [s for s in get_annotations(session, task_id)["shapes"] if s.get("id") in wanted]
    missing = wanted - {s["id"] for s in shapes}
    if missing:
        log.warning("task %d has no shapes with ids %s", task_id, sorted(missing)[:20])
    for i in range(0, len(shapes), chunk_size):
        chunk = shapes[i:i + chunk_size]
        _patch(session, task_id, "delete", {"shapes": chunk}, f"deleting {len(chunk)} shapes of task {task_id}",
               idempotent=True)
    return len(shapes)
