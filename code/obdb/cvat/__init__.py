"""The only place obdb talks to a CVAT server (through ``cvat_sdk``): see ``connection``,
``tasks`` (reads) and ``writes``."""
from .connection import (SUPPORTED_SERVER_VERSIONS, CvatCredentials, CvatError, CvatSession, CvatUnavailable,
                         connect)
from .tasks import (FrameMeta, TaskInfo, download_frame, expand_tracks, find_task, get_annotations, get_task,
                    list_tasks, task_frames, task_labels)
from .writes import (add_label_attributes, add_shapes, backup_annotations, create_task, delete_shapes, delete_task, read_backup,
                     replace_annotations, set_jobs_state)

__all__ = [
    "SUPPORTED_SERVER_VERSIONS", "CvatCredentials", "CvatError", "CvatSession", "CvatUnavailable", "connect",
    "FrameMeta", "TaskInfo", "download_frame", "expand_tracks", "find_task", "get_annotations", "get_task",
    "list_tasks", "task_frames", "task_labels",
    "add_label_attributes", "add_shapes", "backup_annotations", "create_task", "delete_shapes", "delete_task", "read_backup",
    "replace_annotations", "set_jobs_state",
]
