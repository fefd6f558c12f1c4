"""Secrets out of everything obdb prints or stores: URLs, query strings and command lines.

Passwords reach obdb in URLs (``postgresql://user:PASS@host/db``), in query parameters
(``…/db?password=PASS``, ``&sslpassword=…``, ``?token=…``) and in command-line overrides
(``hpo.storage=postgresql://…``, ``cvat.password=…``). Logs, error messages and
``manifest.json``'s ``argv`` go through :func:`redact` / :func:`redact_argv`, so a secret passed
in any of these forms is written as ``***``.
"""
from __future__ import annotations

import re
from typing import Sequence

#: key words that mark a value as secret (in query parameters, overrides and ``--flags``)
SECRET_WORDS = ("password", "passwd", "pwd", "passphrase", "secret", "token", "api_key", "apikey", "api-key",
                "access_key", "private_key", "credential", "auth")
_WORDS = "|".join(re.escape(w) for w in SECRET_WORDS)
#: ``scheme://user:PASSWORD@``: everything between the first ':' after the user and the last '@'
_USERINFO = re.compile(r"(://[^:/@\s]+:)[^@\s]*@")
#: ``?password=…`` / ``&sslpassword=…`` / ``;token=…`` in a URL or DSN
_QUERY = re.compile(rf"([?&;][^=&#\s]*(?:{_WORDS})[^=&#\s]*=)[^&#;\s]*", re.IGNORECASE)
#: ``cvat.password=…`` as a whole override, or ``--password=…``
_ASSIGN = re.compile(rf"^(-{{0,2}}[\w.\-]*(?:{_WORDS})[\w.\-]*=)(.+)$", re.IGNORECASE)
#: ``--password`` followed by its value as the next argument
_FLAG = re.compile(rf"^--?[\w.\-]*(?:{_WORDS})[\w.\-]*$", re.IGNORECASE)


def redact(text: str) -> str:
    """``text`` with URL passwords and secret query parameters replaced by ``***``."""
    text = _USERINFO.sub(r"\1***@", text)
    return _QUERY.sub(r"\1***", text)


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line fit to store: secrets in URLs, in ``key=value`` overrides whose key names a
    secret, and the value after a ``--password``-like flag become ``***``."""
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next:
            out.append("***")
            hide_next = False
            continue
        match = _ASSIGN.match(arg)
        if match and "://" not in match.group(1):
            out.append(match.group(1) + "***")
            continue
        out.append(redact(arg))
        hide_next = bool(_FLAG.match(arg))
    return out
