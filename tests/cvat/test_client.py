"""obdb.cvat against the fake CVAT server, through the real cvat-sdk over HTTP."""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
from PIL import Image

from obdb import cvat
from obdb.cvat import CvatCredentials, CvatError

FRAMES = [("f0.png", 40, 30), ("f1.png", 40, 30), ("f2.png", 40, 30)]


@pytest.fixture()
def session(fake_cvat):
    with cvat.connect(CvatCredentials.from_env(fake_cvat.env), retries=2, backoff_s=0.01) as s:
        yield s


def box(label: str, frame: int, points: list[float], **extra) -> dict:
    return {"type": "rectangle", "frame": frame, "label": label, "points": points, **extra}


# ---------------------------------------------------------------------------------------- connection


def test_connect_checks_the_server_version(fake_cvat, caplog):
    with cvat.connect(CvatCredentials.from_env(fake_cvat.env)) as s:
        assert s.server_version == fake_cvat.server_version
        assert fake_cvat.count("GET", "^/api/server/about$") == 1
        assert fake_cvat.count("POST", "^/api/auth/login$") == 1

    for inside in ("2.20.0", "2.30.1", "2.81.3"):  # the supported range, both ends included
        fake_cvat.server_version = inside
        cvat.connect(CvatCredentials.from_env(fake_cvat.env)).close()
    logins = fake_cvat.count("POST", "^/api/auth/login$")
    for outside in ("2.19.4", "2.82.0", "3.0.0"):
        fake_cvat.server_version = outside
        with pytest.raises(CvatError, match=rf"runs version {re.escape(outside)}, but obdb .* supports CVAT "
                           r"2\.20 to 2\.81; pass --allow-version-mismatch"):
            cvat.connect(CvatCredentials.from_env(fake_cvat.env))
    assert fake_cvat.count("POST", "^/api/auth/login$") == logins  # refused before logging in

    with caplog.at_level(logging.WARNING, logger="obdb.cvat"):
        with cvat.connect(CvatCredentials.from_env(fake_cvat.env), allow_version_mismatch=True) as s:
            assert cvat.list_tasks(s) == []
    assert "3.0.0" in caplog.text


def test_a_2_23_about_payload_is_read_without_the_sdk_model(fake_cvat):
    """cvat-sdk 2.80's About model requires logo_url and subtitle; a 2.23 server sends neither."""
    import urllib.request

    about = json.loads(urllib.request.urlopen(f"{fake_cvat.url}/api/server/about").read())
    if fake_cvat.mode != "real":
        assert ("logo_url" in about) == (fake_cvat.mode == "2.80")
    with cvat.connect(CvatCredentials.from_env(fake_cvat.env)) as s:
        assert s.server_version == about["version"]
        assert cvat.list_tasks(s) == []


def test_wrong_password_is_a_clear_error_without_the_password(fake_cvat):
    env = {**fake_cvat.env, "CVAT_PASSWORD": "hunter2-wrong"}
    creds = CvatCredentials.from_env(env)
    assert "hunter2" not in repr(creds) and "hunter2" not in str(creds)
    with pytest.raises(CvatError) as caught:
        cvat.connect(creds, retries=2, backoff_s=0.01)
    message = str(caught.value)
    assert message == f"CVAT at {fake_cvat.url} refused the credentials of user {fake_cvat.username}"
    assert "hunter2" not in message and caught.value.__cause__ is None
    assert fake_cvat.count("POST", "^/api/auth/login$") == 1  # a refusal is not retried


def test_access_token_and_password_file(fake_cvat, tmp_path):
    token_env = {"CVAT_URL": fake_cvat.url, "CVAT_ACCESS_TOKEN": fake_cvat.token}
    with cvat.connect(CvatCredentials.from_env(token_env)) as s:
        assert cvat.list_tasks(s) == []
    assert fake_cvat.count("POST", "^/api/auth/login$") == 0
    with pytest.raises(CvatError, match="refused the credentials of the access token") as caught:
        cvat.connect(CvatCredentials.from_env({**token_env, "CVAT_ACCESS_TOKEN": "tok-wrong-123"}))
    assert "tok-wrong-123" not in str(caught.value)

    secret = tmp_path / "password"
    secret.write_text(fake_cvat.password + "\n")
    env = {"CVAT_USERNAME": fake_cvat.username, "CVAT_PASSWORD_FILE": str(secret)}
    with cvat.connect(CvatCredentials.from_env(env, url=fake_cvat.url)) as s:  # url from settings
        assert s.url == fake_cvat.url
    with pytest.raises(CvatError, match="CVAT_PASSWORD or CVAT_PASSWORD_FILE"):
        CvatCredentials.from_env({"CVAT_URL": fake_cvat.url, "CVAT_USERNAME": "x"})
    with pytest.raises(CvatError, match="set CVAT_URL"):
        CvatCredentials.from_env({"CVAT_ACCESS_TOKEN": "t"})


def test_unreachable_server_is_a_clear_error(fake_cvat):
    env = fake_cvat.env
    fake_cvat.stop()
    with pytest.raises(CvatError, match=r"did not answer while reading the server version after 2 tries") as caught:
        cvat.connect(CvatCredentials.from_env(env), retries=1, backoff_s=0.01)
    assert isinstance(caught.value, cvat.CvatUnavailable) and caught.value.exit_code == 3


def test_exit_codes_follow_the_one_table(fake_cvat, session):
    """Unreachable after retries → 3 (a ServiceUnavailable); refused or not found → 2."""
    from obdb.errors import ServiceUnavailable

    fake_cvat.fail("GET", r"^/api/tasks/?$", status=503, times=5)
    with pytest.raises(cvat.CvatUnavailable, match="HTTP 503 while listing tasks after 3 tries") as caught:
        cvat.list_tasks(session)
    assert isinstance(caught.value, ServiceUnavailable) and caught.value.exit_code == 3
    with pytest.raises(CvatError) as caught:
        cvat.get_task(session, 987654)
    assert caught.value.status == 404 and caught.value.exit_code == 2
    assert not isinstance(caught.value, ServiceUnavailable)


# ---------------------------------------------------------------------------------------- reading


def test_names_match_exactly_and_patterns_are_globs(fake_cvat, session):
    for name in ("gt_train_a", "gt_train_a_b", "gt_train a", "gt_val_a", "a.b", "aXb"):
        fake_cvat.add_task(name, ["car"], FRAMES[:1])
    assert [t.name for t in cvat.list_tasks(session, names=["gt_train_a"])] == ["gt_train_a"]
    assert [t.name for t in cvat.list_tasks(session, names=["gt_train a", "nope"])] == ["gt_train a"]
    assert cvat.find_task(session, "gt_train_a").name == "gt_train_a"
    with pytest.raises(CvatError, match="no task named 'gt_train'"):
        cvat.find_task(session, "gt_train")
    assert [t.name for t in cvat.list_tasks(session, pattern="gt_train_*")] == ["gt_train_a", "gt_train_a_b"]
    assert [t.name for t in cvat.list_tasks(session, pattern="a.b")] == ["a.b"]  # no regex
    info = cvat.find_task(session, "a.b")
    assert info.labels == {fake_cvat.label_id(info.id, "car"): "car"} and info.size == 1

    fake_cvat.add_task("gt_val_a", ["car"], FRAMES[:1])
    with pytest.raises(CvatError, match="2 tasks named 'gt_val_a'"):
        cvat.find_task(session, "gt_val_a")


def test_listing_follows_pages_and_filters_status(fake_cvat, session):
    for i in range(23):
        fake_cvat.add_task(f"task{i:02d}", ["car"], FRAMES[:1], status=("completed", "annotation")[i % 2])
    every = cvat.list_tasks(session, with_labels=False)
    assert [t.name for t in every] == [f"task{i:02d}" for i in range(23)]
    assert fake_cvat.count("GET", "^/api/tasks/?$") >= 3  # 23 tasks, 10 a page on the fake
    completed = cvat.list_tasks(session, status="completed", with_labels=False)
    assert [t.name for t in completed] == [f"task{i:02d}" for i in range(0, 23, 2)]
    assert {t.status for t in completed} == {"completed"}
    assert len(cvat.list_tasks(session, status=["completed", "annotation"], with_labels=False)) == 23
    with pytest.raises(CvatError, match="unknown task status 'done'"):
        cvat.list_tasks(session, status="done")


def test_frames_annotations_and_frame_bytes(fake_cvat, session, tmp_path):
    image = tmp_path / "cam1_frame0007.jpg"
    Image.new("RGB", (64, 48), (10, 200, 30)).save(image)
    task_id = fake_cvat.add_task("t", ["car", "person"], [image, ("other.png", 32, 16)],
                                 shapes=[box("car", 0, [1, 2, 11, 12]), box("person", 1, [0, 0, 4, 4])])
    frames = cvat.task_frames(session, task_id)
    assert [(f.index, f.name, f.width, f.height) for f in frames] == [(0, image.name, 64, 48), (1, "other.png", 32, 16)]
    annotations = cvat.get_annotations(session, task_id)
    assert set(annotations) == {"version", "tags", "shapes", "tracks"}
    assert [(s["frame"], s["label_id"], s["points"]) for s in annotations["shapes"]] == [
        (0, fake_cvat.label_id(task_id, "car"), [1.0, 2.0, 11.0, 12.0]),
        (1, fake_cvat.label_id(task_id, "person"), [0.0, 0.0, 4.0, 4.0])]
    assert cvat.download_frame(session, task_id, 0) == image.read_bytes()


def test_tracks_expand_to_per_frame_shapes(fake_cvat, session):
    keyframes = [{"type": "rectangle", "frame": 1, "points": [0, 0, 10, 10]},
                 {"type": "rectangle", "frame": 3, "points": [10, 20, 30, 40], "occluded": True},
                 {"type": "rectangle", "frame": 5, "points": [10, 20, 30, 40], "outside": True},
                 {"type": "rectangle", "frame": 7, "points": [1, 1, 2, 2]}]
    task_id = fake_cvat.add_task("tracked", ["car"], [(f"f{i}.png", 50, 50) for i in range(9)],
                                 shapes=[box("car", 0, [5, 5, 6, 6])],
                                 tracks=[{"frame": 1, "label": "car", "shapes": keyframes,
                                          "attributes": []}])
    shapes = cvat.expand_tracks(cvat.get_annotations(session, task_id), n_frames=9)
    by_frame = {s["frame"]: s for s in shapes if "track_id" in s}
    assert sorted(by_frame) == [1, 2, 3, 4, 7, 8]  # hidden from the outside keyframe 5 until 7
    assert by_frame[2]["points"] == [5.0, 10.0, 20.0, 25.0]  # halfway between keyframes 1 and 3
    assert by_frame[4]["points"] == [10.0, 20.0, 30.0, 40.0] and by_frame[4]["occluded"]
    assert by_frame[8]["points"] == [1.0, 1.0, 2.0, 2.0] and not by_frame[8]["keyframe"]
    assert [s["keyframe"] for f, s in sorted(by_frame.items())] == [True, False, True, False, True, False]
    assert [s["frame"] for s in shapes if "track_id" not in s] == [0]
    assert len(cvat.expand_tracks(cvat.get_annotations(session, task_id), n_frames=4)) == 4


# ---------------------------------------------------------------------------------------- writing


def images(folder: Path, names: list[str]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (20 + i, 10), (i * 40, 0, 0)).save(folder / name)
    return [folder / name for name in names]


def test_create_task_with_images_and_attribute_labels(fake_cvat, session, tmp_path):
    paths = images(tmp_path, ["b.png", "a.png", "c.png"])
    labels = ["weed", {"name": "crop", "color": "#00ff00",
                       "attributes": [{"name": "score", "input_type": "number", "values": ["0", "1", "0.01"]},
                                      {"name": "kind", "input_type": "select", "values": ["x", "y"],
                                       "default_value": "y", "mutable": True}]}]
    info = cvat.create_task(session, "auto_new", labels, paths, progress=False)
    assert (info.name, info.size, info.status) == ("auto_new", 3, "annotation")
    assert [f.name for f in cvat.task_frames(session, info.id)] == ["b.png", "a.png", "c.png"]  # given order
    assert [f.width for f in cvat.task_frames(session, info.id)] == [20, 21, 22]
    crop = next(spec for spec in info.label_specs if spec["name"] == "crop")
    assert crop["color"] == "#00ff00"
    assert [(a["name"], a["input_type"], a["values"], a["mutable"]) for a in crop["attributes"]] == [
        ("score", "number", ["0", "1", "0.01"], False), ("kind", "select", ["x", "y"], True)]
    assert crop["attributes"][1]["default_value"] == "y"
    assert cvat.download_frame(session, info.id, 1) == paths[1].read_bytes()

    with pytest.raises(CvatError, match="already has a task named 'auto_new'"):
        cvat.create_task(session, "auto_new", labels, paths, progress=False)
    with pytest.raises(CvatError, match="image file not found"):
        cvat.create_task(session, "other", labels, [tmp_path / "missing.png"], progress=False)
    assert len(fake_cvat.tasks) == 1


def test_big_files_go_through_tus_and_a_failed_upload_leaves_no_task(fake_cvat, session, tmp_path, monkeypatch):
    from cvat_sdk.core.uploading import DataUploader

    monkeypatch.setattr(DataUploader.__init__, "__kwdefaults__", {"max_request_size": 10})
    paths = images(tmp_path, ["x.png", "y.png"])
    info = cvat.create_task(session, "tus", ["car"], paths, progress=False)
    assert fake_cvat.count("PATCH", r"^/api/tasks/\d+/data/\w+$") == 2  # one TUS upload per file
    assert cvat.download_frame(session, info.id, 1) == paths[1].read_bytes()

    fake_cvat.fail("POST", r"^/api/tasks/\d+/data/?$", status=400)
    with pytest.raises(CvatError, match="HTTP 400 while uploading 2 images to task 'broken'"):
        cvat.create_task(session, "broken", ["car"], paths, progress=False)
    assert [t.name for t in fake_cvat.tasks.values()] == ["tus"]


def test_add_shapes_sends_chunks(fake_cvat, session):
    task_id = fake_cvat.add_task("t", [{"name": "car", "attributes": [{"name": "score", "input_type": "number",
                                                                       "values": ["0", "1", "0.01"]}]}], FRAMES)
    car = fake_cvat.label_id(task_id, "car")
    spec = fake_cvat.tasks[task_id].labels[0]["attributes"][0]["id"]
    shapes = [{"type": "rectangle", "frame": i % 3, "label_id": car, "points": [i, 1, i + 5, 6], "source": "auto",
               "attributes": [{"spec_id": spec, "value": "0.75"}], "id": 12345} for i in range(2500)]
    assert cvat.add_shapes(session, task_id, shapes, chunk_size=1000) == 3
    assert fake_cvat.count("PATCH", rf"^/api/tasks/{task_id}/annotations/?$", action="create") == 3
    stored = fake_cvat.annotations(task_id)["shapes"]
    assert len(stored) == 2500 and len({s["id"] for s in stored}) == 2500
    assert stored[2499]["points"] == [2499.0, 1.0, 2504.0, 6.0] and stored[0]["source"] == "auto"
    assert stored[7]["attributes"] == [{"spec_id": spec, "value": "0.75"}]
    with pytest.raises(CvatError, match="shape 0: missing label_id"):
        cvat.add_shapes(session, task_id, [{"type": "rectangle", "frame": 0, "points": [1, 2, 3, 4]}])


def test_backup_replace_and_delete_shapes(fake_cvat, session, tmp_path):
    task_id = fake_cvat.add_task("field / run 1", ["car"], FRAMES,
                                 shapes=[box("car", i % 3, [i, i, i + 2, i + 2]) for i in range(5)])
    before = fake_cvat.annotations(task_id)
    path = cvat.backup_annotations(session, task_id, tmp_path / "backups")
    assert path.parent == tmp_path / "backups" and path.name.startswith(f"{task_id}-field_run_1-")
    assert path.name.endswith("Z.json") and [p.name for p in path.parent.iterdir()] == [path.name]
    saved = json.loads(path.read_text())
    assert saved["task"]["name"] == "field / run 1" and saved["annotations"]["shapes"] == before["shapes"]

    ids = [s["id"] for s in before["shapes"]]
    assert cvat.delete_shapes(session, task_id, ids[:2] + [99999]) == 2
    assert [s["id"] for s in fake_cvat.annotations(task_id)["shapes"]] == ids[2:]

    cvat.replace_annotations(session, task_id, cvat.read_backup(path))
    restored = fake_cvat.annotations(task_id)["shapes"]
    assert [(s["frame"], s["points"]) for s in restored] == [(s["frame"], s["points"]) for s in before["shapes"]]


def test_set_jobs_state_moves_every_job(fake_cvat, session):
    task_id = fake_cvat.add_task("t", ["car"], [(f"f{i}.png", 8, 8) for i in range(12)], segment_size=1)
    other = fake_cvat.add_task("t_other", ["car"], FRAMES)
    assert cvat.set_jobs_state(session, task_id, stage="acceptance", state="completed") == 12
    assert {(j["stage"], j["state"]) for j in fake_cvat.jobs(task_id)} == {("acceptance", "completed")}
    assert cvat.get_task(session, task_id).status == "completed"
    assert fake_cvat.jobs(other)[0]["stage"] == "annotation"
    assert cvat.set_jobs_state(session, task_id, stage="acceptance") == 0  # nothing left to change
    with pytest.raises(CvatError, match="unknown job stage 'done'"):
        cvat.set_jobs_state(session, task_id, stage="done")


# ---------------------------------------------------------------------------------------- retries


def test_a_server_error_is_retried(fake_cvat, session):
    task_id = fake_cvat.add_task("t", ["car"], FRAMES, shapes=[box("car", 0, [1, 1, 2, 2])])
    fake_cvat.fail("GET", r"/annotations/?$", status=500, times=1)
    before = session.requests
    assert len(cvat.get_annotations(session, task_id)["shapes"]) == 1
    assert session.requests - before == 2
    fake_cvat.fail("GET", r"/data/meta$", status=None, times=1)  # connection dropped
    assert len(cvat.task_frames(session, task_id)) == 3


def test_a_persistent_server_error_becomes_cvat_error(fake_cvat, session):
    task_id = fake_cvat.add_task("t", ["car"], FRAMES)
    fake_cvat.fail("GET", r"/annotations/?$", status=500, times=100)
    with pytest.raises(CvatError, match="answered HTTP 500 while reading the annotations of task .* after 3 tries") \
            as caught:
        cvat.get_annotations(session, task_id)
    assert caught.value.status == 500
    assert fake_cvat.count("GET", r"/annotations/?$") == 3  # retries=2


def test_creating_shapes_is_not_retried_after_a_gateway_timeout(fake_cvat, session):
    task_id = fake_cvat.add_task("t", ["car"], FRAMES)
    car = fake_cvat.label_id(task_id, "car")
    shapes = [{"type": "rectangle", "frame": 0, "label_id": car, "points": [1, 1, 2, 2]}]
    fake_cvat.fail("PATCH", r"/annotations/?$", status=504)
    with pytest.raises(CvatError, match="HTTP 504"):
        cvat.add_shapes(session, task_id, shapes)
    assert fake_cvat.count("PATCH", r"/annotations/?$") == 1  # it may have gone through: no duplicate
    fake_cvat.fail("PATCH", r"/annotations/?$", status=500)
    assert cvat.add_shapes(session, task_id, shapes) == 1
    assert len(fake_cvat.annotations(task_id)["shapes"]) == 1


def test_the_real_server_adapter_against_the_fake():
    """The real-server suite's seeding/inspection adapter (tests/helpers/fake_cvat/real.py) works over the
    REST API alone: checked here against the fake, so it is known to work before a real run."""
    from helpers.fake_cvat.real import RealCvatServer
    from helpers.fake_cvat.server import FakeCvatServer

    with FakeCvatServer(mode="2.23") as fake:
        fake.add_task("someone else's", ["car"], FRAMES[:1])
        real = RealCvatServer(fake.url, fake.username, fake.password)
        try:
            task_id = real.add_task("seeded", ["car", {"name": "bus", "attributes": [
                {"name": "kind", "input_type": "select", "values": ["a", "b"], "default_value": "a"}]}], FRAMES,
                shapes=[box("car", 1, [1, 2, 3, 4])], status="completed", segment_size=2)
            assert list(real.tasks) == [task_id]  # only what the test made
            task = real.tasks[task_id]
            assert (task.name, task.status, task.size) == ("seeded", "completed", 3)
            assert [f.name for f in task.frames] == [name for name, _w, _h in FRAMES]
            assert real.task_id("seeded") == task_id and real.label_id(task_id, "car") == fake.label_id(task_id, "car")
            real.add_shapes(task_id, [box("bus", 2, [5, 6, 7, 8], source="auto")])
            shapes = real.annotations(task_id)["shapes"]
            assert sorted((s["frame"], s["source"]) for s in shapes) == [(1, "manual"), (2, "auto")]
            assert [(j["stage"], j["state"]) for j in real.jobs(task_id)] == [("acceptance", "completed")] * 2
            before = fake.tasks[task_id].updated
            real.touch(task_id)
            assert fake.tasks[task_id].updated > before
        finally:
            real.cleanup()
        assert [t.name for t in fake.tasks.values()] == ["someone else's"]  # cleanup removed only its own
