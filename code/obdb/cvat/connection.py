"""Connecting to CVAT: credentials from the environment, login, the server version check, and one
retry policy for every request obdb makes.

This package is the only place that talks to a CVAT server, and it does so through the real
``cvat_sdk`` client. Secrets (password, access token, session cookies) never appear in log lines,
``repr``s or exception messages: every message built here is scrubbed of them.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, TypeVar

import urllib3
from cvat_sdk.api_client import ApiException, rest
from cvat_sdk.core.client import AccessTokenCredentials, Client, Config
from cvat_sdk.core.exceptions import BackgroundRequestException, CvatSdkException
from cvat_sdk.version import VERSION as SDK_VERSION

from obdb.errors import ServiceUnavailable, UserError

log = logging.getLogger(__name__)

# The oldest and newest server (major.minor) obdb works with. The SDK's own rule (its minor version
# and the next) would refuse the 2.2x servers many teams still run. Of the endpoints obdb uses, only
# ``/api/server/about`` answers those servers in a form the pinned SDK's (2.80.0) model rejects (no
# ``logo_url``/``subtitle``; compared with cvat-sdk 2.23.1's models), so it is read as raw JSON.
# Tested against the fake server in its 2.80 and 2.23 modes (tests/helpers/fake_cvat).
OLDEST_SERVER, NEWEST_SERVER = (2, 20), (2, 81)
SUPPORTED_SERVER_VERSIONS = (f"{OLDEST_SERVER[0]}.{OLDEST_SERVER[1]}", f"{NEWEST_SERVER[0]}.{NEWEST_SERVER[1]}")
# HTTP statuses worth another try. A non-idempotent request (creating shapes) is retried only on
# answers that mean "not applied" (a gateway timeout may hide a request that did go through).
RETRY_STATUSES = frozenset({500, 502, 503, 504})
RETRY_STATUSES_UNSAFE = frozenset({500, 502, 503})
DEFAULT_TIMEOUT_S = (10.0, 300.0)  # (connect, read) for every request

T = TypeVar("T")


class CvatError(UserError, RuntimeError):
    """A CVAT request that failed for good; ``status`` is the HTTP status when there was one.

    Messages never carry a password, token or cookie."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CvatUnavailable(CvatError, ServiceUnavailable):
    """CVAT did not answer (connection refused, dropped, timed out, or 5xx) after every retry:
    exit code 3, like every other service that cannot be reached."""

    exit_code = ServiceUnavailable.exit_code


@dataclass(frozen=True)
class CvatCredentials:
    """Where and how to log in. Built from the environment (``from_env``), never from settings."""

    url: str
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    def __repr__(self) -> str:
        secret = "token=***" if self.token else "password=***" if self.password else "no secret"
        return f"CvatCredentials(url={self.url!r}, username={self.username!r}, {secret})"

    __str__ = __repr__

    @property
    def who(self) -> str:
        return f"user {self.username}" if not self.token else "the access token"

    def secrets(self) -> list[str]:
        return [s for s in (self.password, self.token) if s]

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ, url: str | None = None) -> "CvatCredentials":
        """``CVAT_URL`` (else ``url``, e.g. from ``data.cvat.url``), then ``CVAT_ACCESS_TOKEN`` or
        ``CVAT_USERNAME`` with ``CVAT_PASSWORD`` / ``CVAT_PASSWORD_FILE`` (a Docker/Kubernetes secret)."""
        server = env.get("CVAT_URL") or url
        if not server:
            raise CvatError("no CVAT server given: set CVAT_URL (or data.cvat.url in the settings file)")
        username = env.get("CVAT_USERNAME") or None
        token = env.get("CVAT_ACCESS_TOKEN") or None
        password = env.get("CVAT_PASSWORD") or None
        password_file = env.get("CVAT_PASSWORD_FILE")
        if password is None and password_file:
            try:
                password = Path(password_file).read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as error:
                raise CvatError(f"CVAT_PASSWORD_FILE {password_file}: cannot read it ({error.strerror})") from error
        if token is None and not (username and password):
            missing = "CVAT_USERNAME" if not username else "CVAT_PASSWORD or CVAT_PASSWORD_FILE"
            raise CvatError(f"no CVAT credentials for {server}: set {missing} (or CVAT_ACCESS_TOKEN)")
        return cls(server.rstrip("/"), username, password, token)


class _CountingRestClient(rest.RESTClientObject):
    """The SDK's HTTP layer with a request counter, a default timeout and no retries of its own
    (``with_retries`` is the one retry policy, so counts and delays stay predictable)."""

    def __init__(self, configuration: Any, session: "CvatSession") -> None:
        configuration.retries = urllib3.Retry(total=False)
        super().__init__(configuration)
        self._session = session

    def request(self, method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        self._session.requests += 1
        if kwargs.get("_request_timeout") is None:
            kwargs["_request_timeout"] = self._session.timeout_s
        return super().request(method, url, *args, **kwargs)


@dataclass
class CvatSession:
    """A logged-in ``cvat_sdk.Client`` (``.client``) plus the retry policy; ``requests`` counts
    HTTP requests made through it."""

    client: Client
    url: str
    who: str = ""
    retries: int = 4
    backoff_s: float = 0.5
    timeout_s: tuple[float, float] = DEFAULT_TIMEOUT_S
    requests: int = 0
    server_version: str = ""
    _secrets: list[str] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        api_client = self.client.api_client
        old = api_client.rest_client
        api_client.rest_client = _CountingRestClient(api_client.configuration, self)
        old.pool_manager.clear()

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> "CvatSession":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def with_retries(self, call: Callable[[], T], *, what: str, idempotent: bool = True) -> T:
        """``call()`` with up to ``retries`` more tries on connection errors and 5xx answers
        (exponential backoff from ``backoff_s``); any other failure, or the last one, → ``CvatError``."""
        statuses = RETRY_STATUSES if idempotent else RETRY_STATUSES_UNSAFE
        for attempt in range(self.retries + 1):
            try:
                return call()
            except ApiException as error:
                status = error.status or None
                if status in statuses and attempt < self.retries:
                    self._wait(attempt, what, f"HTTP {status}")
                    continue
                kind = CvatUnavailable if status in RETRY_STATUSES else CvatError
                raise kind(self._http_message(what, error, attempt), status=status) from error
            except (urllib3.exceptions.HTTPError, ConnectionError) as error:
                if _retryable_connection_error(error, idempotent) and attempt < self.retries:
                    self._wait(attempt, what, type(error).__name__)
                    continue
                tries = f" after {attempt + 1} tries" if attempt else ""
                raise CvatUnavailable(self.scrub(f"CVAT at {self.url} did not answer while {what}{tries} "
                                                 f"({type(error).__name__}: {_short(error)})")) from error
            except BackgroundRequestException as error:
                raise CvatError(self.scrub(f"CVAT at {self.url} failed while {what}: {_short(error)}")) from error
            except CvatSdkException as error:
                raise CvatError(self.scrub(f"CVAT at {self.url}: {what} failed: {_short(error)}")) from error
        raise AssertionError("unreachable")

    def _wait(self, attempt: int, what: str, why: str) -> None:
        delay = self.backoff_s * (2 ** attempt)
        log.warning("CVAT at %s: %s while %s; retrying in %.1f s (%d/%d)", self.url, why, what, delay,
                    attempt + 1, self.retries)
        time.sleep(delay)

    def _http_message(self, what: str, error: ApiException, attempt: int) -> str:
        status = error.status
        detail = _short(error.body if isinstance(error.body, str) else error.reason or "")
        tries = f" after {attempt + 1} tries" if attempt else ""
        if status in (401, 403):
            text = f"CVAT at {self.url} refused {self.who or 'the request'} while {what} (HTTP {status}): {detail}"
        elif status == 404:
            text = f"CVAT at {self.url}: not found while {what} (HTTP 404)"
        else:
            text = f"CVAT at {self.url} answered HTTP {status} while {what}{tries}: {detail}"
        return self.scrub(text)


def _retryable_connection_error(error: Exception, idempotent: bool) -> bool:
    """Connection refused/reset before a request was sent is always safe to retry; a dropped or
    timed-out answer only for idempotent requests."""
    connect_errors = (urllib3.exceptions.NewConnectionError, urllib3.exceptions.ConnectTimeoutError)
    reason = getattr(error, "reason", None)
    if isinstance(error, connect_errors) or isinstance(reason, connect_errors):
        return True
    return idempotent


def _short(value: object, limit: int = 300) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit] + "…"


def connect(creds: CvatCredentials, *, allow_version_mismatch: bool = False, retries: int = 4,
            backoff_s: float = 0.5, timeout_s: tuple[float, float] = DEFAULT_TIMEOUT_S,
            status_check_period: float = 1.0) -> CvatSession:
    """Log in to CVAT and check its version (``SUPPORTED_SERVER_VERSIONS``).

    A server of another version is refused (its API may differ in ways that corrupt uploads)
    unless ``allow_version_mismatch``; then it is only logged."""
    try:
        client = Client(creds.url, config=Config(status_check_period=status_check_period),
                        check_server_version=False)
    except (CvatSdkException, ValueError) as error:
        raise CvatError(f"CVAT URL {creds.url!r} is not usable: {_short(error)}") from error
    session = CvatSession(client, creds.url, creds.who, retries, backoff_s, timeout_s,
                          _secrets=creds.secrets())
    try:
        session.server_version = server_version(session)
        check_version(creds.url, session.server_version, allow_version_mismatch)
        _login(session, creds)
    except BaseException:
        session.close()
        raise
    log.info("connected to CVAT %s at %s as %s", session.server_version, creds.url, creds.username or "token")
    return session


def server_version(session: CvatSession) -> str:
    """The server's version from the raw ``/api/server/about`` JSON.

    Not through the SDK's ``About`` model: cvat-sdk 2.80 requires ``logo_url`` and ``subtitle``,
    which older servers (2.23 and its neighbours) do not send, so the model would fail with a
    ``TypeError`` before any version check could say what is wrong."""
    api = session.client.api_client.server_api

    def fetch() -> Any:
        _, response = api.retrieve_about(_parse_response=False)
        return response.data

    raw = session.with_retries(fetch, what="reading the server version")
    try:
        about = json.loads(raw)
        version = about["version"]
    except (ValueError, TypeError, KeyError) as error:
        raise CvatError(f"{session.url} does not look like a CVAT server: /api/server/about gave no version "
                        f"({type(error).__name__})") from error
    if not isinstance(version, str) or not version.strip():
        raise CvatError(f"{session.url}: /api/server/about gave no version (got {version!r})")
    return version.strip()


def parse_version(version: str) -> tuple[int, int] | None:
    """``(major, minor)`` of a CVAT version string (``2.23.1``, ``v2.24.0-dev``), or None."""
    match = re.match(r"v?(\d+)\.(\d+)", version.strip())
    return (int(match.group(1)), int(match.group(2))) if match else None


def supported_range() -> str:
    return f"{SUPPORTED_SERVER_VERSIONS[0]} to {SUPPORTED_SERVER_VERSIONS[1]}"


def check_version(url: str, version: str, allow_mismatch: bool) -> None:
    """Refuse a server outside ``OLDEST_SERVER``..``NEWEST_SERVER`` (its API may differ in ways
    that corrupt uploads) unless ``allow_mismatch``; then only warn."""
    major_minor = parse_version(version)
    if major_minor is not None and OLDEST_SERVER <= major_minor <= NEWEST_SERVER:
        return
    message = (f"CVAT at {url} runs version {version}, but obdb (cvat-sdk {SDK_VERSION}) supports CVAT "
               f"{supported_range()}")
    if not allow_mismatch:
        raise CvatError(message + "; pass --allow-version-mismatch (or set data.cvat.allow_version_mismatch) "
                        "to try anyway")
    log.warning("%s; going on because a version mismatch is allowed", message)


def _login(session: CvatSession, creds: CvatCredentials) -> None:
    client = session.client
    refused = f"CVAT at {creds.url} refused the credentials of {creds.who}"
    try:
        if creds.token:
            client.login(AccessTokenCredentials(creds.token))
            session.with_retries(client.users.retrieve_current_user, what="checking the access token")
        else:
            session.with_retries(lambda: client.login((creds.username, creds.password)), what="logging in")
    except CvatError as error:
        if error.status in (400, 401, 403):
            raise CvatError(refused, status=error.status) from None  # the refusal says all; no cookie in a cause
        raise
