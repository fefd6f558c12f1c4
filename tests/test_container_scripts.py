"""The shell scripts around the containers, run for real without a Docker engine: run_training.sh
against a stand-in ``docker`` that logs its calls (relative paths, leftover and interrupted worker
containers), dashboards.sh on a busy port, gpu_check.sh without CUDA. The whole container path
(scripts/check_image.sh) runs only where an engine answers and ``OBDB_DOCKER_TESTS=1`` asks for it
(marker ``docker``): it builds a 6.5 GB image and trains, so CI leaves it out."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

FAKE_DOCKER = """#!/usr/bin/env bash
# stand-in docker: logs every call; container states from $FAKE/state-<name>; docker wait sleeps
echo "$*" >> "$FAKE/calls"
case "$1" in
  compose)
    [ "$2" = version ] && exit 0
    for arg in "$@"; do [ "$arg" = "-d" ] && detached=1; done
    if [ "${detached:-0}" = 1 ] && [[ " $* " == *" run "* ]]; then
      name="$(sed -n 's/.* --name \\([^ ]*\\).*/\\1/p' <<< "$*")"; echo running > "$FAKE/state-$name"
    fi
    exit 0 ;;
  container)  # container inspect -f FORMAT NAME
    [ -f "$FAKE/state-${!#}" ] || exit 1
    cat "$FAKE/state-${!#}" ;;
  wait) [ "${FAKE_WAIT:-0}" = 0 ] || exec sleep "$FAKE_WAIT"; echo 0 ;;  # exec: one process, as docker is
  rm) shift; [ "$1" = -f ] && shift; for name in "$@"; do rm -f "$FAKE/state-$name"; done ;;
  stop) : ;;
esac
"""


@pytest.fixture()
def fake_docker(tmp_path: Path) -> dict[str, str]:
    """Environment with the stand-in docker first on PATH, and a checkout-like work folder."""
    fake = tmp_path / "fake"
    (fake / "bin").mkdir(parents=True)
    (fake / "bin" / "docker").write_text(FAKE_DOCKER)
    (fake / "bin" / "docker").chmod(0o755)
    (fake / "calls").touch()
    for folder in ("project/data", "project/conf", "elsewhere"):
        (tmp_path / folder).mkdir(parents=True)
    shutil.copy(ROOT / "settings" / "demo.json", tmp_path / "project" / "conf" / "demo.json")
    (tmp_path / "project" / "obdb.env").write_text("POSTGRES_PASSWORD=x\nMONGO_PASSWORD=y\n"
                                                    "COMPOSE_PROJECT_NAME=obdb-test\n")
    return {**os.environ, "PATH": f"{fake / 'bin'}:{os.environ['PATH']}", "FAKE": str(fake)}


def run_training(env: dict[str, str], cwd: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(ROOT / "scripts" / "run_training.sh"), *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=timeout)


RELATIVE = ("-f", "conf/demo.json", "--data", "data", "--train", "out/train", "--weights", "out/weights",
            "--env-file", "obdb.env", "--cpu")


def test_help_prints_usage_not_code() -> None:
    for script in ("run_training.sh", "build_training.sh", "dashboards.sh", "check_image.sh", "gpu_check.sh",
                   "compose.sh"):
        result = subprocess.run(["bash", str(ROOT / "scripts" / script), "--help"], capture_output=True, text=True,
                                timeout=30)
        assert result.returncode == 0, (script, result.stderr)
        text = result.stdout
        assert "bash scripts/" + script in text, script
        for code in ("set -euo", "cd \"$(dirname", "while [ $# -gt 0 ]", "#!/usr/bin/env", "\n# "):
            assert code not in text, (script, code)


def test_relative_paths_are_taken_from_the_callers_folder(fake_docker: dict[str, str], tmp_path: Path) -> None:
    project = tmp_path / "project"
    dry = run_training(fake_docker, project, *RELATIVE, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert f"/settings={project / 'conf'} /data={project / 'data'} /train={project / 'out' / 'train'}" in dry.stderr
    assert f"/weights={project / 'out' / 'weights'}; env file {project / 'obdb.env'}" in dry.stderr
    assert "run --rm" in dry.stdout and "obdb run -f /settings/demo.json" in dry.stdout

    real = run_training(fake_docker, project, *RELATIVE)
    assert real.returncode == 0, real.stderr
    assert (project / "out" / "train").is_dir() and (project / "out" / "weights").is_dir()
    calls = (tmp_path / "fake" / "calls").read_text()
    assert f"--env-file {project / 'obdb.env'}" in calls and "-p obdb-test" in calls
    # not found from the caller's folder: the error names the path it looked at
    missing = run_training(fake_docker, tmp_path / "elsewhere", *RELATIVE)
    assert missing.returncode == 2 and str(tmp_path / "elsewhere" / "conf" / "demo.json") in missing.stderr


def test_leftover_worker_containers_are_removed_or_refused(fake_docker: dict[str, str], tmp_path: Path) -> None:
    project, fake = tmp_path / "project", tmp_path / "fake"
    (fake / "state-obdb-test-worker-0").write_text("exited\n")  # left by a killed run
    first = run_training(fake_docker, project, *RELATIVE, "--workers", "2")
    assert first.returncode == 0, first.stderr
    calls = (fake / "calls").read_text().splitlines()
    removed = calls.index("rm obdb-test-worker-0")
    assert removed < next(i for i, c in enumerate(calls) if "--name obdb-test-worker-0" in c)
    assert "obdb-test-worker-0 exited with 0" in first.stdout and "obdb-test-worker-1 exited with 0" in first.stdout
    assert not list(fake.glob("state-*"))  # each finished worker removed after its exit code was read

    again = run_training(fake_docker, project, *RELATIVE, "--workers", "2")  # same names: no "already in use"
    assert again.returncode == 0, again.stderr

    (fake / "state-obdb-test-worker-1").write_text("running\n")
    busy = run_training(fake_docker, project, *RELATIVE, "--workers", "2")
    assert busy.returncode == 2 and "obdb-test-worker-1 is still running" in busy.stderr
    assert "docker stop obdb-test-worker-1" in busy.stderr


def test_interrupt_while_waiting_stops_and_removes_the_workers(fake_docker: dict[str, str], tmp_path: Path) -> None:
    project, fake = tmp_path / "project", tmp_path / "fake"
    # SIGINT at its default, as in a terminal: a suite started in the background (`cmd &` without job
    # control) inherits it ignored, and a shell cannot trap a signal ignored on entry
    process = subprocess.Popen(["bash", str(ROOT / "scripts" / "run_training.sh"), *RELATIVE, "--workers", "2"],
                               cwd=project, env={**fake_docker, "FAKE_WAIT": "60"}, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 30
    while "wait obdb-test-worker-0" not in (fake / "calls").read_text() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(0.3)
    started = time.time()
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=30)
    assert time.time() - started < 10  # at once, not after docker wait returns
    assert process.returncode == 130, err
    calls = (fake / "calls").read_text()
    assert "stop --time 120 obdb-test-worker-0 obdb-test-worker-1" in calls
    assert "rm -f obdb-test-worker-0 obdb-test-worker-1" in calls
    assert not list(fake.glob("state-*"))


def test_dashboards_refuse_a_busy_port_and_name_its_owner() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with socket.socket() as other:
            other.bind(("127.0.0.1", 0))
            free = other.getsockname()[1]  # bound, not listening: free for the check
        for option, args in (("--optuna-port", ["--optuna-port", str(port), "--tensorboard-port", str(free)]),
                             ("--tensorboard-port", ["--optuna-port", str(free), "--tensorboard-port", str(port)])):
            result = subprocess.run(["bash", "scripts/dashboards.sh", *args], cwd=ROOT, capture_output=True,
                                    text=True, timeout=30,
                                    env={**os.environ, "VENV": str(Path(sys.executable).parent.parent)})
            assert result.returncode == 2, result.stdout + result.stderr
            assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
            assert option in result.stderr
            if shutil.which("ss") or shutil.which("lsof"):
                assert f"(pid {os.getpid()})" in result.stderr  # this test's process holds it
            assert "http://" not in result.stdout  # no URL of a server that is not running


def test_gpu_check_without_cuda_says_so_and_fails(tmp_path: Path) -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable}
    result = subprocess.run(["bash", "scripts/gpu_check.sh", "--out", str(tmp_path / "gpu")], cwd=ROOT, env=env,
                            capture_output=True, text=True, timeout=180)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "no GPU to check" in result.stderr and "sees no CUDA device" in result.stderr
    assert not (tmp_path / "gpu" / "summary.json").exists()
    bad = subprocess.run(["bash", "scripts/gpu_check.sh", "--budget", "5"], cwd=ROOT, capture_output=True,
                         text=True, timeout=30)
    assert bad.returncode == 2 and "--budget" in bad.stderr


def engine_answers() -> bool:
    docker = shutil.which("docker")
    return bool(docker) and subprocess.run([docker, "info"], capture_output=True, timeout=30).returncode == 0


@pytest.mark.docker
@pytest.mark.timeout(3600)  # about 30 min on a loaded 2-core machine (docs/containers.md)
@pytest.mark.skipif(os.environ.get("OBDB_DOCKER_TESTS") != "1",
                    reason="builds the 6.5 GB image and trains in containers: set OBDB_DOCKER_TESTS=1 to run it")
def test_check_image_passes(tmp_path: Path) -> None:
    """The whole container path (scripts/check_image.sh). Options for the build come from
    $OBDB_CHECK_IMAGE_ARGS, e.g. "--base my-debian:bookworm --ca-bundle /path/ca.pem -- --network host"."""
    if not engine_answers():
        pytest.skip("no Docker engine answers (docker info)")
    args = os.environ.get("OBDB_CHECK_IMAGE_ARGS", "").split()
    result = subprocess.run(["bash", "scripts/check_image.sh", "--out", str(tmp_path / "check"), *args], cwd=ROOT,
                            capture_output=True, text=True, timeout=3600)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert "| FAIL" not in result.stdout
    for shot in ("optuna.png", "tensorboard.png"):
        assert (tmp_path / "check" / "screenshots" / shot).stat().st_size > 20_000
