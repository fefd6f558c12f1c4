"""Run many entry-point commands in forked copies of one interpreter that has imported obdb once.

``python fork_server.py WORKERS < jobs.json > results.json``: ``jobs.json`` is a list of
``{"argv", "env", "stdout", "stderr", "timeout"}``; each job runs in its own child process (forked
from this one after the imports), with ``argv``'s script executed as ``__main__`` exactly as the
interpreter would run it, ``env`` as its whole environment and its output in the two files. The
result is the list of exit codes, in job order (-9: killed at its timeout).

Why: importing torch and torchvision costs each fresh interpreter ~5 s of CPU, which dominates a
suite of dozens of quick failures. Everything after the imports (argument parsing, logging set-up,
the command itself, the exit code) is the real entry point's code in a process of its own.
"""
from __future__ import annotations

import importlib
import json
import logging
import os
import runpy
import signal
import sys
import time
import traceback
from pathlib import Path

PRELOAD = ("obdb.pipeline", "obdb.scoring", "obdb.annotate.function", "obdb.annotate.modes", "obdb.cli.main",
           "obdb.cli.runner", "obdb.cli.test_model", "obdb.cli.annotate", "obdb.cli.lint", "obdb.cli.split",
           "obdb.cli.db", "obdb.cli.sync", "obdb.sources.local", "obdb.lint")


def preload() -> None:
    for name in PRELOAD:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - the job will import it again and report what is wrong
            pass


def child(job: dict) -> None:
    """Become the job's process: its environment, its output files, its script as ``__main__``."""
    os.environ.clear()
    os.environ.update(job["env"])
    for fd, name in ((1, job["stdout"]), (2, job["stderr"])):
        target = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    argv = job["argv"]
    script_at = 1 if Path(argv[0]).name.startswith("python") else 0
    sys.argv = list(argv[script_at:])
    code = 0
    try:
        runpy.run_path(sys.argv[0], run_name="__main__")
    except SystemExit as exit_info:
        if isinstance(exit_info.code, int) or exit_info.code is None:
            code = exit_info.code or 0
        else:
            print(exit_info.code, file=sys.stderr)
            code = 1
    except BaseException:  # noqa: BLE001 - what the interpreter does with an uncaught error
        traceback.print_exc()
        code = 1
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def main() -> None:
    workers = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    jobs = json.load(sys.stdin)
    preload()
    sys.stdout.flush()
    codes: list[int | None] = [None] * len(jobs)
    running: dict[int, tuple[int, float]] = {}  # pid -> (job index, deadline)
    queue = list(range(len(jobs)))
    while queue or running:
        while queue and len(running) < workers:
            index = queue.pop(0)
            pid = os.fork()
            if pid == 0:
                child(jobs[index])
            running[pid] = (index, time.monotonic() + jobs[index]["timeout"])
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid:
            index, _ = running.pop(pid)
            codes[index] = os.waitstatus_to_exitcode(status)
            continue
        for pid, (index, deadline) in list(running.items()):
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    json.dump(codes, sys.stdout)


if __name__ == "__main__":
    main()
