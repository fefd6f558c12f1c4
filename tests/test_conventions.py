"""The tests' own import convention (README, "Tests and benchmarks"): shared test code comes from the
``helpers`` package (tests/helpers, on pytest's pythonpath); no test edits ``sys.path`` or imports
``conftest``, whose fixtures pytest hands out by name."""
from __future__ import annotations

import re
from pathlib import Path

TESTS = Path(__file__).resolve().parent
PATH_EDIT = re.compile(r"sys\.path\.(insert|append)|^\s*(from conftest import|import conftest\b)", re.M)


def test_tests_import_helpers_without_path_edits() -> None:
    found = [str(path.relative_to(TESTS)) for path in sorted(TESTS.rglob("*.py"))
             if PATH_EDIT.search(path.read_text(encoding="utf-8"))]
    assert found == [], "import shared test code as `from helpers.<module> import ...`: " + ", ".join(found)
