"""JSON bodies of the fake CVAT server, built through ``cvat_sdk.api_client.models``.

Each payload is first converted into the SDK model the real server's schema names (type-checked
exactly as the SDK checks a response) and then serialised with the SDK's own sanitisation, so a
field the SDK would not accept fails here, in the fake, rather than silently in a test.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from cvat_sdk.api_client import ApiClient, Configuration, models
from cvat_sdk.api_client.model_utils import validate_and_convert_types

from .state import Task

_CONFIGURATION = Configuration()


def dump(data: Any, model: type) -> Any:
    """``data`` (JSON names) → SDK ``model`` (validated) → JSON-able dict."""
    obj = validate_and_convert_types(data, (model,), ["payload"], True, True, configuration=_CONFIGURATION)
    return ApiClient.sanitize_for_serialization(obj)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def about(version: str) -> Any:
    return dump({"name": "Computer Vision Annotation Tool", "description": "fake CVAT for tests",
                 "version": version, "logo_url": "", "subtitle": ""}, models.About)


def user(info: dict[str, Any], base: str) -> Any:
    return dump({"id": info["id"], "username": info["username"], "url": f"{base}/api/users/{info['id']}",
                 "first_name": "", "last_name": "", "email": "", "is_staff": True, "is_superuser": True,
                 "is_active": True, "last_login": None, "date_joined": "2024-01-01T00:00:00Z",
                 "groups": ["admin"]}, models.MetaUser)


def _owner(base: str) -> dict[str, Any]:
    return {"id": 1, "username": "admin", "url": f"{base}/api/users/1", "first_name": "", "last_name": ""}


def task(t: Task, base: str) -> Any:
    completed = sum(job["status"] == "completed" for job in t.jobs)
    validation = sum(job["status"] == "validation" for job in t.jobs)
    return dump({
        "id": t.id, "name": t.name, "url": f"{base}/api/tasks/{t.id}", "project_id": None, "project_name": None,
        "owner": _owner(base), "assignee": None, "bug_tracker": "", "created_date": iso(t.created),
        "updated_date": iso(t.updated), "overlap": 0, "segment_size": t.segment_size or len(t.frames),
        "status": t.status, "data_chunk_size": 72, "data_compressed_chunk_type": "imageset",
        "data_original_chunk_type": "imageset", "size": len(t.frames), "image_quality": t.image_quality,
        "data": t.id if t.frames else None, "dimension": "2d", "mode": "annotation", "subset": "",
        "organization": None, "target_storage": None, "source_storage": None,
        "jobs": {"count": len(t.jobs), "completed": completed, "validation": validation,
                 "url": f"{base}/api/jobs?task_id={t.id}"},
        "labels": {"url": f"{base}/api/labels?task_id={t.id}"},
    }, models.TaskRead)


def job(j: dict[str, Any], t: Task, base: str) -> Any:
    return dump({
        "id": j["id"], "url": f"{base}/api/jobs/{j['id']}", "task_id": t.id, "task_name": t.name,
        "project_id": None, "project_name": None, "assignee": None, "guide_id": None, "dimension": "2d",
        "mode": "annotation", "media_type": "image", "bug_tracker": None, "status": j["status"],
        "stage": j["stage"], "state": j["state"], "frame_count": j["stop_frame"] - j["start_frame"] + 1,
        "start_frame": j["start_frame"], "stop_frame": j["stop_frame"], "data_chunk_size": 72,
        "data_compressed_chunk_type": "imageset", "data_original_chunk_type": "imageset",
        "created_date": iso(j["created"]), "updated_date": iso(j["updated"]), "type": "annotation",
        "organization": None, "target_storage": None, "source_storage": None,
        "issues": {"count": 0, "url": f"{base}/api/issues?job_id={j['id']}"},
        "labels": {"url": f"{base}/api/labels?job_id={j['id']}"}, "parent_job_id": None, "replicas_count": 0,
    }, models.JobRead)


def paginated(results: list[Any], count: int, next_url: str | None, previous_url: str | None,
              model: type) -> Any:
    return dump({"count": count, "results": results, "next": next_url, "previous": previous_url}, model)


def data_meta(t: Task) -> Any:
    return dump({
        "chunks_updated_date": iso(t.updated), "chunk_size": 72, "size": len(t.frames),
        "image_quality": t.image_quality, "start_frame": 0, "stop_frame": max(len(t.frames) - 1, 0),
        "frame_filter": "", "deleted_frames": [], "included_frames": None, "storage": "local",
        "cloud_storage_id": None, "chapters": None,
        "frames": [{"name": f.name, "width": f.width, "height": f.height, "related_files": 0,
                    "has_related_context": False} for f in t.frames],
    }, models.DataMetaRead)


def labeled_data(data: dict[str, Any]) -> Any:
    return dump({"version": data.get("version", 0), "tags": data.get("tags", []),
                 "shapes": data.get("shapes", []), "tracks": data.get("tracks", [])}, models.LabeledData)


def request(rq: dict[str, Any]) -> Any:
    return dump({
        "id": rq["id"], "status": rq["status"], "message": rq.get("message", ""), "progress": 1.0,
        "created_date": iso(rq["created"]), "started_date": iso(rq["created"]),
        "finished_date": iso(rq["created"]), "expiry_date": None, "owner": {"id": 1, "username": "admin"},
        "result_url": None, "result_id": rq.get("task_id"),
        "operation": {"type": rq["type"], "target": "task", "task_id": rq.get("task_id"), "project_id": None,
                      "job_id": None, "org_id": None, "format": None, "function_id": None},
    }, models.Request)


def token(key: str) -> Any:
    return dump({"key": key}, models.Token)
