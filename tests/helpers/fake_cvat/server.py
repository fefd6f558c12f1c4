"""A fake CVAT server for tests: a threaded ``http.server`` on 127.0.0.1 that keeps its state in
memory and answers the real ``cvat_sdk`` over HTTP.

Authentication works like CVAT's: ``POST /api/auth/login`` sets ``sessionid`` and ``csrftoken``
cookies (unsafe methods then need the ``X-CSRFToken`` header), or an access token is sent as
``Authorization: Bearer <token>``. Wrong credentials give 400 (login) or 401 (token).

Tests seed tasks with ``add_task``, look at the state (``tasks``, ``annotations``), read the
request log (``requests``: ``(method, path)`` pairs, ``log``: with query and status) and inject
faults (``fail``, ``delay``).

``mode`` chooses which server it answers as: ``"2.80"`` (the pinned SDK's own version) or ``"2.23"``,
as a CVAT 2.23.1 server answers (compared field by field with cvat-sdk 2.23.1's models): the
``about`` payload lacks ``logo_url``/``subtitle``, shapes have no ``score`` (dropped on write), the
fields later versions added (task ``media_type``, job ``task_name``, data meta ``chapters``, ...)
are absent, and reading annotations fills in every attribute a shape, tag or track of that label
has no value for with the attribute's default (what made human shapes read as ``unreviewed``).
"""
from __future__ import annotations

import json
import re
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterable

from . import routes
from .state import STATUSES, BadRequest, NotFound, State, Task, frame_from

DEFAULT_VERSION = "2.80.0"
MODES = {"2.80": "2.80.0", "2.23": "2.23.1"}
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


@dataclass
class Fault:
    method: str
    pattern: re.Pattern[str]
    times: int
    status: int | None = 500  # None: drop the connection without an answer
    seconds: float = 0.0  # > 0: a delay instead of a failure
    after: int = 0  # matching requests let through before the fault starts


class FakeCvatServer:
    """Start with ``start()`` (or as a context manager); ``url`` is then ``http://127.0.0.1:<port>``."""

    def __init__(self, *, username: str = "annotator", password: str = "pw-0123-secret",
                 token: str = "tok-0123456789abcdef", server_version: str | None = None,
                 page_size: int = 10, mode: str = "2.80") -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {sorted(MODES)}")
        self.username, self.password, self.token = username, password, token
        self.mode = mode
        self.server_version = server_version or MODES[mode]
        self.page_size = page_size
        self.state = State(username, password, token, legacy=mode == "2.23")
        self.lock = threading.RLock()
        self.requests: list[tuple[str, str]] = []
        self.log: list[dict[str, Any]] = []
        self._faults: list[Fault] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> "FakeCvatServer":
        handler = type("Handler", (_Handler,), {"fake": self})
        self._httpd = _QuietServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), name="fake-cvat",
                                        daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> "FakeCvatServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def env(self) -> dict[str, str]:
        """The ``CVAT_*`` environment a client of this server needs (password login)."""
        return {"CVAT_URL": self.url, "CVAT_USERNAME": self.username, "CVAT_PASSWORD": self.password}

    # ------------------------------------------------------------------ seeding and inspection

    def add_task(self, name: str, labels: Iterable[str | dict[str, Any]], frames: Iterable[Any], *,
                 shapes: Iterable[dict[str, Any]] = (), tracks: Iterable[dict[str, Any]] = (),
                 tags: Iterable[dict[str, Any]] = (), status: str = "annotation", segment_size: int = 0) -> int:
        """A task as if created and annotated through the UI; returns its id.

        ``frames``: image paths, ``(name, width, height)`` or ``(name, bytes)``. Shapes, tracks and tags
        may name their label (``"label": "car"``) instead of giving ``label_id``."""
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}")
        with self.lock:
            task = self.state.create_task(name, labels, segment_size=segment_size)
            self.state.set_frames(task, [frame_from(item, i) for i, item in enumerate(frames)], status=status)
            data = {key: [self._with_label_id(task, obj) for obj in objs]
                    for key, objs in (("shapes", shapes), ("tracks", tracks), ("tags", tags))}
            if any(data.values()):
                self.state.add_annotations(task, data)
                task.version = 0
            return task.id

    def add_shapes(self, task_id: int, shapes: Iterable[dict[str, Any]]) -> None:
        """More shapes, as a person (or a tool) adds them (``label`` names allowed)."""
        with self.lock:
            task = self.state.task(task_id)
            self.state.add_annotations(task, {"shapes": [self._with_label_id(task, s) for s in shapes]})

    @staticmethod
    def _with_label_id(task: Task, obj: dict[str, Any]) -> dict[str, Any]:
        obj = dict(obj)
        if "label" in obj:
            by_name = {label["name"]: label["id"] for label in task.labels}
            obj["label_id"] = by_name[obj.pop("label")]
        return obj

    @property
    def tasks(self) -> dict[int, Task]:
        return self.state.tasks

    def task_id(self, name: str) -> int:
        (task_id,) = [t.id for t in self.state.tasks.values() if t.name == name]
        return task_id

    def label_id(self, task_id: int, name: str) -> int:
        return {label["name"]: label["id"] for label in self.state.task(task_id).labels}[name]

    def annotations(self, task_id: int) -> dict[str, Any]:
        """The task's annotations as stored (what was written, nothing filled in)."""
        with self.lock:
            return self.state.annotations(self.state.task(task_id))

    def read_annotations(self, task_id: int) -> dict[str, Any]:
        """The task's annotations as the API answers them (in 2.23 mode: defaults filled in)."""
        with self.lock:
            return self.state.annotations(self.state.task(task_id), as_read=True)

    @property
    def legacy(self) -> bool:
        return self.state.legacy

    def set_attribute(self, task_id: int, shape_id: int, spec_id: int, value: str) -> None:
        """A person changes one attribute value of a shape (e.g. accepts a proposal) in the UI."""
        with self.lock:
            task = self.state.task(task_id)
            (shape,) = [s for s in task.shapes if s["id"] == shape_id]
            shape["attributes"] = [a for a in shape["attributes"] if a["spec_id"] != spec_id] + [
                {"spec_id": spec_id, "value": value}]
            self.state.touch(task)

    def set_status(self, task_id: int, status: str) -> None:
        with self.lock:
            self.state.set_status(self.state.task(task_id), status)

    def touch(self, task_id: int) -> None:
        """Bump ``updated_date`` (as any edit in the UI does)."""
        with self.lock:
            self.state.touch(self.state.task(task_id))

    def delete_task(self, task_id: int) -> None:
        with self.lock:
            del self.state.tasks[task_id]

    def jobs(self, task_id: int) -> list[dict[str, Any]]:
        return [dict(job) for job in self.state.task(task_id).jobs]

    def count(self, method: str, path_regex: str, **query: str) -> int:
        """How many requests matched (``query`` values must match too, e.g. ``type="frame"``)."""
        pattern = re.compile(path_regex)
        return sum(1 for entry in self.log if entry["method"] == method and pattern.search(entry["path"])
                   and all(entry["query"].get(k) == v for k, v in query.items()))

    def frame_downloads(self, task_id: int | None = None) -> int:
        task = r"\d+" if task_id is None else str(task_id)
        return self.count("GET", rf"^/api/tasks/{task}/data/?$", type="frame")

    # ------------------------------------------------------------------ faults

    def fail(self, method: str, path_regex: str, status: int | None = 500, times: int = 1, after: int = 0) -> None:
        """The next ``times`` matching requests get ``status`` (None: the connection is dropped);
        ``after`` lets that many matching requests through first (e.g. fail the 2nd chunk)."""
        self._faults.append(Fault(method.upper(), re.compile(path_regex), times, status=status, after=after))

    def delay(self, method: str, path_regex: str, seconds: float, times: int = 1) -> None:
        self._faults.append(Fault(method.upper(), re.compile(path_regex), times, seconds=seconds))

    def _take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self._faults:
                if fault.times > 0 and fault.method == method and fault.pattern.search(path):
                    if fault.after > 0:
                        fault.after -= 1
                        continue
                    fault.times -= 1
                    return fault
        return None


Route = tuple[str, "re.Pattern[str]", Callable[..., routes.Resp], bool]


def _routes(fake: FakeCvatServer) -> list[Route]:
    """(method, path, handler, needs auth); paths without their trailing slash."""
    size = fake.page_size
    table: list[tuple[str, str, Callable[..., routes.Resp], bool]] = [
        ("GET", r"/api/server/about", lambda s, r: routes.about(s, r, fake.server_version), False),
        ("POST", r"/api/auth/login", routes.login, False),
        ("POST", r"/api/auth/logout", routes.logout, True),
        ("GET", r"/api/users/self", routes.users_self, True),
        ("GET", r"/api/tasks", lambda s, r: routes.list_tasks(s, r, size), True),
        ("POST", r"/api/tasks", routes.create_task, True),
        ("GET", r"/api/tasks/(\d+)", routes.get_task, True),
        ("DELETE", r"/api/tasks/(\d+)", routes.delete_task, True),
        ("PATCH", r"/api/tasks/(\d+)", routes.patch_task, True),
        ("GET", r"/api/tasks/(\d+)/data/meta", routes.data_meta, True),
        ("GET", r"/api/tasks/(\d+)/data", routes.get_data, True),
        ("POST", r"/api/tasks/(\d+)/data", routes.post_data, True),
        ("PATCH", r"/api/tasks/(\d+)/data/(\w+)", routes.tus_chunk, True),
        ("HEAD", r"/api/tasks/(\d+)/data/(\w+)", routes.tus_chunk, True),
        ("GET", r"/api/tasks/(\d+)/annotations", routes.annotations, True),
        ("PUT", r"/api/tasks/(\d+)/annotations", routes.annotations, True),
        ("PATCH", r"/api/tasks/(\d+)/annotations", routes.annotations, True),
        ("DELETE", r"/api/tasks/(\d+)/annotations", routes.annotations, True),
        ("GET", r"/api/labels", lambda s, r: routes.list_labels(s, r, size), True),
        ("PATCH", r"/api/labels/(\d+)", routes.patch_label, True),
        ("GET", r"/api/jobs", lambda s, r: routes.list_jobs(s, r, size), True),
        ("GET", r"/api/jobs/(\d+)", routes.get_job, True),
        ("PATCH", r"/api/jobs/(\d+)", routes.patch_job, True),
        ("GET", r"/api/requests/(.+)", routes.get_request, True),
    ]
    return [(m, re.compile(p + "$"), h, a) for m, p, h, a in table]


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hangs up (a closed connection pool) is normal here, not worth a traceback."""
        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    fake: FakeCvatServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_PATCH(self) -> None:
        self._dispatch("PATCH")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        fake = self.fake
        url = urllib.parse.urlsplit(self.path)
        path = url.path
        query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        entry = {"method": method, "path": path, "query": {k: v[0] for k, v in query.items()}, "status": None}
        with fake.lock:
            fake.requests.append((method, path))
            fake.log.append(entry)
        fault = fake._take_fault(method, path)
        if fault is not None and fault.seconds:
            time.sleep(fault.seconds)
        elif fault is not None:
            entry["status"] = fault.status
            if fault.status is None:  # hang up without an answer
                self.close_connection = True
            else:
                self._send(routes.Resp(fault.status, {"detail": "injected failure"}))
            return
        req = routes.Req(method, path, query, self.headers, body, fake.url)
        resp = self._handle(req)
        if fake.legacy and isinstance(resp.body, (dict, list)):
            resp.body = routes.legacy_body(resp.body)
        entry["status"] = resp.status
        self._send(resp)

    def _handle(self, req: routes.Req) -> routes.Resp:
        fake = self.fake
        path = req.path.rstrip("/") or "/"
        for method, pattern, handler, needs_auth in _routes(fake):
            match = pattern.match(path)
            if method != req.method or match is None:
                continue
            req.groups = match.groups()
            with fake.lock:
                if needs_auth:
                    refused = self._authenticate(req)
                    if refused is not None:
                        return refused
                try:
                    return handler(fake.state, req)
                except BadRequest as error:
                    return routes.Resp(400, {"detail": str(error)})
                except NotFound:
                    return routes.Resp(404, {"detail": "Not found."})
        return routes.Resp(404, {"detail": f"The fake CVAT serves no {req.method} {req.path}"})

    def _authenticate(self, req: routes.Req) -> routes.Resp | None:
        """Set ``req.user`` or return the 401/403 answer CVAT would give."""
        state = self.fake.state
        authorization = self.headers.get("Authorization", "")
        if authorization:
            scheme, _, key = authorization.partition(" ")
            if scheme in ("Bearer", "Token") and key in state.tokens:
                req.user = state.tokens[key]
                return None
            return routes.Resp(401, {"detail": "Invalid token."})
        cookies = SimpleCookie(self.headers.get("Cookie", ""))
        session = cookies.get("sessionid")
        if session is None or session.value not in state.sessions:
            return routes.Resp(401, {"detail": "Authentication credentials were not provided."})
        user, csrf = state.sessions[session.value]
        if req.method not in SAFE_METHODS and self.headers.get("X-CSRFToken") != csrf:
            return routes.Resp(403, {"detail": "CSRF Failed: CSRF token missing or incorrect."})
        req.user = user
        return None

    def _send(self, resp: routes.Resp) -> None:
        if isinstance(resp.body, bytes):
            data = resp.body
        elif resp.body is None:
            data = b""
        else:
            data = json.dumps(resp.body).encode()
        self.send_response(resp.status)
        if data or resp.body is not None:
            self.send_header("Content-Type", resp.content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in resp.headers.items():
            for item in value if isinstance(value, list) else [value]:
                self.send_header(name, item)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
