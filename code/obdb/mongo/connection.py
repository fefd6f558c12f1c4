"""Open the annotations database: settings for where, the environment for secrets.

Where the server is comes from ``data.mongo`` (or ``MONGODB_URI`` / ``MONGODB_HOST`` /
``MONGODB_PORT`` / ``MONGODB_USERNAME`` in the environment, which win so containers can be
pointed elsewhere without editing a settings file). The password only ever comes from
``MONGODB_URI``, ``MONGODB_PASSWORD`` or the file named by ``MONGODB_PASSWORD_FILE`` (a Docker
secret): a password written into a settings file would end up in run outputs and git, so a
settings URI carrying one is refused.

A server that does not answer is tried ``retries + 1`` times within ``timeout_s`` *in all* (a
container started next to the database often wins the race; a user waiting on a typo should not
wait a minute), then :class:`MongoUnavailable` names ``host:port`` and the driver's reason, never
the password.
"""
from __future__ import annotations

from obdb.errors import ServiceUnavailable, UserError
import logging
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pymongo
from pymongo import MongoClient
from pymongo.database import Database
from pymongo.errors import ConfigurationError, OperationFailure, PyMongoError
from pymongo.uri_parser import parse_uri

from obdb.settings.schema import MongoSettings

logger = logging.getLogger(__name__)

#: Least time between the starts of attempt ``i`` and ``i + 1``: ``BACKOFF_BASE_S * 2**i`` seconds,
#: capped at ``BACKOFF_MAX_S`` and by what is left of ``timeout_s`` (an attempt that waited for the
#: server that long already backed off).
BACKOFF_BASE_S = 0.5
BACKOFF_MAX_S = 30.0
#: Shortest wait worth an attempt of its own: the driver looks at the server every 0.5 s, so a
#: shorter attempt takes 0.5 s anyway. With less than this per attempt left, one attempt takes it all.
MIN_ATTEMPT_S = 0.5
_AUTH_FAILED = 18  # mongod's AuthenticationFailed code: retrying will not help
_UNAUTHORIZED = 13  # a command that needs a login, sent without one

_CREDENTIALS = re.compile(r"^(mongodb(?:\+srv)?://)([^@/]*)@", re.IGNORECASE)


class MongoUnavailable(ServiceUnavailable, RuntimeError):
    """The server cannot be reached (after the configured retries): exit 3."""


class MongoConfigError(UserError, ValueError):
    """The connection settings themselves are wrong (password in settings, unreadable secret file, a login
    the server rejects or requires): exit 2."""


def redact_uri(uri: str) -> str:
    """``mongodb://user:secret@host/`` → ``mongodb://user:***@host/``, for logs and messages."""
    def hide(match: re.Match[str]) -> str:
        user, sep, _password = match.group(2).partition(":")
        return f"{match.group(1)}{user}{':***' if sep else ''}@"

    return _CREDENTIALS.sub(hide, uri, count=1)


def _read_password(env: Mapping[str, str]) -> str | None:
    if env.get("MONGODB_PASSWORD"):
        return env["MONGODB_PASSWORD"]
    file_name = env.get("MONGODB_PASSWORD_FILE")
    if not file_name:
        return None
    try:
        # one trailing newline is what `echo secret > file` adds; it is not part of the password
        return Path(file_name).read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as err:
        raise MongoConfigError(f"MONGODB_PASSWORD_FILE {file_name}: cannot read the password file "
                               f"({err.strerror or err})") from err


def _parse(uri: str, what: str) -> dict[str, Any]:
    try:
        return parse_uri(uri, validate=False, warn=True)
    except (ConfigurationError, ValueError) as err:
        # the driver's message may quote the URI; say what is wrong without it
        reason = str(err).replace(uri, redact_uri(uri))
        # the URI may hold a password
        raise MongoConfigError(f"{what}: not a valid MongoDB URI ({redact_uri(reason)})") from None


def client_options(settings: MongoSettings, env: Mapping[str, str] = os.environ) -> tuple[str, dict[str, Any]]:
    """The URI and keyword arguments for :class:`pymongo.MongoClient`. The password travels as a
    keyword argument, never inside a URI we build, so nothing that prints the URI can leak it; only a
    ``MONGODB_URI`` from the environment may carry one itself."""
    if settings.uri and _parse(settings.uri, "data.mongo.uri").get("password"):
        raise MongoConfigError("data.mongo.uri contains a password; remove it and put the password in "
                               "MONGODB_PASSWORD or a file named by MONGODB_PASSWORD_FILE (or the whole "
                               "URI in MONGODB_URI)")
    options: dict[str, Any] = {}
    uri = env.get("MONGODB_URI") or settings.uri
    if uri:
        parsed = _parse(uri, "MONGODB_URI" if env.get("MONGODB_URI") else "data.mongo.uri")
    else:
        host = env.get("MONGODB_HOST") or settings.host
        port = env.get("MONGODB_PORT") or str(settings.port)
        if not port.isdigit():
            raise MongoConfigError(f"MONGODB_PORT must be a port number, got {port!r}")
        uri = f"mongodb://{host}:{port}/"
        parsed = {"options": {}}
    if parsed.get("password"):  # a complete URI from MONGODB_URI
        return uri, options
    username = parsed.get("username") or env.get("MONGODB_USERNAME") or settings.username
    if username:
        password = _read_password(env)
        if password is None:
            raise MongoConfigError(f"MongoDB user {username!r} has no password: set MONGODB_PASSWORD or "
                                   f"MONGODB_PASSWORD_FILE")
        options.update(username=username, password=password)
        if "authsource" not in {k.lower() for k in parsed.get("options") or {}}:
            options["authSource"] = settings.auth_source
    return uri, options


def _hosts(uri: str) -> str:
    nodes = _parse(uri, "MongoDB URI")["nodelist"]
    return ",".join(f"{host}:{port}" for host, port in nodes) or uri


def connect(settings: MongoSettings, *, env: Mapping[str, str] = os.environ) -> Database:
    """The ``settings.database`` database of a server that answered a ping.

    Tries up to ``settings.retries + 1`` times within ``settings.timeout_s`` in all: each attempt
    waits for the server for an equal share of the time left, with exponential backoff between
    attempts that fail fast; then raises :class:`MongoUnavailable`. A rejected login is not
    retried. Datetimes come back timezone-aware (UTC), so they compare with CVAT's.
    """
    uri, options = client_options(settings, env)
    hosts = _hosts(uri)
    secret = options.get("password") or _parse(uri, "MongoDB URI").get("password")
    attempts = settings.retries + 1
    started = time.monotonic()
    deadline = started + settings.timeout_s
    last = ""
    tried = 0
    for attempt in range(attempts):
        attempt_started = time.monotonic()
        left = deadline - attempt_started
        if left <= 0:
            break
        share = left / (attempts - attempt)
        final = attempt + 1 == attempts or share < MIN_ATTEMPT_S
        tried += 1
        try:
            client = _client(uri, (left if final else share), options)
        except ConfigurationError as err:
            # scrubbed: no cause
            raise MongoConfigError(f"MongoDB options are invalid: {_scrub(str(err), secret, uri)}") from None
        try:
            client.admin.command("ping")
            # a ping needs no login; ask for something that does, so a missing or wrong login fails here
            client[settings.database].list_collection_names()
            client.close()  # it waits for the server only as long as this attempt could
            logger.info("connected to MongoDB at %s, database %r", hosts, settings.database)
            return _client(uri, settings.timeout_s, options)[settings.database]
        except OperationFailure as err:
            client.close()
            if err.code == _AUTH_FAILED:
                raise MongoConfigError(f"MongoDB at {hosts} rejected the login of user "
                                       f"{options.get('username') or 'from MONGODB_URI'} (authentication "
                                       f"failed; check the password and auth_source "
                                       f"{settings.auth_source!r})") from err
            if err.code == _UNAUTHORIZED and not (options or secret):
                raise MongoConfigError(f"MongoDB at {hosts} requires a login: set data.mongo.username (or "
                                       f"MONGODB_USERNAME) and MONGODB_PASSWORD or MONGODB_PASSWORD_FILE") from err
            last = _scrub(str(err), secret, uri)
        except PyMongoError as err:
            client.close()
            last = _scrub(str(err), secret, uri)
        if final:
            break
        else:
            spent = time.monotonic() - attempt_started
            # leave the later attempts some of the time that is left
            delay = min(BACKOFF_BASE_S * 2 ** attempt - spent, BACKOFF_MAX_S, (deadline - time.monotonic()) / 2)
            logger.warning("MongoDB at %s not reachable (attempt %d of %d); retrying within the %.1f s left",
                           hosts, attempt + 1, attempts, max(0.0, deadline - time.monotonic()))
            if delay > 0:
                time.sleep(delay)
    raise MongoUnavailable(f"MongoDB at {hosts} is not reachable after {tried} attempt(s) in "
                           f"{time.monotonic() - started:.0f} s: {last.split(', Timeout:')[0]}. Is the "
                           f"server running (docker compose up -d mongo) and is data.mongo / MONGODB_URI right?")


def _client(uri: str, timeout_s: float, options: dict[str, Any]) -> MongoClient[dict[str, Any]]:
    timeout_ms = max(1, int(timeout_s * 1000))
    return MongoClient(uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms, tz_aware=True,
                       appname="obdb", connect=False, **options)


def _scrub(message: str, secret: str | None, uri: str) -> str:
    message = message.replace(uri, redact_uri(uri))
    if secret:
        message = message.replace(secret, "***")
    return message


def ensure_indexes(db: Database) -> None:
    """The indexes the readers and writers query by (creating existing ones is a no-op).

    ``tasks.name`` and ``meta.task_name`` are unique: a task is replaced by its exact name, and two
    documents for one name would make "which one is current" a guess.
    """
    try:
        db.tasks.create_index([("name", pymongo.ASCENDING)], unique=True, name="name_unique")
        db.meta.create_index([("task_name", pymongo.ASCENDING)], unique=True, name="task_name_unique")
    except OperationFailure as err:
        if err.code == 11000:  # duplicate key while building the unique index
            raise MongoConfigError(f"database {db.name!r} holds two documents for one task name "
                                   f"({err.details.get('errmsg', err) if err.details else err}); remove "
                                   f"the duplicate before using it") from err
        raise
    # readers ask for one task's committed shapes (task_name + batch) in frame order
    db.annotation_data.create_index([("task_name", pymongo.ASCENDING), ("obdb_batch", pymongo.ASCENDING),
                                     ("frame", pymongo.ASCENDING)], name="task_name_batch_frame")
