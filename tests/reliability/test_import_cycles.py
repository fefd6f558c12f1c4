"""No import cycles among obdb's modules: imports flow one way (settings → sources → ... → cli).

Checked on the source text (AST), not by importing, so it also sees imports inside functions, which
hide a cycle until the one call that runs them. Imports under ``if TYPE_CHECKING:`` are left out:
they never run."""
from __future__ import annotations

import ast
from pathlib import Path

CODE = Path(__file__).resolve().parents[2] / "code"


def module_name(path: Path) -> str:
    parts = list(path.relative_to(CODE).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _runtime_nodes(tree: ast.AST):
    """Every node except the bodies of ``if TYPE_CHECKING:`` blocks."""
    stack = [tree]
    while stack:
        node = stack.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                stack.extend(child.orelse)
            else:
                stack.append(child)


def import_graph() -> dict[str, set[str]]:
    """Module → the obdb modules it imports (a ``from package import name`` counts as importing the
    submodule ``package.name`` where that is a module, else the package)."""
    files = {module_name(p): p for p in (CODE / "obdb").rglob("*.py")}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base for alias in node.names]
            graph[name].update(t for t in targets if t in files and t != name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as a list of modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (found := visit(start)):
            return found
    return None


def test_the_checker_finds_a_cycle_through_a_function_level_import(tmp_path: Path) -> None:
    graph = {"obdb.a": {"obdb.b"}, "obdb.b": {"obdb.c"}, "obdb.c": {"obdb.a"}, "obdb.d": set()}
    assert find_cycle(graph) == ["obdb.a", "obdb.b", "obdb.c", "obdb.a"]
    assert find_cycle({"obdb.a": {"obdb.b"}, "obdb.b": set()}) is None
    tree = ast.parse("import os\ndef f():\n    from obdb.sources import local\nif TYPE_CHECKING:\n    import obdb.x\n")
    imports = [n for n in _runtime_nodes(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert [ast.unparse(n) for n in sorted(imports, key=lambda n: n.lineno)] == [
        "import os", "from obdb.sources import local"]


def test_obdb_has_no_import_cycles() -> None:
    graph = import_graph()
    assert {"obdb.sources.driver", "obdb.sources.contract", "obdb.pipeline", "obdb.shapes"} <= graph.keys()
    assert "obdb.sources.contract" in graph["obdb.sources.driver"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])
