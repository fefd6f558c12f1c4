"""Train/validation splits (group-aware by default, t-SNE-informed on request), their JSON
manifests and reports."""
from .base import TRAIN, VAL, SplitError, SplitManifest
from .methods import file_split, group_split, make_split, random_split
from .service import SplitOutcome, split_for_run

__all__ = ["TRAIN", "VAL", "SplitError", "SplitManifest", "SplitOutcome", "file_split", "group_split", "make_split",
           "random_split", "split_for_run"]
