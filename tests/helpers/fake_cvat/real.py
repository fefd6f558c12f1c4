"""The CVAT tests against a real server: the fake server's seeding and inspection API, done over
the real server's REST API (through obdb.cvat, the code under test, and the SDK).

Used by the ``fake_cvat`` fixture when ``CVAT_URL``, ``CVAT_USERNAME`` and ``CVAT_PASSWORD`` are
set. Use a throwaway server (e.g. ``docker compose up`` of CVAT 2.20 or later, with a superuser):
every test creates tasks under the names it needs and deletes, at teardown, every task whose id is
above the highest id the server had when the test started. A test sees only those tasks.

What only the fake can do (inject faults, count requests, stop the server, pretend another
version, log in with a token it does not know) skips the test here.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import pytest

from .state import STAGE_OF_STATUS, frame_from

FAKE_ONLY = "needs the fake CVAT server (fault injection, request log or server control)"


@dataclass
class RealFrame:
    """A task frame: name and size from the frame list, bytes downloaded when asked for."""

    name: str
    width: int
    height: int
    fetch: Callable[[], bytes] = field(repr=False)

    @property
    def data(self) -> bytes:
        return self.fetch()


@dataclass
class RealTask:
    """What tests read of a task, fetched from the server when asked for."""

    id: int
    name: str
    status: str
    size: int
    labels: list[dict[str, Any]]
    frames: list[Any] = field(default_factory=list)


class RealCvatServer:
    mode = "real"

    def __init__(self, url: str, username: str, password: str) -> None:
        from obdb import cvat

        self.url, self.username, self.password = url.rstrip("/"), username, password
        self._cvat = cvat
        self.session = cvat.connect(cvat.CvatCredentials(self.url, username, password), allow_version_mismatch=True,
                                    retries=2, backoff_s=0.2)
        self._version = self.session.server_version
        self._tmp = tempfile.TemporaryDirectory(prefix="obdb-real-cvat-")
        known = cvat.list_tasks(self.session, with_labels=False)
        self._watermark = max((t.id for t in known), default=0)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> "RealCvatServer":
        return cls(env["CVAT_URL"], env["CVAT_USERNAME"], env["CVAT_PASSWORD"])

    @property
    def env(self) -> dict[str, str]:
        return {"CVAT_URL": self.url, "CVAT_USERNAME": self.username, "CVAT_PASSWORD": self.password}

    @property
    def legacy(self) -> bool:
        return False

    # ------------------------------------------------------------------ seeding

    def add_task(self, name: str, labels: Iterable[str | dict[str, Any]], frames: Iterable[Any], *,
                 shapes: Iterable[dict[str, Any]] = (), tracks: Iterable[dict[str, Any]] = (),
                 tags: Iterable[dict[str, Any]] = (), status: str = "annotation", segment_size: int = 0) -> int:
        from obdb.cvat import writes

        folder = Path(self._tmp.name) / f"{len(list(Path(self._tmp.name).iterdir()))}"
        folder.mkdir()
        paths = []
        for i, item in enumerate(frames):
            frame = frame_from(item, i)
            if "/" in frame.name.replace("\\", "/"):
                pytest.skip("needs frame names with folders, which an upload to a real server cannot make")
            path = folder / Path(frame.name).name
            path.write_bytes(frame.data)
            paths.append(path)
        if not paths:  # a task without data, as an interrupted creation leaves it
            from cvat_sdk.api_client import models

            spec = models.TaskWriteRequest(name=name, labels=[writes._label_request(label) for label in labels])
            created = self.session.with_retries(lambda: self.session.client.tasks.create(spec), what="creating a task")
            return created.id
        task = writes.create_task(self.session, name, list(labels), paths, progress=False,
                                  segment_size=segment_size or None, allow_duplicate_name=True)
        by_name = {spec["name"]: spec for spec in task.label_specs}
        data = {key: [self._resolve(obj, by_name) for obj in objs]
                for key, objs in (("shapes", shapes), ("tracks", tracks), ("tags", tags))}
        if any(data.values()):
            writes._patch(self.session, task.id, "create", data, f"seeding task {task.id}", idempotent=False)
        if status != "annotation":
            self.set_status(task.id, status)
        return task.id

    def add_shapes(self, task_id: int, shapes: Iterable[dict[str, Any]]) -> None:
        from obdb.cvat import writes

        by_name = {spec["name"]: spec for spec in self._cvat.task_labels(self.session, task_id)}
        writes._patch(self.session, task_id, "create", {"shapes": [self._resolve(s, by_name) for s in shapes]},
                      f"adding shapes to task {task_id}", idempotent=False)

    @staticmethod
    def _resolve(obj: dict[str, Any], labels: dict[str, dict[str, Any]]) -> dict[str, Any]:
        obj = dict(obj)
        if "label" in obj:
            obj["label_id"] = labels[obj.pop("label")]["id"]
        return obj

    def set_attribute(self, task_id: int, shape_id: int, spec_id: int, value: str) -> None:
        """A person changes one attribute value of a shape (e.g. accepts a proposal)."""
        from obdb.cvat import writes

        (shape,) = [s for s in self.read_annotations(task_id)["shapes"] if s["id"] == shape_id]
        shape["attributes"] = [a for a in shape["attributes"] if a["spec_id"] != spec_id] + [
            {"spec_id": spec_id, "value": value}]
        writes.update_objects(self.session, task_id, {"shapes": [shape]})

    def set_status(self, task_id: int, status: str) -> None:
        stage, state = STAGE_OF_STATUS[status]
        self._cvat.set_jobs_state(self.session, task_id, stage=stage, state=state)

    def touch(self, task_id: int) -> None:
        from cvat_sdk.api_client import models

        api = self.session.client.api_client.tasks_api
        name = self.tasks[task_id].name
        self.session.with_retries(lambda: api.partial_update(
            task_id, patched_task_write_request=models.PatchedTaskWriteRequest(name=name)), what="touching a task")

    def delete_task(self, task_id: int) -> None:
        self._cvat.delete_task(self.session, task_id)

    # ------------------------------------------------------------------ inspection

    @property
    def tasks(self) -> dict[int, RealTask]:
        found = [t for t in self._cvat.list_tasks(self.session) if t.id > self._watermark]
        out = {}
        for t in found:
            labels = [{**spec, "attributes": [dict(a) for a in spec["attributes"]]} for spec in t.label_specs]
            frames = [RealFrame(f.name, f.width, f.height,
                                (lambda task=t.id, index=f.index: self._cvat.download_frame(self.session, task, index)))
                      for f in (self._cvat.task_frames(self.session, t.id) if t.size else [])]
            out[t.id] = RealTask(t.id, t.name, t.status, t.size, labels, frames)
        return dict(sorted(out.items()))

    def task_id(self, name: str) -> int:
        (task_id,) = [t.id for t in self._cvat.list_tasks(self.session, names=[name], with_labels=False)
                      if t.id > self._watermark]
        return task_id

    def label_id(self, task_id: int, name: str) -> int:
        return {spec["name"]: spec["id"] for spec in self._cvat.task_labels(self.session, task_id)}[name]

    def read_annotations(self, task_id: int) -> dict[str, Any]:
        """The annotations as the server answers a read."""
        return self._cvat.get_annotations(self.session, task_id)

    def annotations(self, task_id: int) -> dict[str, Any]:
        """The closest a client gets to the fake's "as stored": a read without the attribute values
        that equal their attribute's default (servers before 2.8x fill those in on read, so they
        would appear on every object once a label gains an attribute)."""
        defaults = {a["id"]: a.get("default_value") for spec in self._cvat.task_labels(self.session, task_id)
                    for a in spec["attributes"]}
        data = self.read_annotations(task_id)
        for key in ("shapes", "tags", "tracks"):
            for obj in data[key]:
                obj["attributes"] = [a for a in obj.get("attributes") or []
                                     if a.get("value") != defaults.get(a.get("spec_id"))]
        return data

    def jobs(self, task_id: int) -> list[dict[str, Any]]:
        from cvat_sdk.core.helpers import get_paginated_collection

        api = self.session.client.api_client.jobs_api
        jobs = get_paginated_collection(api.list_endpoint, task_id=task_id, return_json=True)
        return [{"id": j["id"], "stage": j["stage"], "state": j["state"], "status": j["status"]}
                for j in sorted(jobs, key=lambda j: j["id"])]

    # ------------------------------------------------------------------ what only the fake does

    def _fake_only(self, *args: Any, **kwargs: Any) -> Any:
        pytest.skip(FAKE_ONLY)

    fail = delay = count = frame_downloads = stop = _fake_only

    @property
    def server_version(self) -> str:
        return self._version

    @server_version.setter
    def server_version(self, value: str) -> None:
        pytest.skip(FAKE_ONLY)

    @property
    def requests(self) -> list[tuple[str, str]]:
        pytest.skip(FAKE_ONLY)

    @property
    def log(self) -> list[dict[str, Any]]:
        pytest.skip(FAKE_ONLY)

    @property
    def token(self) -> str:
        pytest.skip("needs the fake CVAT server's access token")

    # ------------------------------------------------------------------ teardown

    def cleanup(self) -> None:
        """Delete every task created since the test started, then log out."""
        try:
            for task in self._cvat.list_tasks(self.session, with_labels=False):
                if task.id > self._watermark:
                    self._cvat.delete_task(self.session, task.id)
        finally:
            self.session.close()
            self._tmp.cleanup()
