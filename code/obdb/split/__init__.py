"""Train/validation splits (group-aware by default) and their JSON manifests."""
from .base import TRAIN, VAL, SplitError, SplitManifest
from .methods import file_split, group_split, make_split, random_split

__all__ = ["TRAIN", "VAL", "SplitError", "SplitManifest", "file_split", "group_split", "make_split", "random_split"]
