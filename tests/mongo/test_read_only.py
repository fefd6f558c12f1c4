"""Reading never writes: ``obdb run --check``, ``obdb split``, ``obdb lint`` and ``obdb sync --dry-run``
create no database, collection or index in the user's MongoDB and change no document."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from bson import json_util

from obdb.cli.main import main as obdb

from helpers.db_state import database_state
from helpers.original_export import original_documents
from helpers.tiny_data import make_tiny_dataset, tiny_settings


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_dataset(tmp_path_factory.mktemp("tiny"))


def settings_file(tiny: Path, out: Path, mongo: dict[str, Any]) -> Path:
    raw = tiny_settings(tiny, out)
    raw["data"] = {"source": "mongo", "images_dir": str(tiny / "images"), "mongo": mongo}
    path = out / "settings.json"
    path.write_text(json.dumps(raw))
    return path


def as_imported_by_hand(tiny: Path, db) -> None:
    """The original layout inserted as ``mongoimport`` would: no index but ``_id``'s."""
    for name, docs in original_documents(sorted((tiny / "annotations").glob("*.xml"))).items():
        db[name].insert_many([json_util.loads(json.dumps(doc)) for doc in docs])  # extended JSON → BSON


@pytest.mark.parametrize("command", [["run", "--check"], ["split"], ["lint"]])
def test_reading_commands_leave_the_database_identical(command, tiny, mongo_db, mongo_settings, tmp_path) -> None:
    as_imported_by_hand(tiny, mongo_db)
    client = mongo_db.client
    before = database_state(client, mongo_db.name)
    assert set(before["collections"]) == {"tasks", "meta", "annotation_data"}
    settings = settings_file(tiny, tmp_path, mongo_settings(mongo_db.name))
    assert obdb([command[0], "-f", str(settings), *command[1:], "--progress", "false"]) == 0
    assert database_state(client, mongo_db.name) == before


def test_reading_a_database_that_does_not_exist_does_not_create_it(tiny, mongo_db, mongo_settings, tmp_path,
                                                                   capsys) -> None:
    name = mongo_db.name  # the fixture's database: nothing has written to it, so it does not exist yet
    assert database_state(mongo_db.client, name) == {"exists": False}
    settings = settings_file(tiny, tmp_path, mongo_settings(name))
    obdb(["run", "-f", str(settings), "--check", "--progress", "false"])  # its exit code is --check's business
    assert obdb(["split", "-f", str(settings), "--progress", "false"]) == 2
    assert "no usable images" in capsys.readouterr().err
    assert database_state(mongo_db.client, name) == {"exists": False}
