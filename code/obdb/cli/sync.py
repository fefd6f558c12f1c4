"""``obdb sync``: pull CVAT tasks into the MongoDB annotations database (see ``obdb.sync``).

CVAT credentials come from the environment (``CVAT_URL``, ``CVAT_USERNAME`` with ``CVAT_PASSWORD``
or ``CVAT_PASSWORD_FILE``, or ``CVAT_ACCESS_TOKEN``). The database is the settings file's
``data.mongo`` block with ``-f`` (which also gives ``data.cvat.url``), else the environment
(``MONGODB_URI``, or ``MONGODB_HOST``/``MONGODB_PORT``/``MONGODB_USERNAME`` with
``MONGODB_PASSWORD[_FILE]``).
"""
from __future__ import annotations

import argparse
import os
import sys
from typing import Sequence

from .common import EXIT_OK, add_bool, add_common, add_task_names, guarded, setup_logging

STATUS_CHOICES = ("completed", "validation", "annotation", "any")


def build_parser(prog: str = "obdb sync") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description="Copy CVAT tasks (default: completed ones) into MongoDB: new and changed tasks "
        "are downloaded, unchanged ones skipped, tasks deleted in CVAT removed (only those sync wrote).")
    parser.add_argument("-f", "--settings", help="settings JSON file for data.mongo and data.cvat "
                        "(default: the MONGODB_* and CVAT_* environment)")
    add_task_names(parser)
    parser.add_argument("--pattern", metavar="GLOB", help="only tasks whose name matches this glob, e.g. 'gt_val_*'")
    parser.add_argument("--status", action="append", choices=STATUS_CHOICES,
                        help="CVAT task status to copy; repeatable (default: completed)")
    add_bool(parser, "--dry-run", "show what would change, change nothing")
    add_bool(parser, "--full", "re-read every selected task even if its updated_date did not change")
    add_bool(parser, "--adopt", "also replace tasks of the same name that were stored by hand")
    parser.add_argument("--database", help="database name (default: data.mongo.database, 'annotations')")
    add_bool(parser, "--allow-version-mismatch", "work with a CVAT server version obdb was not tested against")
    add_common(parser)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "obdb sync") -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.log_level)

    def body() -> int:
        from .. import sync
        from ..cvat import CvatCredentials, CvatError, connect
        from ..mongo.connection import MongoConfigError, MongoUnavailable
        from ..mongo.connection import connect as connect_mongo
        from ..mongo.connection import ensure_indexes
        from ..settings import load_settings
        from ..settings.schema import CvatSettings, MongoSettings

        settings = load_settings(args.settings) if args.settings else None
        mongo = settings.data.mongo if settings else MongoSettings()
        cvat_settings = settings.data.cvat if settings else CvatSettings()
        if args.database:
            mongo = mongo.model_copy(update={"database": args.database})
        try:
            db = connect_mongo(mongo)
            try:
                ensure_indexes(db)
                creds = CvatCredentials.from_env(os.environ, url=cvat_settings.url)
                allow = args.allow_version_mismatch or cvat_settings.allow_version_mismatch
                with connect(creds, allow_version_mismatch=allow, retries=cvat_settings.retries) as session:
                    plan = sync.plan_sync(session, db, names=args.task_names or None, pattern=args.pattern,
                                          statuses=args.status, full=args.full, adopt=args.adopt)
                    if args.dry_run:
                        print("\n".join(plan.lines() or ["  nothing to change"]))
                        print(f"dry run: would add {len(plan.add)}, update {len(plan.update)}, delete "
                              f"{len(plan.delete)}; {len(plan.unchanged)} unchanged, {len(plan.foreign)} left alone; "
                              f"{session.requests} CVAT requests")
                        return EXIT_OK
                    summary = sync.apply_sync(session, db, plan, progress=args.progress)
            finally:
                db.client.close()
        except (MongoUnavailable, MongoConfigError, CvatError, sync.SyncError) as err:
            print(f"error: {err}", file=sys.stderr)
            return err.exit_code  # the one table (obdb.errors): 3 unreachable after retries, 2 otherwise
        print(f"sync into database {db.name}: {summary.line()}")
        return EXIT_OK

    return guarded(body)
