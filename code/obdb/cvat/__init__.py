"""The only place obdb talks to a CVAT server (through ``cvat_sdk``).

``connection`` (credentials, retries, version check), ``tasks`` (reads), ``writes`` (batched
writes, backups), and the write path that ``auto_annotate`` and ``obdb review --push`` share:
``shapes`` (shapes by label name → a task's ids), ``review`` (the review/score attributes),
``dedupe`` (nothing added twice), ``plan`` (what a write changes, the ``--dry-run`` table) and
``push`` (plan and apply under one set of safety rules), ``detection`` (a model as a cvat-sdk
detection function). Callers use the names exported here.
"""
from .connection import (SUPPORTED_SERVER_VERSIONS, CvatCredentials, CvatError, CvatSession, CvatUnavailable,
                         connect)
from .dedupe import AUTO
from .errors import AnnotateError
from .plan import TaskPlan, format_plans
from .push import (RunOptions, apply_plan, check_target, find_task_by_name, finish, plan_create, plan_for_files,
                   plan_update)
from .review import ACCEPTED, REJECTED, REVIEW, SCORE, UNREVIEWED, format_score, label_definitions
from .shapes import NamedShape, auto_shapes, named_shape
from .tasks import (FrameMeta, TaskInfo, download_frame, expand_tracks, find_task, get_annotations, get_task,
                    list_tasks, task_frames, task_labels)
from .writes import (add_label_attributes, add_shapes, backup_annotations, create_task, delete_shapes, delete_task,
                     read_backup, replace_annotations, set_jobs_state)

__all__ = [
    "SUPPORTED_SERVER_VERSIONS", "CvatCredentials", "CvatError", "CvatSession", "CvatUnavailable", "connect",
    "FrameMeta", "TaskInfo", "download_frame", "expand_tracks", "find_task", "get_annotations", "get_task",
    "list_tasks", "task_frames", "task_labels",
    "add_label_attributes", "add_shapes", "backup_annotations", "create_task", "delete_shapes", "delete_task",
    "read_backup", "replace_annotations", "set_jobs_state",
    "AUTO", "AnnotateError", "TaskPlan", "format_plans", "RunOptions", "apply_plan", "check_target",
    "find_task_by_name", "finish",
    "plan_create", "plan_for_files", "plan_update", "ACCEPTED", "REJECTED", "REVIEW", "SCORE", "UNREVIEWED",
    "format_score", "label_definitions", "NamedShape", "auto_shapes", "named_shape",
]
