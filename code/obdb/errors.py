"""One error model for everything a user can fix, and one exit-code table for every command.

Every error whose message is the whole story for the user (bad settings, a missing file, wrong
credentials, an unreachable service) derives from :class:`UserError`. The command-line layer
(:func:`obdb.cli.common.guarded`) prints its message in one line and exits with its
``exit_code``; anything else is a bug and gets a traceback. Modules keep their own subclasses
(``SettingsError``, ``SourceError``, ...) so callers can catch one stage's errors, and raise them
``from`` the underlying error so the cause stays in debug logs.

Exit codes (the same for ``torch_model_runner.py``, ``test_model.py``, ``auto_annotate.py`` and
every ``obdb`` command):

====  =====================================================================================
code  meaning
====  =====================================================================================
0     success
1     unexpected failure (a bug: traceback printed)
2     bad input: settings, flags, annotations, files, credentials, a name that does not exist, a full disk
3     a service (MongoDB, CVAT, PostgreSQL, a download) could not be reached after retries
130   interrupted (Ctrl-C); rerun the same command to resume
====  =====================================================================================
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_UNAVAILABLE = 3
EXIT_INTERRUPTED = 130


class UserError(Exception):
    """Something the user can fix; the message names the file, key or name at fault."""

    exit_code: int = EXIT_USAGE


class ServiceUnavailable(UserError):
    """A service could not be reached after retries (network, server down, timeout)."""

    exit_code = EXIT_UNAVAILABLE
