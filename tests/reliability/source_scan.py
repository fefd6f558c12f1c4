"""A scan of the source tree for code that runs data as code: unpickling, ``eval``/``exec``,
``torch.load`` without ``weights_only=True``, unsafe YAML loading and shells.

Python files are parsed (``ast``), so prose in docstrings and comments ("never a pickle") and
methods that merely share a name (``model.eval()``) do not count; only real imports and calls do.
Shell scripts are scanned line by line for ``eval``.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "shelve", "marshal", "jsonpickle", "joblib"}
# torch.distributed's *_object collectives pickle their arguments
OBJECT_COLLECTIVES = {"broadcast_object_list", "all_gather_object", "gather_object", "scatter_object_list",
                      "send_object_list", "recv_object_list"}
SHELL_CALLS = {("os", "system"), ("os", "popen")}
SUBPROCESS_CALLS = {"run", "Popen", "call", "check_call", "check_output", "getoutput", "getstatusoutput"}
SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader", "BaseLoader", "CBaseLoader"}


@dataclass(frozen=True)
class Finding:
    path: str  # relative to the scanned root
    line: int
    kind: str
    code: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.kind}: {self.code}"


def _dotted(node: ast.AST) -> str:
    """``torch.load`` for ``torch.load``, ``np.load`` for ``np.load``; "" for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return ""


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def _call_findings(call: ast.Call) -> Iterator[str]:
    name = _dotted(call.func)
    last = name.rsplit(".", 1)[-1]
    head = name.split(".", 1)[0]
    if isinstance(call.func, ast.Name) and call.func.id in {"eval", "exec", "compile", "__import__"}:
        yield f"{call.func.id}()"
    if name == "torch.load" and not _is_true(_keyword(call, "weights_only")):
        yield "torch.load without weights_only=True"
    if head in PICKLE_MODULES and last in {"load", "loads", "Unpickler", "open", "dump", "dumps"}:
        yield f"{name}()"
    if last == "read_pickle" or (last == "load" and _is_true(_keyword(call, "allow_pickle"))):
        yield f"{name}() of a pickle"
    if last in OBJECT_COLLECTIVES:
        yield f"{last}() (pickles its objects)"
    if name in {"yaml.unsafe_load", "yaml.full_load", "yaml.unsafe_load_all"}:
        yield f"{name}()"
    if name in {"yaml.load", "yaml.load_all"}:
        loader = _keyword(call, "Loader") or (call.args[1] if len(call.args) > 1 else None)
        loader_name = _dotted(loader).rsplit(".", 1)[-1] if loader is not None else ""
        if loader_name not in SAFE_YAML_LOADERS:
            yield f"{name} without a safe Loader"
    if tuple(name.rsplit(".", 1)) in SHELL_CALLS:
        yield f"{name}() (runs a shell)"
    if head == "subprocess" and last in SUBPROCESS_CALLS and _is_true(_keyword(call, "shell")):
        yield f"{name}(shell=True)"
    if last in {"getoutput", "getstatusoutput"} and head == "subprocess":
        yield f"{name}() (runs a shell)"


def scan_python(text: str, path: str) -> list[Finding]:
    tree = ast.parse(text, filename=path)
    lines = text.splitlines()
    found = []
    for node in ast.walk(tree):
        kinds: list[str] = []
        if isinstance(node, ast.Import):
            kinds = [f"import {a.name}" for a in node.names if a.name.split(".")[0] in PICKLE_MODULES]
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in PICKLE_MODULES:
            kinds = [f"from {node.module} import"]
        elif isinstance(node, ast.Call):
            kinds = list(_call_findings(node))
        for kind in kinds:
            found.append(Finding(path, node.lineno, kind, lines[node.lineno - 1].strip()))
    return found


_SHELL_EVAL = re.compile(r"(^|[;&|(`]|\bthen|\bdo)\s*eval\b")


def scan_shell(text: str, path: str) -> list[Finding]:
    return [Finding(path, number, "shell eval", line.strip())
            for number, line in enumerate(text.splitlines(), 1)
            if not line.lstrip().startswith("#") and _SHELL_EVAL.search(line)]


def scan_tree(root: Path, folders: Iterable[str]) -> list[Finding]:
    """Every finding in ``*.py`` and ``*.sh`` files below ``root/<folder>`` (build metadata skipped)."""
    found: list[Finding] = []
    for folder in folders:
        for path in sorted((root / folder).rglob("*")):
            rel = path.relative_to(root).as_posix()
            if not path.is_file() or ".egg-info/" in rel or "__pycache__" in rel:
                continue
            if path.suffix == ".py":
                found += scan_python(path.read_text(encoding="utf-8"), rel)
            elif path.suffix == ".sh":
                found += scan_shell(path.read_text(encoding="utf-8"), rel)
    return found
