"""Security: no code runs data as code; known secrets appear in no output, file or exception;
MongoDB task names are matched literally. (Compose: tests/test_docker_files.py.)

The secrets test gives every command all secrets at once (MongoDB password, URI, password file,
CVAT password, token and password file, the PostgreSQL URL of the Optuna storage) as distinctive
random strings, runs commands that fail and that succeed against a MongoDB with authentication on
and the fake CVAT server, and then searches stdout, stderr and every byte of every output file.
"""
from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import traceback
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from helpers.reliability import AUTO_ANNOTATE, OBDB, QUIET, ROOT, RUNNER, Outcome, run, run_parallel
from helpers.secret_leaks import AuthMongo, Secrets, files_with, leaks
from helpers.servers import free_port
from helpers.tiny_data import make_tiny_dataset, tiny_settings

# --------------------------------------------------------------------------- code that runs data as code
# ruff's bandit rules (S) and banned APIs (TID251, pyproject.toml) catch these; .ci/run fails on them.
RUFF_SAMPLE = {
    "import pickle": {"TID251"}, "import marshal": {"TID251"}, "import shelve": {"TID251"},
    "import dill": {"TID251"}, "import cloudpickle": {"TID251"}, "import joblib": {"TID251"},
    "import torch.distributed as dist": set(), "import yaml": set(), "import subprocess, os": set(),
    "pickle.loads(data)": {"S301"}, "marshal.loads(data)": {"S302"}, "shelve.open(path)": {"S301"},
    "dill.loads(data)": {"S301"}, "eval('1 + 1')": {"S307"}, "exec(code)": {"S102"}, "model.eval()": set(),
    "yaml.load(text)": {"S506"}, "yaml.load(text, Loader=yaml.SafeLoader)": set(),
    "yaml.unsafe_load(text)": {"TID251"}, "yaml.full_load(text)": {"TID251"},
    "subprocess.run('ls -l', shell=True)": {"S602"}, "os.system('ls')": {"S605"}, "os.popen('ls')": {"S605"},
    "subprocess.getoutput('ls')": {"S605"}, "dist.all_gather_object(out, obj)": {"TID251"},
    "dist.broadcast_object_list(box)": {"TID251"},
}


def test_ruff_catches_every_way_to_run_data_as_code() -> None:
    lines = ["data = path = code = text = out = obj = box = model = None", *RUFF_SAMPLE]
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--output-format", "json", "--stdin-filename",
                           "code/obdb/sample.py", "-"], input="\n".join(lines) + "\n", capture_output=True,
                          text=True, cwd=ROOT)
    found: dict[str, set[str]] = {line: set() for line in RUFF_SAMPLE}
    for finding in json.loads(done.stdout):
        if finding["code"].startswith(("S", "TID")) and finding["code"] != "S607":  # S607: "ls" from PATH
            found[lines[finding["location"]["row"] - 1]].add(finding["code"])
    assert found == RUFF_SAMPLE, done.stderr


def unsafe_calls(text: str) -> list[int]:
    """Lines of what ruff has no rule for: ``torch.load`` without ``weights_only=True``,
    ``np.load(allow_pickle=True)``, ``compile()`` and ``__import__()``."""
    lines = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.Call):
            func, kw = ast.unparse(node.func), {k.arg: ast.unparse(k.value) for k in node.keywords}
            if (func == "torch.load" and kw.get("weights_only") != "True") or kw.get("allow_pickle") == "True" \
                    or func in {"compile", "__import__"}:
                lines.append(node.lineno)
    return lines


SHELL_EVAL = re.compile(r"(^|[;&|(`]|\bthen|\bdo)\s*eval\b")


def test_no_code_runs_data_as_code_where_ruff_has_no_rule() -> None:
    sample = ('"""torch.load(path) only in prose."""\nmodel.eval()\ntorch.load(p)\ntorch.load(p, weights_only=False)\n'
              'torch.load(p, weights_only=True)\nnp.load(p, allow_pickle=True)\nnp.load(p)\ncompile(s, "f", "exec")\n')
    assert unsafe_calls(sample) == [3, 4, 6, 8]
    assert [bool(SHELL_EVAL.search(line)) for line in ('# eval here', 'x=1; eval "$cmd"', "evaluate")] == \
           [False, True, False]
    files = [path for folder in ("code", "scripts", "docker") for path in sorted((ROOT / folder).rglob("*"))]
    found = [f"{path.relative_to(ROOT)}:{line}" for path in files if path.suffix == ".py"
             for line in unsafe_calls(path.read_text(encoding="utf-8"))]
    found += [f"{path.relative_to(ROOT)}:{number}" for path in files if path.suffix == ".sh"
              for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
              if not line.lstrip().startswith("#") and SHELL_EVAL.search(line)]
    assert found == [], "unsafe loading or code execution:\n" + "\n".join(found)


# --------------------------------------------------------------------------- known secrets
@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The secrets, a MongoDB with auth and two users, the fake CVAT server, data and settings."""
    from helpers.fake_cvat.server import FakeCvatServer

    root = tmp_path_factory.mktemp("secrets")
    values = Secrets()
    mongo = AuthMongo(root / "mongo", values.mongo_password,
                      extra_users={"reader": values.mongo_file_password})
    cvat = FakeCvatServer(password=values.cvat_password, token=values.cvat_token).start()
    for name in ("secret sync task", "secret status task"):
        cvat.add_task(name, ["red"], [("1.png", 8, 8)], status="completed",
                      shapes=[{"type": "rectangle", "frame": 0, "label": "red", "points": [1, 1, 5, 5]}])
    (root / "mongo_password").write_text(values.mongo_file_password + "\n")
    (root / "cvat_password").write_text(values.cvat_password + "\n")
    data = make_tiny_dataset(root / "data", videos=2, frames=2)
    settings = tiny_settings(data, root)
    settings["data"]["mongo"] = {"timeout_s": 1.0, "retries": 0}  # where: the environment, as in the container
    settings["resnet18"]["run_hpo"] = 1
    (root / "settings.json").write_text(json.dumps(settings))
    everything = {  # every secret obdb may be handed, at once: none may show anywhere
        "MONGODB_URI": mongo.uri(values.mongo_password), "MONGODB_PASSWORD": values.mongo_wrong_password,
        "MONGODB_PASSWORD_FILE": str(root / "mongo_password"), "CVAT_URL": cvat.url,
        "CVAT_USERNAME": cvat.username, "CVAT_PASSWORD": values.cvat_password,
        "CVAT_PASSWORD_FILE": str(root / "cvat_password"), "CVAT_ACCESS_TOKEN": values.cvat_token,
        "OBDB_OPTUNA_STORAGE": f"postgresql://optuna:{values.postgres_password}@127.0.0.1:1/optuna",
    }
    try:
        yield SimpleNamespace(root=root, secrets=values, mongo=mongo, cvat=cvat, settings=root / "settings.json",
                              env=everything)
    finally:
        cvat.stop()
        mongo.stop()


def assert_no_leak(world: Any, outcomes: list[Outcome], folders: list[Path]) -> None:
    values = world.secrets.all()
    for out in outcomes:
        assert leaks([out.stdout, out.stderr], values) == [], out.text
    assert files_with(folders, values) == []


def env(world: Any, **changes: str | None) -> dict[str, str]:
    chosen = {**world.env, **changes}
    return {k: v for k, v in chosen.items() if v is not None}


def test_runner_outputs_carry_no_secret(world: Any) -> None:
    settings = str(world.settings)
    failed, checked, split = run_parallel([
        lambda: run([*RUNNER, "-f", settings, *QUIET], env=env(world)),  # storage unreachable on purpose
        lambda: run([*RUNNER, "-f", settings, "--check", *QUIET, "--log-level", "DEBUG"], env=env(world)),
        lambda: run([*OBDB, "split", "-f", settings, *QUIET, "--log-level", "DEBUG"], env=env(world)),
    ])
    assert failed.code != 0 and '"127.0.0.1", port 1 failed' in failed.stderr, failed.text  # it tried the storage
    # --check makes the run's checks, the storage one included (issue 14), and fails as the run does
    assert checked.code == 2 and '"127.0.0.1", port 1 failed' in checked.stderr, checked.text
    assert split.code == 0, split.text
    assert_no_leak(world, [failed, checked, split], [world.root / "train"])


def test_sync_with_wrong_then_right_credentials(world: Any) -> None:
    values, cvat = world.secrets, world.cvat
    wrong = run([*OBDB, "sync", "--log-level", "DEBUG"], env=env(world, CVAT_PASSWORD=values.cvat_wrong_password,
                                                                  CVAT_ACCESS_TOKEN=None, CVAT_PASSWORD_FILE=None))
    assert wrong.code != 0 and f"refused the credentials of user {cvat.username}" in wrong.stderr, wrong.text
    right = run([*OBDB, "sync", "--log-level", "DEBUG"], env=env(world, CVAT_ACCESS_TOKEN=None))
    assert right.code == 0 and "2 added" in right.stdout, right.text
    # token login, and the database login from a user name plus a password file
    again = run([*OBDB, "sync", "--log-level", "DEBUG"], env=env(
        world, CVAT_PASSWORD=None, CVAT_PASSWORD_FILE=None, MONGODB_URI=None, MONGODB_PASSWORD=None,
        MONGODB_HOST="127.0.0.1", MONGODB_PORT=str(world.mongo.port), MONGODB_USERNAME="reader"))
    assert again.code == 0 and "2 unchanged" in again.stdout, again.text
    assert_no_leak(world, [wrong, right, again], [])


def test_annotate_status_with_right_and_wrong_secrets(world: Any) -> None:
    values = world.secrets
    out = world.root / "annotate_out"
    args = [*AUTO_ANNOTATE, "status", "--name", "secret status task", "--state", "completed", "--out", str(out),
            *QUIET, "--log-level", "DEBUG"]
    outcomes = run_parallel([
        lambda: run(args, env=env(world, CVAT_ACCESS_TOKEN=None)),
        lambda: run(args, env=env(world, CVAT_ACCESS_TOKEN=None, CVAT_PASSWORD=values.cvat_wrong_password,
                                  CVAT_PASSWORD_FILE=None)),
        lambda: run(args, env=env(world, CVAT_ACCESS_TOKEN=values.cvat_wrong_token)),
        lambda: run(args, env=env(world, CVAT_PASSWORD=None)),
    ])
    assert [o.code == 0 for o in outcomes] == [True, False, False, True], [o.text for o in outcomes]
    assert "refused the credentials" in outcomes[1].stderr and "refused" in outcomes[2].stderr
    assert_no_leak(world, outcomes, [out])


def test_db_export_reachable_unreachable_and_refused(world: Any) -> None:
    values = world.secrets
    nowhere = f"mongodb://obdb:{values.mongo_uri_password}@127.0.0.1:{free_port()}/?authSource=admin"
    export = [*OBDB, "db", "export", "-f", str(world.settings), *QUIET, "--log-level", "DEBUG", "--out"]
    unreachable, refused, exported = run_parallel([
        lambda: run([*export, str(world.root / "export_unreachable")], env=env(world, MONGODB_URI=nowhere)),
        lambda: run([*export, str(world.root / "export_refused")],
                    env=env(world, MONGODB_URI=world.mongo.uri(values.mongo_wrong_password))),
        lambda: run([*export, str(world.root / "export")], env=env(world)),
    ])
    assert unreachable.code == 3 and "is not reachable" in unreachable.stderr, unreachable.text
    assert refused.code == 2 and "rejected the login" in refused.stderr, refused.text
    assert exported.code == 0 and (world.root / "export" / "tasks.json").is_file(), exported.text
    assert not (world.root / "export_unreachable").exists() and not (world.root / "export_refused").exists()
    assert_no_leak(world, [unreachable, refused, exported], [world.root / "export"])


def exception_text(error: BaseException) -> str:
    return "".join(traceback.format_exception(error)) + repr(error) + str(error)


def test_exception_messages_carry_no_secret(world: Any) -> None:
    """What a caller that logs or re-raises the errors would show, chained causes included."""
    from obdb.cvat.connection import CvatCredentials, CvatError, connect
    from obdb.hpo.storage import open_storage
    from obdb.mongo.connection import MongoConfigError, MongoUnavailable
    from obdb.mongo.connection import connect as connect_mongo
    from obdb.settings.schema import MongoSettings

    values, errors = world.secrets, []
    quick = MongoSettings(timeout_s=0.5, retries=0)
    cases = [
        (MongoUnavailable, lambda: connect_mongo(quick, env={
            "MONGODB_URI": f"mongodb://u:{values.mongo_uri_password}@127.0.0.1:{free_port()}/"})),
        (MongoConfigError, lambda: connect_mongo(  # a rejected login: exit 2
            quick, env={"MONGODB_URI": world.mongo.uri(values.mongo_wrong_password)})),
        (MongoConfigError, lambda: connect_mongo(MongoSettings(uri=world.mongo.uri(values.mongo_password)), env={})),
        (CvatError, lambda: connect(CvatCredentials(world.cvat.url, "annotator", values.cvat_wrong_password),
                                    retries=0)),
        (CvatError, lambda: connect(CvatCredentials(world.cvat.url, token=values.cvat_wrong_token), retries=0)),
        (Exception, lambda: open_storage(world.env["OBDB_OPTUNA_STORAGE"]).get_all_studies()),
    ]
    for kind, call in cases:
        with pytest.raises(kind) as info:
            call()
        errors.append(exception_text(info.value))
    creds = CvatCredentials(world.cvat.url, "annotator", values.cvat_password, values.cvat_token)
    assert leaks([*errors, repr(creds), str(creds)], values.all()) == [], errors


# --------------------------------------------------------------------------- literal task names
# tasks whose names are regular expressions or look like query operators, next to the tasks such a
# name would match if it were read as a pattern
STORED = ["gt.*", "gtX", "gt_val", "a|b", "a", "b", "x$", "x", "(", "$ne", '{"$ne": null}']
ABSENT = [".*", "^gt", "[ab]", "gt", "$regex", '{"$gt": ""}']


@pytest.fixture()
def odd_tasks(mongo_db: Any, tmp_path: Path) -> Path:
    """One task per name in STORED (one image each from the tiny data), as the original system's
    mongoexport files imported into a fresh database; returns the data folder."""
    from helpers.original_export import write_original_export
    from obdb.mongo.snapshot import import_snapshot, snapshot_files
    from obdb.sources.cvat_xml import CvatBox, CvatImage, write_cvat_xml

    data = make_tiny_dataset(tmp_path / "data", videos=1, frames=len(STORED))
    xml = [write_cvat_xml(tmp_path / "xml" / f"{i:02d}.xml", name, ["red"],
                          [CvatImage(0, f"video00_frame{i:04d}.png", 96, 96, [CvatBox("red", 1, 1, 20, 20)])])
           for i, name in enumerate(STORED)]
    import_snapshot(mongo_db, snapshot_files([write_original_export(xml, tmp_path / "export")]), progress=False)
    return data


def test_task_names_are_matched_literally(odd_tasks: Path, mongo_db: Any, mongo_server: str, tmp_path: Path) -> None:
    from obdb.mongo.layout import TaskNotFound, delete_task, find_tasks
    from obdb.prepare import load_annotations
    from obdb.settings import parse_settings
    from obdb.sources.contract import SourceError

    def source_tasks(name: str) -> set[str]:
        raw = tiny_settings(odd_tasks, tmp_path, annotations_list=[name])
        raw["data"] = {"source": "mongo", "images_dir": str(odd_tasks / "images"),
                       "mongo": {"uri": mongo_server, "database": mongo_db.name, "timeout_s": 5, "retries": 0}}
        return {r.task for r in load_annotations(parse_settings(raw), progress=False).records}

    for name in STORED:
        assert [d["name"] for d in find_tasks(mongo_db, [name])] == [name]
        assert source_tasks(name) == {name}
    for name in ABSENT:
        with pytest.raises(TaskNotFound):
            find_tasks(mongo_db, [name])
        with pytest.raises(SourceError, match="not found"):
            source_tasks(name)

    # the command line: obdb db export --tasks NAME takes exactly that task; a name that is only a
    # pattern for stored ones is refused as unknown and writes nothing
    names = STORED + ABSENT
    export = [*OBDB, "db", "export", "--database", mongo_db.name, *QUIET, "--out"]
    outcomes = run_parallel(lambda n=n, i=i: run([*export, str(tmp_path / f"out{i}"), "--task", n],
                                                 env={"MONGODB_URI": mongo_server}) for i, n in enumerate(names))
    for index, (name, out) in enumerate(zip(names, outcomes)):
        if name in STORED:
            assert out.code == 0, out.text
            exported = (tmp_path / f"out{index}" / "tasks.json").read_text().splitlines()
            assert [json.loads(line)["name"] for line in exported] == [name], name
        else:
            assert out.code == 2 and f"no task named {name!r}" in out.text, out.text
            assert not (tmp_path / f"out{index}").exists(), name

    assert delete_task(mongo_db, "gt.*") and not delete_task(mongo_db, ".*")
    assert sorted(mongo_db.tasks.distinct("name")) == sorted(n for n in STORED if n != "gt.*")
    assert mongo_db.annotation_data.count_documents({}) == len(STORED) - 1
