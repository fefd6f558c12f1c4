"""Connecting: where settings and environment point, secrets only from the environment, and a
clear error (without the password) when the server does not answer."""
from __future__ import annotations

import logging
import time
from pathlib import Path

import pymongo
import pytest

from helpers.servers import SecantusServer, free_port
from obdb.mongo.connection import (
    MongoConfigError,
    MongoUnavailable,
    client_options,
    connect,
    ensure_indexes,
    redact_uri,
)
from obdb.settings.schema import MongoSettings


def settings(**values) -> MongoSettings:
    return MongoSettings.model_validate({"timeout_s": 5.0, "retries": 0, **values})


def test_env_uri_wins_over_settings(mongo_server: str, mongo_db) -> None:
    db = connect(settings(uri="mongodb://127.0.0.1:1/", database=mongo_db.name),
                 env={"MONGODB_URI": mongo_server})
    db.probe.insert_one({"x": 1})
    assert mongo_db.probe.count_documents({"x": 1}) == 1
    assert db.name == mongo_db.name


def test_settings_uri_without_env(mongo_server: str, mongo_db) -> None:
    if "@" in mongo_server:
        pytest.skip("external server with credentials in MONGODB_URI")
    db = connect(settings(uri=mongo_server, database=mongo_db.name), env={})
    assert db.command("ping")["ok"] == 1


def test_password_in_settings_uri_is_refused() -> None:
    with pytest.raises(MongoConfigError, match="contains a password") as err:
        connect(settings(uri="mongodb://bob:hunter2@db.example:27017/"), env={})
    assert "hunter2" not in str(err.value)


def test_password_from_secret_file_goes_to_the_client(tmp_path: Path) -> None:
    secret = tmp_path / "mongo_password"
    secret.write_text("s3cret-Ü\n", encoding="utf-8")
    uri, options = client_options(settings(host="mongo", port=27018, username="trainer"),
                                  {"MONGODB_PASSWORD_FILE": str(secret)})
    assert uri == "mongodb://mongo:27018/"
    assert options == {"username": "trainer", "password": "s3cret-Ü", "authSource": "admin"}
    # MONGODB_PASSWORD wins over the file; host/user from the environment win over settings
    uri, options = client_options(settings(host="mongo", username="trainer"),
                                  {"MONGODB_PASSWORD": "direct", "MONGODB_PASSWORD_FILE": str(secret),
                                   "MONGODB_HOST": "other", "MONGODB_USERNAME": "ops"})
    assert uri == "mongodb://other:27017/"
    assert options["password"] == "direct" and options["username"] == "ops"


def test_user_named_in_the_settings_uri_gets_the_password_from_env() -> None:
    uri, options = client_options(settings(uri="mongodb://trainer@db:27017/?authSource=annotations"),
                                  {"MONGODB_PASSWORD": "pw"})
    assert "pw" not in uri
    assert options == {"username": "trainer", "password": "pw"}  # the URI's authSource stays


def test_user_without_password_or_unreadable_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(MongoConfigError, match="MONGODB_PASSWORD"):
        client_options(settings(username="trainer"), {})
    with pytest.raises(MongoConfigError, match="missing"):
        client_options(settings(username="trainer"), {"MONGODB_PASSWORD_FILE": str(tmp_path / "missing")})


def test_redact_uri() -> None:
    assert redact_uri("mongodb://bob:p%40ss@h:1/db?x=1") == "mongodb://bob:***@h:1/db?x=1"
    assert redact_uri("mongodb+srv://bob@h/db") == "mongodb+srv://bob@h/db"
    assert redact_uri("mongodb://h:1/") == "mongodb://h:1/"


def test_server_down_retries_then_clear_error_without_password(caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()  # nothing listens here
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="obdb.mongo.connection"):
        with pytest.raises(MongoUnavailable) as err:
            connect(settings(uri=None, host="127.0.0.1", port=port, username="bob", timeout_s=3.0,
                             retries=2), env={"MONGODB_PASSWORD": "hunter2"})
    message = str(err.value)
    assert f"127.0.0.1:{port}" in message and "after 3 attempt(s)" in message
    assert "hunter2" not in message and "hunter2" not in caplog.text
    retries = [r for r in caplog.records if "retrying within" in r.getMessage()]
    assert len(retries) == 2
    assert time.monotonic() - started < 3.0 + 1.0  # timeout_s is the budget of every attempt together


@pytest.mark.parametrize("timeout_s, retries", [(1.0, 4), (2.0, 50), (0.5, 0)])
def test_refused_connection_fails_within_timeout_s_in_all(timeout_s: float, retries: int) -> None:
    """Not ``timeout_s`` per attempt (the default 10 s and 4 retries once took 58 s)."""
    port = free_port()  # a closed port: every connection is refused at once
    started = time.monotonic()
    with pytest.raises(MongoUnavailable, match=f"127.0.0.1:{port} is not reachable after"):
        connect(settings(uri=None, host="127.0.0.1", port=port, timeout_s=timeout_s, retries=retries), env={})
    elapsed = time.monotonic() - started
    assert elapsed < timeout_s + 1.0, elapsed
    assert elapsed >= timeout_s * 0.5  # it did wait for the server, not give up at once


def test_server_down_with_password_in_env_uri_is_not_echoed() -> None:
    uri = f"mongodb://bob:hunter2@127.0.0.1:{free_port()}/"
    with pytest.raises(MongoUnavailable) as err:
        connect(settings(timeout_s=0.3), env={"MONGODB_URI": uri})
    assert "hunter2" not in str(err.value)


def test_stopped_server_is_reported(tmp_path: Path) -> None:
    """A server that was up and then went away: the same clear error, naming host:port."""
    server = SecantusServer(tmp_path / "data")
    try:
        db = connect(settings(uri=server.uri, database="x"), env={})
        db.probe.insert_one({"x": 1})
    finally:
        server.stop()
    with pytest.raises(MongoUnavailable, match=f"127.0.0.1:{server.port}"):
        connect(settings(uri=server.uri, database="x", timeout_s=0.3, retries=1), env={})


def test_login_with_password_file_and_clear_errors_for_bad_or_missing_login(tmp_path: Path) -> None:
    """A server with authentication on: the secret file's password logs in; a wrong one or none
    fails at once (no retries) with a message that names the problem and not the password."""
    storage = tmp_path / "data"
    server = SecantusServer(storage)
    try:
        with pymongo.MongoClient(server.uri) as client:
            client.admin.command("createUser", "trainer", pwd="s3cret", roles=["root"])
    finally:
        server.stop()
    server = SecantusServer(storage, port=server.port, extra_args=("--auth",))
    try:
        secret = tmp_path / "mongo_password"
        secret.write_text("s3cret\n")
        db = connect(settings(uri=server.uri, username="trainer", database="x"),
                     env={"MONGODB_PASSWORD_FILE": str(secret)})
        db.probe.insert_one({"x": 1})
        started = time.monotonic()
        with pytest.raises(MongoConfigError, match="rejected the login of user trainer") as err:
            connect(settings(uri=server.uri, username="trainer", retries=3), env={"MONGODB_PASSWORD": "wrong-pw"})
        assert "wrong-pw" not in str(err.value) and time.monotonic() - started < 3
        with pytest.raises(MongoConfigError, match="requires a login"):
            connect(settings(uri=server.uri, retries=3), env={})
    finally:
        server.stop()


def test_ensure_indexes_creates_the_queried_indexes(mongo_db) -> None:
    ensure_indexes(mongo_db)
    ensure_indexes(mongo_db)  # idempotent
    tasks = mongo_db.tasks.index_information()
    assert tasks["name_unique"]["key"] == [("name", 1)] and tasks["name_unique"]["unique"]
    assert mongo_db.meta.index_information()["task_name_unique"]["unique"]
    assert mongo_db.annotation_data.index_information()["task_name_batch_frame"]["key"] == [
        ("task_name", 1), ("obdb_batch", 1), ("frame", 1)]


def test_duplicate_task_names_block_the_unique_index(mongo_db) -> None:
    mongo_db.tasks.insert_many([{"name": "a"}, {"name": "a"}])
    with pytest.raises(MongoConfigError, match="two documents for one task name"):
        ensure_indexes(mongo_db)
