"""Known secrets and services that check them: a MongoDB (SecantusDB) with ``--auth`` and a user,
the fake CVAT server with chosen credentials, and a search for the secrets in outputs and files.

Each secret is a distinctive random string, so finding it anywhere (stdout, stderr, any byte of
any file under an output folder) can only mean it leaked.
"""
from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from helpers.servers import SecantusServer


def new_secret(kind: str) -> str:
    return f"{kind}-{secrets.token_hex(12)}"


@dataclass
class Secrets:
    """One random value per secret obdb may be given, plus wrong ones that must not leak either."""

    mongo_password: str = field(default_factory=lambda: new_secret("mongopw"))
    mongo_uri_password: str = field(default_factory=lambda: new_secret("mongouripw"))
    mongo_file_password: str = field(default_factory=lambda: new_secret("mongofilepw"))
    mongo_wrong_password: str = field(default_factory=lambda: new_secret("mongowrong"))
    cvat_password: str = field(default_factory=lambda: new_secret("cvatpw"))
    cvat_token: str = field(default_factory=lambda: new_secret("cvattoken"))
    cvat_wrong_password: str = field(default_factory=lambda: new_secret("cvatwrong"))
    cvat_wrong_token: str = field(default_factory=lambda: new_secret("cvatwrongtoken"))
    postgres_password: str = field(default_factory=lambda: new_secret("pgpw"))

    def all(self) -> list[str]:
        return list(vars(self).values())


def leaks(texts: Iterable[str], values: Iterable[str]) -> list[str]:
    """The secret values found in any of ``texts``."""
    joined = "\n".join(texts)
    return [value for value in values if value in joined]


def files_with(folders: Iterable[Path], values: Iterable[str]) -> list[str]:
    """``path: secret`` for every file below ``folders`` whose bytes contain a secret (any file
    type: logs, JSON, SQLite, TensorBoard events, reports)."""
    needles = [(v, v.encode()) for v in values]
    found = []
    for folder in folders:
        for path in sorted(Path(folder).rglob("*")):
            if path.is_file():
                data = path.read_bytes()
                found += [f"{path}: {text}" for text, raw in needles if raw in data]
    return found


class AuthMongo:
    """SecantusDB with authentication on and root users (``obdb`` and ``extra_users``), like the
    compose ``mongo`` service: users are created on a server without auth, which is then restarted
    with ``--auth``."""

    user = "obdb"

    def __init__(self, storage: Path, password: str, *, extra_users: dict[str, str] | None = None,
                 timeout: float = 60.0) -> None:
        import pymongo

        setup = SecantusServer(storage)
        try:
            with pymongo.MongoClient(setup.uri, serverSelectionTimeoutMS=10_000) as client:
                for user, secret in {self.user: password, **(extra_users or {})}.items():
                    client.admin.command("createUser", user, pwd=secret, roles=[{"role": "root", "db": "admin"}])
        finally:
            setup.stop()
        # the same server restarted with --auth (a ping is a handshake command: answered without a login)
        self.server = SecantusServer(storage, timeout=timeout, extra_args=("--auth",),
                                     log=storage.parent / "auth-mongo.log")
        self.port = self.server.port

    def uri(self, password: str | None = None) -> str:
        login = f"{self.user}:{password}@" if password else ""
        query = "?authSource=admin" if password else ""
        return f"mongodb://{login}127.0.0.1:{self.port}/{query}"

    def stop(self) -> None:
        self.server.stop()
