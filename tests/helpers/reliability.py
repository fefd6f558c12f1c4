"""Helpers of the reliability tests: the real entry points as subprocesses, folder fingerprints,
an earlier run's outputs written by hand, damaged images and a tiny saved model.

Commands run as a user types them (``python code/….py`` or the installed ``obdb``): ``run`` in a
fresh interpreter, ``run_forked`` in a process forked from one that imported obdb already (see
``fork_server.py``); either way exit codes, stderr and files on disk are what a user would see.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle  # noqa: TID251 - writes a pickle with a payload, to check that obdb never runs it
import struct
import subprocess
import sys
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

ROOT = Path(__file__).resolve().parents[2]
CODE = ROOT / "code"
PY = sys.executable
RUNNER = [PY, str(CODE / "torch_model_runner.py")]
TEST_MODEL = [PY, str(CODE / "test_model.py")]
AUTO_ANNOTATE = [PY, str(CODE / "auto_annotate.py")]
_OBDB_SCRIPT = Path(sys.executable).parent / "obdb"
# the installed console script when there is one (as users run it), else the same function
OBDB = [str(_OBDB_SCRIPT)] if _OBDB_SCRIPT.exists() else [
    PY, "-c", "import sys; from obdb.cli.main import main; sys.exit(main())"]  # obdb through clean_env's PYTHONPATH
QUIET = ["--progress", "false"]
TIMEOUT_S = 300  # a bad input that is not refused would start training: stop it, the test fails anyway


# --------------------------------------------------------------------------- running commands
@dataclass
class Outcome:
    argv: list[str]
    code: int
    stdout: str
    stderr: str

    @property
    def text(self) -> str:
        """Everything the command printed, for assertion messages."""
        return f"$ {' '.join(self.argv)}\n[exit {self.code}]\n--- stdout\n{self.stdout[-4000:]}\n--- stderr\n" \
               f"{self.stderr[-6000:]}"


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The test's environment without the service settings a developer may have exported (a
    command must not reach a real MongoDB/CVAT/PostgreSQL by accident), plus ``extra``."""
    prefixes = ("MONGODB_", "CVAT_", "OBDB_", "POSTGRES_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}
    env["PYTHONPATH"] = str(CODE)
    env.update(extra or {})
    return env


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
        timeout: float = TIMEOUT_S) -> Outcome:
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, env=clean_env(env), cwd=cwd,
                              timeout=timeout)
    except subprocess.TimeoutExpired as err:
        out = err.stdout.decode(errors="replace") if isinstance(err.stdout, bytes) else err.stdout or ""
        errors = err.stderr.decode(errors="replace") if isinstance(err.stderr, bytes) else err.stderr or ""
        return Outcome(list(argv), -9, out, errors + f"\n[killed after {timeout} s]")
    return Outcome(list(argv), done.returncode, done.stdout, done.stderr)


def default_workers() -> int:
    return max(2, min(4, (os.cpu_count() or 2) + 1))


def run_parallel(jobs: Iterable[Callable[[], Outcome]], workers: int | None = None) -> list[Outcome]:
    """Run independent commands side by side (each waits on its own process)."""
    jobs = list(jobs)
    with ThreadPoolExecutor(max_workers=workers or default_workers()) as pool:
        return list(pool.map(lambda job: job(), jobs))


def run_forked(calls: Sequence[tuple[Sequence[str], Mapping[str, str] | None]], folder: Path, *,
               workers: int | None = None, timeout: float = TIMEOUT_S) -> list[Outcome]:
    """Run ``(argv, env)`` commands through ``fork_server.py``: each in its own process forked from an
    interpreter that imported obdb (and torch) once, instead of importing it again per command."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [{"argv": list(argv), "env": clean_env(env), "stdout": str(folder / f"{i}.out"),
             "stderr": str(folder / f"{i}.err"), "timeout": timeout} for i, (argv, env) in enumerate(calls)]
    server = Path(__file__).resolve().parent / "fork_server.py"
    done = subprocess.run([PY, str(server), str(workers or default_workers())], input=json.dumps(jobs),
                          capture_output=True, text=True, env=clean_env(), timeout=timeout * max(1, len(jobs)))
    assert done.returncode == 0, done.stderr
    codes = json.loads(done.stdout)
    return [Outcome(list(job["argv"]), code, Path(job["stdout"]).read_text(errors="replace"),
                    Path(job["stderr"]).read_text(errors="replace")) for job, code in zip(jobs, codes)]


# --------------------------------------------------------------------------- output folders
def fingerprint(folder: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file below ``folder`` (hidden ones too)."""
    result = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            result[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return result


def changes(before: Mapping[str, str], after: Mapping[str, str], allowed_new: Sequence[str] = ()) -> list[str]:
    """Files changed, removed, or added outside the ``allowed_new`` folders (prefixes)."""
    problems = [f"changed: {p}" for p in before if p in after and after[p] != before[p]]
    problems += [f"removed: {p}" for p in before if p not in after]
    problems += [f"new: {p}" for p in after if p not in before and not p.startswith(tuple(allowed_new))]
    return problems


def write_earlier_run(save_dir: Path, variant: str = "resnet18") -> Path:
    """The outputs a finished run leaves (hand-written stand-ins with the real names and shapes):
    a failing command must leave every one of them byte-identical."""
    out = save_dir / variant
    files = {
        out / "model.pt": b"stand-in for the weights of an earlier run " * 200,
        out / "checkpoints" / "last.pt": b"stand-in checkpoint " * 100,
        out / "best_params.json": json.dumps({"variant": variant, "params": {"lr": 0.01}, "best_value": 0.5}),
        out / "class_map.json": json.dumps(["__background__", "red", "blue"]),
        out / "metrics.json": json.dumps({"status": "complete", "best_score": 0.5, "history": []}),
        out / "manifest.json": json.dumps({"variant": variant, "split_hash": "0123abcd"}),
        out / "eval" / "files" / "metrics.json": json.dumps({"map": 0.5}),
        out / "eval" / "files_metrics.json": json.dumps({"metrics": {"map": 0.5}}),
        save_dir / "splits" / "0123abcd.json": json.dumps({"format": "obdb-split", "assignment": {}}),
        save_dir / "summary.json": json.dumps({"variants": [{"variant": variant}]}),
        save_dir / "summary.md": "| variant |\n| resnet18 |\n",
        save_dir / "optuna.db": b"SQLite format 3\x00 stand-in",
        save_dir / "runs" / "tiny" / variant / "final" / "events.out.tfevents.1": b"\x00" * 64,
        save_dir / "db_export" / "tasks.json": '{"name":"earlier"}\n',
        save_dir / "annotate_out" / "reports" / "20240101T000000.000000Z-folder.json": json.dumps({"mode": "folder"}),
    }
    for path, content in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    return save_dir


# --------------------------------------------------------------------------- damaged inputs
def png_header_only(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR claiming ``width`` x ``height`` with almost no pixel data:
    what a decompression bomb looks like to a reader before it decodes anything."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I4s", len(body), kind) + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + \
        chunk(b"IEND", b"")


DAMAGE: dict[str, Callable[[Path], None]] = {
    "truncated": lambda p: p.write_bytes(p.read_bytes()[:200]),
    "zero_bytes": lambda p: p.write_bytes(b""),
    "text_named_png": lambda p: p.write_text("this is a text file with an image's name\n"),
    "huge_header": lambda p: p.write_bytes(png_header_only(100_000, 100_000)),
}


# --------------------------------------------------------------------------- model files
class Payload:
    """Unpickling this calls ``open(marker, "w")``: the file appears if a loader runs pickled code."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.marker), "w"))


def write_model_files(folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """A good tiny model file (random-init MobileNetV3-small FCOS for the tiny data's classes) and
    bad ones: another backbone's weights under its header, pickles with a payload (torch's zip
    format and a raw pickle), a truncated copy, JSON, a bare state_dict. Also returns the files
    each payload would create if it ran."""
    import torch

    from obdb.models import ModelSpec, build_detector, save_model
    from obdb.records import ClassMap

    folder.mkdir(parents=True, exist_ok=True)
    classes = ClassMap(("red", "blue"))
    spec = ModelSpec("mobilenet_v3_small", "fcos", num_classes=classes.num_classes, min_size=64, max_size=96)
    model, spec = build_detector(spec, weights_dir=folder / "none")
    models = {kind: folder / f"{kind}.pt" for kind in
              ("good", "wrong_architecture", "pickle_payload", "raw_pickle_payload", "truncated", "json",
               "raw_state_dict")}
    save_model(models["good"], model, spec, classes)
    other, _ = build_detector(ModelSpec("mobilenet_v3_large", "fcos", num_classes=3, min_size=64, max_size=96),
                              weights_dir=folder / "none")
    payload = torch.load(models["good"], weights_only=True)
    torch.save({**payload, "state_dict": other.state_dict()}, models["wrong_architecture"])
    markers = {kind: folder / f"{kind}-was-executed" for kind in ("pickle_payload", "raw_pickle_payload")}
    torch.save({"format": "obdb-model", "payload": Payload(markers["pickle_payload"])}, models["pickle_payload"])
    models["raw_pickle_payload"].write_bytes(pickle.dumps(Payload(markers["raw_pickle_payload"])))
    models["truncated"].write_bytes(models["good"].read_bytes()[:100_000])
    models["json"].write_text(json.dumps({"format": "obdb-model", "header": {}, "state_dict": {}}))
    torch.save(model.state_dict(), models["raw_state_dict"])
    return models, markers
