"""Read tasks for training: connect, find the tasks by exact name, read each one's committed write.

The one MongoDB read path of the ``mongo`` source (:mod:`obdb.sources.mongo` converts what it
returns). Reading never writes: no index, collection or database is created here, so pointing
``--check``, ``obdb split`` or a training run at a user's database leaves it as it was. Indexes
are made by ``obdb db import``, ``obdb sync`` and ``obdb db index``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

from pymongo.errors import PyMongoError
from tqdm.auto import tqdm

from obdb.errors import ServiceUnavailable
from obdb.mongo.connection import connect
from obdb.mongo.layout import TaskFrames, find_tasks, read_task_frames
from obdb.settings.schema import MongoSettings

logger = logging.getLogger(__name__)


class MongoReadFailed(ServiceUnavailable, RuntimeError):
    """The server went away or refused a query half-way through a read (the driver retried once)."""


@dataclass
class StoredTasks:
    """The tasks read from one database (``database`` names it in parse results)."""

    database: str
    tasks: list[TaskFrames]


def read_tasks(settings: MongoSettings, names: Sequence[str] | None, *, progress: bool = True) -> StoredTasks:
    """Tasks ``names`` (all tasks when None or empty), sorted by name as the local source orders its
    files, each read in two queries (:func:`~obdb.mongo.layout.read_task_frames`).

    Raises :class:`~obdb.mongo.connection.MongoUnavailable` / ``MongoConfigError`` (no server, bad
    settings), :class:`~obdb.mongo.layout.TaskNotFound` (every missing name, with what the database
    holds), :class:`~obdb.mongo.layout.TaskInterrupted` and :class:`MongoReadFailed`."""
    db = connect(settings)
    try:
        wanted = sorted(set(names or db.tasks.distinct("name")))
        docs = find_tasks(db, wanted)
        tasks = [read_task_frames(db, doc)
                 for doc in tqdm(docs, desc="reading MongoDB tasks", unit="task", disable=not progress)]
        return StoredTasks(db.name, tasks)
    except PyMongoError as err:
        hosts = ",".join(f"{host}:{port}" for host, port in db.client.topology_description.server_descriptions())
        raise MongoReadFailed(f"MongoDB at {hosts} failed while reading database {db.name!r}: "
                              f"{str(err).split(', Timeout:')[0]}. Rerun when the server answers again") from err
    finally:
        db.client.close()
