"""The endpoints of the fake CVAT server: only those cvat-sdk 2.80 calls for what obdb does.

Each handler takes the server's ``State`` and a parsed ``Req`` and returns a ``Resp``; the caller
holds the state lock. Paths are matched without their trailing slash (the SDK sends some with one).
"""
from __future__ import annotations

import base64
import email.parser
import email.policy
import json
import operator
import random
import re
import secrets
import urllib.parse
from dataclasses import dataclass, field
from typing import Any, Callable

from cvat_sdk.api_client import models

from . import payloads
from .state import STATUSES, BadRequest, NotFound, State, frame_from


@dataclass
class Req:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Any  # email.message.Message from http.server
    body: bytes
    base: str
    groups: tuple[str, ...] = ()
    user: str | None = None

    def param(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def json(self) -> Any:
        try:
            return json.loads(self.body or b"{}")
        except ValueError:
            raise BadRequest("JSON parse error") from None


@dataclass
class Resp:
    status: int
    body: Any = None  # JSON-able, bytes, or None
    headers: dict[str, str | list[str]] = field(default_factory=dict)
    content_type: str = "application/json"


# ---------------------------------------------------------------------------------------- helpers


def page(req: Req, items: list[Any], model: type, default_size: int) -> Resp:
    """DRF page-number pagination with absolute ``next``/``previous`` links. ``default_size`` is
    also the largest page served, so every client has to follow ``next``."""
    number = int(req.param("page", "1"))
    size = min(int(req.param("page_size", str(default_size))), default_size)
    start = (number - 1) * size
    if number < 1 or (start >= len(items) and number != 1):
        raise NotFound("Invalid page.")

    def link(n: int) -> str:
        query = {k: v[0] for k, v in req.query.items()}
        query["page"] = str(n)
        return f"{req.base}{req.path}?{urllib.parse.urlencode(query)}"

    next_url = link(number + 1) if start + size < len(items) else None
    previous_url = link(number - 1) if number > 1 else None
    return Resp(200, payloads.paginated(items[start:start + size], len(items), next_url, previous_url, model))


def json_logic(expr: Any, record: dict[str, Any]) -> Any:
    """The subset of JSON Logic CVAT's ``filter`` parameter accepts."""
    if not isinstance(expr, dict):
        return expr
    (op, args), = expr.items()
    if op == "var":
        if args not in record:
            raise BadRequest(f"filter: unknown field {args!r}")
        return record[args]
    args = args if isinstance(args, list) else [args]
    values = [json_logic(a, record) for a in args]
    if op == "and":
        return all(values)
    if op == "or":
        return any(values)
    if op == "!":
        return not values[0]
    if op == "==":
        return values[0] == values[1]
    if op == "!=":
        return values[0] != values[1]
    if op == "in":
        return values[0] in values[1] if values[1] is not None else False
    if op in ("<", "<=", ">", ">="):
        compare = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}[op]
        return all(compare(a, b) for a, b in zip(values, values[1:]))
    raise BadRequest(f"filter: unsupported operation {op!r}")


def parse_multipart(req: Req) -> tuple[dict[str, str], list[tuple[str, bytes]]]:
    """Form fields and uploaded files of a multipart body (file names reduced to their base name,
    as Django does)."""
    head = f"Content-Type: {req.headers.get('Content-Type')}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + req.body)
    fields, files = {}, []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        filename = part.get_filename()
        payload = part.get_payload(decode=True)
        if filename:
            files.append((filename.replace("\\", "/").rsplit("/", 1)[-1], payload))
        else:
            fields[name] = payload.decode()
    return fields, files


def natural_key(name: str) -> list[Any]:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


# Fields cvat-sdk 2.80's models have and a 2.23.1 server never sends (compared with cvat-sdk
# 2.23.1's models): About, TaskRead, JobRead, DataMetaRead, MetaUser, LabeledShape, LabeledData,
# the request operation. None of them is a key of another payload, so they are removed anywhere.
LEGACY_ABSENT = frozenset({
    "logo_url", "subtitle", "project_name", "initial_replicas", "data_cloud_storage_id", "media_type",
    "organization_id", "chapters", "storage", "cloud_storage_id", "task_name", "parent_job_id", "replicas_count",
    "cvat_usage_reason", "primary_role", "planned_activities", "data_types", "discovery_source",
    "email_verified", "created_via", "score", "intervals", "org_id", "lightweight"})


def legacy_body(body: Any) -> Any:
    """A JSON answer as a 2.23 server gives it: without the fields it does not have."""
    if isinstance(body, dict):
        return {k: legacy_body(v) for k, v in body.items() if k not in LEGACY_ABSENT}
    if isinstance(body, list):
        return [legacy_body(v) for v in body]
    return body


# ---------------------------------------------------------------------------------------- auth, server


def about(state: State, req: Req, version: str) -> Resp:
    return Resp(200, payloads.about(version))


def login(state: State, req: Req) -> Resp:
    body = req.json()
    user = state.users.get(body.get("username") or "")
    if user is None or body.get("password") != user["password"]:
        return Resp(400, {"non_field_errors": ["Unable to log in with provided credentials."]})
    session, csrf = secrets.token_hex(16), secrets.token_hex(16)
    state.sessions[session] = (user["username"], csrf)
    cookies = [f"csrftoken={csrf}; Path=/; SameSite=Lax", f"sessionid={session}; HttpOnly; Path=/; SameSite=Lax"]
    return Resp(200, payloads.token(secrets.token_hex(20)), headers={"Set-Cookie": cookies})


def logout(state: State, req: Req) -> Resp:
    for session, (user, _) in list(state.sessions.items()):
        if user == req.user:
            del state.sessions[session]
    return Resp(200, {"detail": "Successfully logged out."})


def users_self(state: State, req: Req) -> Resp:
    return Resp(200, payloads.user(state.users[req.user], req.base))


# ---------------------------------------------------------------------------------------- tasks


def task_record(task: Any) -> dict[str, Any]:
    return {"id": task.id, "name": task.name, "status": task.status, "owner": "admin", "assignee": None,
            "project_id": None, "project_name": None, "subset": "", "mode": "annotation", "dimension": "2d",
            "media_type": "image", "tracker_link": "", "validation_mode": None,
            "updated_date": payloads.iso(task.updated), "created_date": payloads.iso(task.created)}


def list_tasks(state: State, req: Req, page_size: int) -> Resp:
    tasks = list(state.tasks.values())
    simple = {k: req.param(k) for k in ("name", "status", "owner", "subset", "mode", "dimension")}
    if simple["status"] is not None and simple["status"] not in STATUSES:
        raise BadRequest(f"status: {simple['status']!r} is not a valid choice")
    expr = json.loads(req.param("filter")) if req.param("filter") else None
    search = (req.param("search") or "").lower()
    chosen = []
    for task in tasks:
        record = task_record(task)
        if any(v is not None and str(record[k]) != v for k, v in simple.items()):
            continue
        if expr is not None and not json_logic(expr, record):
            continue
        if search and search not in task.name.lower():
            continue
        chosen.append(task)
    sort = req.param("sort") or "id"
    key = sort.lstrip("-")
    chosen.sort(key=lambda t: (task_record(t)[key] is None, task_record(t)[key]), reverse=sort.startswith("-"))
    return page(req, [payloads.task(t, req.base) for t in chosen], models.PaginatedTaskReadList, page_size)


def create_task(state: State, req: Req) -> Resp:
    body = req.json()
    task = state.create_task(body.get("name", ""), body.get("labels") or [],
                             segment_size=int(body.get("segment_size") or 0))
    return Resp(201, payloads.task(task, req.base))


def get_task(state: State, req: Req) -> Resp:
    return Resp(200, payloads.task(state.task(int(req.groups[0])), req.base))


def patch_task(state: State, req: Req) -> Resp:
    """PATCH /api/tasks/<id>: a new name (any change bumps updated_date, as in CVAT)."""
    task = state.task(int(req.groups[0]))
    body = req.json()
    if "name" in body:
        if not body["name"]:
            raise BadRequest("name: This field may not be blank.")
        task.name = body["name"]
    state.touch(task)
    return Resp(200, payloads.task(task, req.base))


def delete_task(state: State, req: Req) -> Resp:
    state.task(int(req.groups[0]))
    del state.tasks[int(req.groups[0])]
    return Resp(204)


def data_meta(state: State, req: Req) -> Resp:
    return Resp(200, payloads.data_meta(state.task(int(req.groups[0]))))


def get_data(state: State, req: Req) -> Resp:
    task = state.task(int(req.groups[0]))
    if req.param("type") != "frame":
        raise BadRequest(f"type: only 'frame' is served here, not {req.param('type')!r}")
    number = int(req.param("number", "-1"))
    if not 0 <= number < len(task.frames):
        raise BadRequest(f"number: frame {number} is out of range")
    frame = task.frames[number]
    kind = "image/jpeg" if frame.name.lower().endswith((".jpg", ".jpeg")) else "image/png"
    return Resp(200, frame.data, content_type=kind)


def post_data(state: State, req: Req) -> Resp:
    """The SDK's upload protocol: Upload-Start, Upload-Multiple (bulk), TUS for big files, Upload-Finish."""
    task = state.task(int(req.groups[0]))
    headers = req.headers
    if "Upload-Start" in headers:
        state.uploads[task.id] = {"files": []}
        return Resp(202)
    upload = state.uploads.get(task.id)
    if upload is None:
        raise BadRequest("no upload was started for this task")
    if "Upload-Multiple" in headers:
        _, files = parse_multipart(req)
        upload["files"].extend(files)
        return Resp(200, {})
    if "Tus-Resumable" in headers and "Upload-Length" in headers:
        meta = dict(item.split(" ", 1) for item in headers["Upload-Metadata"].split(","))
        name = base64.b64decode(meta["filename"]).decode()
        file_id = secrets.token_hex(8)
        state.tus[file_id] = {"task": task.id, "name": name, "length": int(headers["Upload-Length"]),
                              "data": bytearray()}
        return Resp(201, headers={"Location": f"{req.base}/api/tasks/{task.id}/data/{file_id}",
                                  "Upload-Filename": name, "Tus-Resumable": "1.0.0"})
    if "Upload-Finish" in headers:
        return finish_upload(state, req, task, upload)
    raise BadRequest("client_files: no files were sent")


def tus_chunk(state: State, req: Req) -> Resp:
    upload = state.tus.get(req.groups[1])
    if upload is None or upload["task"] != int(req.groups[0]):
        raise NotFound("upload")
    offset_headers = {"Upload-Offset": str(len(upload["data"])), "Tus-Resumable": "1.0.0"}
    if req.method == "HEAD":
        return Resp(200, headers={**offset_headers, "Upload-Length": str(upload["length"])})
    if int(req.headers["Upload-Offset"]) != len(upload["data"]):
        return Resp(409, headers=offset_headers)
    upload["data"].extend(req.body)
    if len(upload["data"]) >= upload["length"]:
        state.uploads[upload["task"]]["files"].append((upload["name"], bytes(upload["data"])))
    return Resp(204, headers={"Upload-Offset": str(len(upload["data"])), "Tus-Resumable": "1.0.0"})


def finish_upload(state: State, req: Req, task: Any, upload: dict[str, Any]) -> Resp:
    fields = req.json()
    files = dict(upload.pop("files"))
    method = str(fields.get("sorting_method", "lexicographical")).lower()
    names = list(files)
    if method == "predefined":
        names = list(fields.get("upload_file_order") or names)
        if sorted(names) != sorted(files):
            raise BadRequest("upload_file_order: does not match the uploaded files")
    elif method == "natural":
        names.sort(key=natural_key)
    elif method == "random":
        random.shuffle(names)
    else:
        names.sort()
    rq_id = f"action=create&target=task&id={task.id}"
    rq = {"id": rq_id, "type": "create:task", "task_id": task.id, "created": state.now(), "status": "finished"}
    try:
        frames = [frame_from((name, files[name]), i) for i, name in enumerate(names)]
        task.image_quality = int(fields.get("image_quality", 70))
        state.set_frames(task, frames)
    except Exception as error:  # noqa: BLE001 - like CVAT: the background job fails with a message
        rq.update(status="failed", message=f"Could not create the task: {error}")
    state.requests[rq_id] = rq
    return Resp(202, {"rq_id": rq_id})


def get_request(state: State, req: Req) -> Resp:
    rq = state.requests.get(urllib.parse.unquote(req.groups[0]))
    if rq is None:
        raise NotFound("request")
    return Resp(200, payloads.request(rq))


# ---------------------------------------------------------------------------------------- annotations


def annotations(state: State, req: Req) -> Resp:
    task = state.task(int(req.groups[0]))
    if req.method == "GET":
        return Resp(200, payloads.labeled_data(state.annotations(task, as_read=True)))
    if req.method == "DELETE":
        state.clear_annotations(task)
        return Resp(204)
    data = req.json()
    if req.method == "PUT":
        return Resp(200, payloads.labeled_data(state.replace_annotations(task, data)))
    action = req.param("action")
    handlers: dict[str, Callable[..., Any]] = {"create": state.add_annotations, "update": state.update_annotations,
                                                "delete": state.delete_annotations}
    if action not in handlers:
        raise BadRequest(f"action: must be create, update or delete, not {action!r}")
    return Resp(200, payloads.labeled_data(handlers[action](task, data)))


# ---------------------------------------------------------------------------------------- labels, jobs


def list_labels(state: State, req: Req, page_size: int) -> Resp:
    task_id = req.param("task_id")
    if task_id is None:
        labels = [label for task in state.tasks.values() for label in task.labels]
    else:
        labels = state.task(int(task_id)).labels
    return page(req, labels, models.PaginatedLabelList, page_size)


def list_jobs(state: State, req: Req, page_size: int) -> Resp:
    task_id = req.param("task_id")
    tasks = [state.task(int(task_id))] if task_id is not None else list(state.tasks.values())
    items = [payloads.job(j, t, req.base) for t in tasks for j in t.jobs]
    return page(req, items, models.PaginatedJobReadList, page_size)


def _job_and_task(state: State, job_id: int) -> tuple[dict[str, Any], Any]:
    for task in state.tasks.values():
        for job in task.jobs:
            if job["id"] == job_id:
                return job, task
    raise NotFound(f"job {job_id}")


def get_job(state: State, req: Req) -> Resp:
    job, task = _job_and_task(state, int(req.groups[0]))
    return Resp(200, payloads.job(job, task, req.base))


def patch_job(state: State, req: Req) -> Resp:
    body = req.json()
    stage, job_state = body.get("stage"), body.get("state")
    if stage is not None and stage not in ("annotation", "validation", "acceptance"):
        raise BadRequest(f"stage: {stage!r} is not a valid choice")
    if job_state is not None and job_state not in ("new", "in progress", "completed", "rejected"):
        raise BadRequest(f"state: {job_state!r} is not a valid choice")
    job = state.set_job(int(req.groups[0]), stage=stage, state=job_state)
    return Resp(200, payloads.job(job, _job_and_task(state, job["id"])[1], req.base))


def patch_label(state: State, req: Req) -> Resp:
    """PATCH /api/labels/<id>: like CVAT, attributes without an ``id`` are added to the label and
    those with one are updated; attributes left out stay as they are."""
    label_id = int(req.groups[0])
    body = req.json()
    for task in state.tasks.values():
        for label in task.labels:
            if label["id"] != label_id:
                continue
            by_id = {a["id"]: a for a in label["attributes"]}
            for attr in body.get("attributes") or []:
                if attr.get("id") is not None:
                    if attr["id"] not in by_id:
                        raise BadRequest(f"attributes: label {label_id} has no attribute {attr['id']}")
                    by_id[attr["id"]].update({k: v for k, v in attr.items() if k != "id"})
                    continue
                if any(a["name"] == attr.get("name") for a in label["attributes"]):
                    raise BadRequest(f"attributes: label {label_id} already has an attribute {attr.get('name')!r}")
                values = list(attr.get("values") or [])
                label["attributes"].append({
                    "id": state.next_id("attr"), "name": attr["name"], "mutable": bool(attr.get("mutable", False)),
                    "input_type": attr.get("input_type", "text"), "values": values,
                    "default_value": attr.get("default_value", values[0] if values else "")})
            for key in ("name", "color"):
                if body.get(key):
                    label[key] = body[key]
            state.touch(task)
            return Resp(200, payloads.dump(label, models.Label))
    raise NotFound(f"label {label_id}")
