"""Say how to set up the environment when a script is started with a Python that lacks it.

The entry scripts (``code/*.py``) can be started with any ``python3``; without the project's
virtual environment the first third-party import fails deep inside a command with a traceback.
This check runs first, looks the packages up without importing them (cheap), and prints one line
that says what to do instead.
"""
from __future__ import annotations

import importlib.util
import sys

REQUIRED = ("torch", "torchvision", "optuna", "pydantic", "numpy", "PIL")


def setup_hint() -> str:
    return ("set it up once with `bash scripts/setup_env.sh`, then run `.venv/bin/python <script> ...` "
            "or `source .venv/bin/activate` first")


def missing_packages() -> list[str]:
    return [name for name in REQUIRED if importlib.util.find_spec(name) is None]


def require_environment(script: str) -> None:
    """Exit 2 with one line if this Python lacks obdb's packages."""
    missing = missing_packages()
    if missing:
        print(f"error: {script} needs obdb's environment, but {sys.executable} lacks {', '.join(missing)}: "
              f"{setup_hint()}", file=sys.stderr)
        raise SystemExit(2)
