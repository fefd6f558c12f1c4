"""``obdb db export|import``: snapshots of the annotations database as mongoexport-compatible files.

``obdb db export --out DIR [--tasks NAME ...]`` writes ``tasks.json``, ``meta.json`` and
``annotation_data.json`` (JSON lines, extended JSON); ``obdb db import DIR|FILE... [--drop]``
loads such files, including the original system's mongoexport files. The server comes from the
settings file's ``data.mongo`` block with ``-f``, else from the environment (``MONGODB_URI``, or
``MONGODB_HOST``/``MONGODB_PORT``/``MONGODB_USERNAME`` with ``MONGODB_PASSWORD[_FILE]``).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from .common import EXIT_OK, add_bool, add_common, add_task_names, guarded, setup_logging


def build_parser(prog: str = "obdb db") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Export or import the MongoDB annotations "
                                     "database (tasks, meta, annotation_data) as mongoexport-compatible JSON lines.")
    sub = parser.add_subparsers(dest="action", required=True, metavar="{export,import}")
    export = sub.add_parser("export", help="write a snapshot of the database to a folder")
    export.add_argument("-o", "--out", required=True, type=Path, metavar="DIR",
                        help="folder for tasks.json, meta.json, annotation_data.json")
    add_task_names(export)
    imp = sub.add_parser("import", help="load snapshot files (ours or mongoexport's) into the database")
    imp.add_argument("paths", nargs="+", type=Path, metavar="DIR|FILE",
                     help="a snapshot folder or files named tasks.json, meta.json, annotation_data.json")
    add_bool(imp, "--drop", "empty the imported collections first")
    for command in (export, imp):
        command.add_argument("-f", "--settings", help="settings JSON file whose data.mongo block says where "
                             "the server is (default: MONGODB_URI / MONGODB_HOST from the environment)")
        command.add_argument("--database", help="database name (default: data.mongo.database, 'annotations')")
        add_common(command)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "obdb db") -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.log_level)

    def body() -> int:
        from ..mongo.connection import MongoConfigError, MongoUnavailable, connect
        from ..mongo.snapshot import SnapshotError, export_snapshot, import_snapshot, snapshot_files
        from ..settings import load_settings
        from ..settings.schema import MongoSettings

        mongo = load_settings(args.settings).data.mongo if args.settings else MongoSettings()
        if args.database:
            mongo = mongo.model_copy(update={"database": args.database})
        try:
            files = snapshot_files(args.paths) if args.action == "import" else {}
            db = connect(mongo)
            try:
                if args.action == "export":
                    counts = export_snapshot(db, args.out, args.task_names or None, progress=args.progress)
                    where = args.out
                else:
                    counts = import_snapshot(db, files, drop=args.drop, progress=args.progress)
                    where = db.name
            finally:
                db.client.close()
        except (MongoUnavailable, MongoConfigError, SnapshotError) as err:
            print(f"error: {err}", file=sys.stderr)
            return err.exit_code  # the one table (obdb.errors): 3 unreachable after retries, 2 otherwise
        done = "exported to" if args.action == "export" else "imported into database"
        print(f"{done} {where}: " + ", ".join(f"{name} {n}" for name, n in counts.items()))
        return EXIT_OK

    return guarded(body)
