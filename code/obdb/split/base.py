"""The split contract: which image is used for training and which for validation.

A :class:`SplitManifest` is plain JSON (never a pickle), carries the method and seed that made it,
and has a content hash recorded in every run manifest, so a score can always be traced to the
exact validation images it was measured on.
"""
from __future__ import annotations

from obdb.errors import UserError
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..fileio import read_json, write_json
from ..records import stable_hash

TRAIN, VAL = "train", "val"


class SplitError(UserError, ValueError):
    """A split that cannot be made or read; the message says why and what to change."""


@dataclass
class SplitManifest:
    method: str
    seed: int
    assignment: dict[str, str]                      # image_id -> "train" | "val"
    groups: dict[str, str] = field(default_factory=dict)   # image_id -> group
    params: dict[str, Any] = field(default_factory=dict)
    # K-fold splits only: image_id -> fold index; "val" is one chosen fold (params["fold"]).
    folds: dict[str, int] = field(default_factory=dict)

    @property
    def hash(self) -> str:
        content: dict[str, Any] = {"method": self.method, "assignment": sorted(self.assignment.items())}
        if self.folds:  # only when present, so manifests without folds keep their hashes
            content["folds"] = sorted(self.folds.items())
        return stable_hash(content)

    def ids(self, split: str) -> list[str]:
        return [i for i, s in self.assignment.items() if s == split]

    def counts(self) -> dict[str, int]:
        return {TRAIN: len(self.ids(TRAIN)), VAL: len(self.ids(VAL))}

    def to_json(self) -> dict[str, Any]:
        data = {"format": "obdb-split", "version": 1, "hash": self.hash, "method": self.method,
                "seed": self.seed, "params": self.params, "counts": self.counts(),
                "assignment": self.assignment, "groups": self.groups}
        if self.folds:
            data["folds"] = self.folds
        return data

    def save(self, folder: Path) -> Path:
        """Write ``<folder>/<hash>.json`` (content-addressed: the same split is written once)."""
        path = Path(folder) / f"{self.hash}.json"
        if not path.exists():
            write_json(path, self.to_json())
        return path

    @classmethod
    def from_json(cls, data: dict[str, Any], source: str = "split manifest") -> "SplitManifest":
        if not isinstance(data, dict) or data.get("format") != "obdb-split":
            raise SplitError(f"{source}: not an obdb split manifest (missing format: obdb-split)")
        assignment = data.get("assignment")
        if not isinstance(assignment, dict) or any(v not in (TRAIN, VAL) for v in assignment.values()):
            raise SplitError(f"{source}: 'assignment' must map image ids to 'train' or 'val'")
        folds = data.get("folds") or {}
        if not isinstance(folds, dict) or any(type(v) is not int or v < 0 for v in folds.values()):
            raise SplitError(f"{source}: 'folds' must map image ids to fold numbers 0, 1, ...")
        if folds and set(folds) != set(assignment):
            raise SplitError(f"{source}: 'folds' must list the same images as 'assignment'")
        return cls(method=str(data.get("method", "file")), seed=int(data.get("seed", 0)),
                   assignment=dict(assignment), groups=dict(data.get("groups") or {}),
                   params=dict(data.get("params") or {}), folds=dict(folds))

    @classmethod
    def load(cls, path: Path) -> "SplitManifest":
        return cls.from_json(read_json(path), str(path))
