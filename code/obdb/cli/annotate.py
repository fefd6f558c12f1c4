"""``auto_annotate.py`` / ``obdb annotate``: model predictions and ground truth into CVAT.

Subcommands (each has ``--help``): ``folder``, ``tasks``, ``upload-gt``, ``upload-xml``,
``missing``, ``status``, ``fix-review``. The server and credentials come from ``CVAT_URL``, ``CVAT_USERNAME``,
``CVAT_PASSWORD`` (or ``CVAT_PASSWORD_FILE``) or ``CVAT_ACCESS_TOKEN``; nothing secret is ever
an option. Every write-capable subcommand takes ``--dry-run`` (print the plan, write nothing)
and backs up a task's annotations under ``--out``/backups before changing it.
"""
from __future__ import annotations

import argparse
import os
from datetime import datetime, timezone
import sys
from pathlib import Path
from typing import Any, Sequence

from .common import (EXIT_OK, add_bool, add_common, add_task_names, guarded, setup_logging, whole_number,
                     without_downloads)

DEFAULT_OUT = "auto_annotate_out"
SAFETY = ("Without --replace no existing shape is deleted or changed; with --replace only auto shapes nobody "
          "has reviewed yet (source=auto, review=unreviewed) are replaced. Human shapes are never touched.")


def _common(parser: argparse.ArgumentParser, *, writes: bool = True) -> None:
    parser.add_argument("--url", help="CVAT server URL (default: $CVAT_URL)")
    add_bool(parser, "--allow-version-mismatch", "go on when the server's version is not one this tool was "
          "tested with")
    parser.add_argument("-o", "--out", type=Path, metavar="DIR",
                        default=Path(os.environ.get("OBDB_OUT") or DEFAULT_OUT),
                        help="output folder for backups and reports (default: $OBDB_OUT or ./auto_annotate_out)")
    if writes:
        add_bool(parser, "--dry-run", "print what would change per task and write nothing")
        parser.add_argument("--chunk-size", type=whole_number(1), default=2000,
                            help="shapes per upload request (default 2000)")
    add_common(parser)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {text}")
    return value


def _model(parser: argparse.ArgumentParser, threshold: float = 0.5) -> None:
    parser.add_argument("-m", "--model", required=True, type=Path, help="model.pt written by the runner")
    parser.add_argument("-t", "--threshold", type=_fraction, default=threshold,
                        help=f"minimum score of a prediction to add (default {threshold})")
    parser.add_argument("--batch-size", type=whole_number(1), default=4, help="images per inference batch (default 4)")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 or auto (default)")
    parser.add_argument("--max-detections", type=whole_number(1), default=100, help="per image (default 100)")
    add_bool(parser, "--full-hd", "predict on the bottom-centre 1920x1080 crop of larger frames, boxes mapped back "
             "to the frame; unset: the settings' full_hd with -f", default=None)  # type: ignore[arg-type]


def _task_choice(parser: argparse.ArgumentParser) -> None:
    add_task_names(parser, "a task to work on")
    parser.add_argument("--name", dest="task_names", action="append", help=argparse.SUPPRESS)  # older spelling
    parser.add_argument("--pattern", metavar="GLOB", help="task names matching a shell-style pattern, e.g. 'gt_val_*'")


def build_parser(prog: str = "auto_annotate.py") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="Push model predictions and ground truth to CVAT. "
                                     + SAFETY)
    sub = parser.add_subparsers(dest="mode", required=True, metavar="MODE")

    p = sub.add_parser("folder", help="annotate a folder of images as a new task",
                       description="Create a CVAT task from a folder of images (labels from the model's class "
                       "map, with review/score attributes) and add the predictions as auto shapes. Run again, it "
                       "finds the task by name and adds only what is missing. " + SAFETY)
    p.add_argument("folder", type=Path)
    p.add_argument("--task-name", help="name of the task (default: the folder's name)")
    _model(p)
    add_bool(p, "--replace", "refresh unreviewed auto shapes of an existing task of that name")
    _common(p)

    p = sub.add_parser("tasks", help="annotate existing tasks (by name or pattern; one task = a rerun)",
                       description="Add predictions to existing CVAT tasks as auto shapes. " + SAFETY)
    _task_choice(p)
    _model(p)
    add_bool(p, "--replace", "replace earlier unreviewed auto shapes with the new predictions")
    _common(p)

    p = sub.add_parser("upload-gt", help="upload ground truth (a data set or a split) as tasks",
                       description="Create one CVAT task per annotation task of a data set: from a settings "
                       "file (any source; --split picks the run's train or val images) or from annotation files. "
                       "A task that exists already only gets the shapes it lacks.")
    p.add_argument("-f", "--settings", help="settings JSON (its data source and split)")
    p.add_argument("overrides", nargs="*", metavar="key.path=value", help="settings overrides")
    p.add_argument("--tasks", metavar="KEY", help="use another task list of the settings, e.g. annotations_list_4k")
    p.add_argument("--split", choices=["all", "train", "val"], default="all",
                   help="which side of the split to upload (default: all images)")
    p.add_argument("--split-manifest", type=Path, help="split manifest JSON to use (default: the run's split)")
    p.add_argument("--annotations", nargs="+", type=Path, default=[], help="annotation files/folders instead of -f")
    p.add_argument("--images", type=Path, help="image folder for --annotations")
    p.add_argument("--labels", metavar="A,B", help="label list for --annotations (default: the labels found)")
    p.add_argument("--prefix", default="", help="prepended to every task name, e.g. gt_val_")
    _common(p)

    p = sub.add_parser("upload-xml", help="upload CVAT for images 1.1 XML files as tasks",
                       description="Create one task per CVAT for images 1.1 XML file with all its shapes "
                       "(boxes, polygons, polylines, points, ellipses), attributes, occlusion and z order.")
    p.add_argument("folder", type=Path, help="folder of *.xml files (or one file)")
    p.add_argument("--images", type=Path, required=True, help="folder the files' image names are in")
    p.add_argument("--prefix", default="", help="prepended to every task name")
    _common(p)

    p = sub.add_parser("missing", help="propose annotations missing from ground-truth tasks",
                       description="Run the model on ground-truth tasks and add the predictions with score >= -t "
                       "that overlap no human box (IoU < -i) as auto shapes with review=unreviewed and their "
                       "score, for annotators to accept or reject. " + SAFETY)
    _task_choice(p)
    _model(p)
    p.add_argument("-i", "--iou", type=_fraction, default=0.3,
                   help="a prediction overlapping a human box with IoU >= this is not proposed (default 0.3)")
    add_bool(p, "--replace", "replace earlier unreviewed candidates with the new ones")
    _common(p)

    p = sub.add_parser("status", help="set the job state/stage of tasks",
                       description="Set every job of the chosen tasks to a state and/or stage, e.g. "
                       "--state completed --stage acceptance.")
    _task_choice(p)
    p.add_argument("--state", choices=["new", "in progress", "completed", "rejected"], help="job state to set")
    p.add_argument("--stage", choices=["annotation", "validation", "acceptance"], help="job stage to set")
    _common(p)

    p = sub.add_parser("fix-review", help="give the review attribute the neutral default (tasks from older obdb)",
                       description="Tasks that got the review attribute from an older obdb have 'unreviewed' as "
                       "its default, so CVAT shows every human shape as unreviewed. This sets the default to 'n/a' "
                       "and rewrites review=unreviewed to 'n/a' on human objects (source not auto) that hold it; "
                       "model proposals and everything else stay as they are. Backs up first.")
    _task_choice(p)
    _common(p)
    return parser


def _function(args: argparse.Namespace) -> Any:
    from ..annotate.function import ModelDetectionFunction

    if not args.model.is_file():
        raise FileNotFoundError(f"model file not found: {args.model}")
    return ModelDetectionFunction.from_file(args.model, device=args.device, max_detections=args.max_detections,
                                            threshold=args.threshold, batch_size=args.batch_size,
                                            progress=args.progress, full_hd=_full_hd(args))


def _full_hd(args: argparse.Namespace) -> bool:
    """``--full-hd``, else the settings file's ``full_hd`` (legacy key) when the mode reads one."""
    if getattr(args, "full_hd", None) is not None:
        return bool(args.full_hd)
    if getattr(args, "settings", None):
        from ..settings import load_settings

        return load_settings(args.settings, getattr(args, "overrides", []) or []).data.full_hd
    return False


def _ground_truth(args: argparse.Namespace) -> tuple[list[Any], list[str], list[Path]]:
    """Records, label list and data roots (the folders images may be uploaded from) for ``upload-gt``."""
    from ..cvat import AnnotateError

    if args.overrides and not args.settings:
        # without -f nothing would read them, and "--allow-version-mismatch False" lands here
        raise AnnotateError(f"{' '.join(args.overrides)!r}: key.path=value overrides change a settings file, but "
                            f"no -f SETTINGS was given (on/off flags such as --dry-run take no value)")
    if args.annotations:
        from ..sources.local import load_local

        if args.images is None:
            raise AnnotateError("--annotations needs --images (the folder the files' image names are in)")
        loaded = load_local(list(args.annotations), images_dir=args.images, progress=args.progress)
        labels = [n.strip() for n in args.labels.split(",") if n.strip()] if args.labels else loaded.label_names()
        return loaded.records, labels, [args.images]
    if not args.settings:
        raise AnnotateError("give -f SETTINGS (its data source, optionally --split) "
                            "or --annotations FILES --images DIR")
    from ..prepare import choose_class_map, keep_class_map, load_annotations, require_records
    from ..records import records_by_split
    from ..settings import load_settings
    from ..split import SplitManifest, split_for_run

    settings = load_settings(args.settings, args.overrides, task_list=args.tasks)
    annotations = load_annotations(settings, args.progress)
    require_records(annotations)
    class_map = choose_class_map(settings, annotations)
    records = keep_class_map(annotations, class_map).records
    if args.split != "all":
        if args.split_manifest:
            manifest = SplitManifest.load(args.split_manifest)
        else:  # the runner's own split (same settings → same content-addressed manifest)
            manifest = split_for_run(records, settings, save_dir=Path(settings.save_dir),
                                     progress=args.progress, report=False).manifest
        records = records_by_split(records, manifest.assignment, args.split)
        if not records:
            raise AnnotateError(f"the {args.split} split holds no images")
    data = settings.data
    roots = [Path(data.images_dir or settings.dataset_dir)] if data.source != "cvat" else \
        [Path(data.cvat.cache_dir) if data.cvat.cache_dir else Path(settings.save_dir) / "cvat_cache"]
    return records, list(class_map.names), roots


def run_mode(args: argparse.Namespace) -> list[Any]:
    from ..annotate import fix_review, modes, uploads
    from ..cvat import RunOptions
    from ..annotate.xml_tasks import xml_files
    from ..cvat.connection import CvatCredentials, connect

    options = RunOptions(out_dir=args.out, dry_run=getattr(args, "dry_run", False),
                         replace=getattr(args, "replace", False), chunk_size=getattr(args, "chunk_size", 2000),
                         progress=args.progress)
    # everything local (model, files) is checked before the server is contacted
    function = _function(args) if args.mode in ("folder", "tasks", "missing") else None
    gt = _ground_truth(args) if args.mode == "upload-gt" else None
    files = xml_files(args.folder) if args.mode == "upload-xml" else []
    session = connect(CvatCredentials.from_env(url=args.url), allow_version_mismatch=args.allow_version_mismatch)
    tasks = {"names": args.task_names, "pattern": args.pattern} if hasattr(args, "pattern") else {}
    if args.mode == "folder":
        return modes.annotate_folder(session, function, args.folder, options, name=args.task_name)
    if args.mode == "tasks":
        return modes.annotate_tasks(session, function, options, **tasks)
    if args.mode == "missing":
        return modes.find_missing(session, function, options, min_score=args.threshold, max_iou=args.iou, **tasks)
    if args.mode == "status":
        return modes.set_status(session, options, state=args.state, stage=args.stage, **tasks)
    if args.mode == "fix-review":
        return fix_review.fix_review(session, options, **tasks)
    if args.mode == "upload-gt":
        assert gt is not None
        return uploads.upload_records(session, gt[0], gt[1], options, prefix=args.prefix, roots=gt[2])
    return uploads.upload_xml(session, files, args.images, options, prefix=args.prefix)


def main(argv: Sequence[str] | None = None, prog: str = "auto_annotate.py") -> int:
    args = build_parser(prog).parse_args(argv)
    setup_logging(args.log_level)

    def body() -> int:
        from ..cvat import format_plans
        from ..cvat.connection import CvatError
        from ..errors import ServiceUnavailable
        from ..fileio import write_json
        from ..outputs import now

        try:
            plans = run_mode(args)
        except CvatError as err:  # exit code from the one table: 3 unreachable after retries, else 2
            print(f"error: {err}", file=sys.stderr)
            if isinstance(err, ServiceUnavailable) and not getattr(args, "dry_run", False):
                print("what was written so far is complete; rerun the same command when CVAT answers again to "
                      "finish (reruns add no duplicates and reuse a task left empty)", file=sys.stderr)
            return err.exit_code
        dry_run = getattr(args, "dry_run", False)
        print(format_plans(plans, dry_run=dry_run))
        if not dry_run:
            stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S.%fZ")
            report = write_json(args.out / "reports" / f"{stamp}-{args.mode}.json",
                                {"mode": args.mode, "finished": now(), "tasks": [p.to_json() for p in plans]})
            print(f"report: {report}")
        return EXIT_OK

    return guarded(without_downloads("auto_annotate.py", body))  # reads saved models: never downloads weights


if __name__ == "__main__":
    sys.exit(main())
