"""Each external service is reached through its own package: docs/architecture.md's rule, checked
on the source (imports inside functions count too)."""
from __future__ import annotations

import ast
from pathlib import Path

CODE = Path(__file__).resolve().parents[1] / "code"

#: top-level module → the only package of obdb that may import it
OWNERS = {"pymongo": "obdb/mongo", "bson": "obdb/mongo", "cvat_sdk": "obdb/cvat"}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports (absolute imports; relative ones stay in obdb)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_only_the_service_packages_import_their_clients() -> None:
    files = sorted(CODE.rglob("*.py"))
    assert len(files) > 50  # the walk found the package
    wrong = []
    seen = set()
    for path in files:
        relative = path.relative_to(CODE).as_posix()
        for module in imported_modules(path) & OWNERS.keys():
            seen.add(module)
            if not relative.startswith(OWNERS[module] + "/"):
                wrong.append(f"{relative} imports {module} (only {OWNERS[module]}/ may)")
    assert wrong == []
    assert seen == set(OWNERS)  # the owners do use them: the check is looking at real imports


def test_the_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from cvat_sdk.core import Client\n    import pymongo.errors\n")
    assert imported_modules(probe) == {"cvat_sdk", "pymongo"}
