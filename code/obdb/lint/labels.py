"""Labels missing from the class map: their boxes are dropped and counted per label.

A model learns (and is scored on) exactly the classes of its map; the map is fixed by the
settings so label indices never drift, so a label outside it is either a typo in the annotation
tool or a class this run deliberately leaves out. Either way the user should see which labels and
how many boxes: the report lists each image and the counts per label.
"""
from __future__ import annotations

from collections import Counter
from typing import Sequence

from ..records import ClassMap, ImageRecord
from .base import DROPPED_BOX, WARN, Issue, issue_for, with_boxes


def unknown_labels(records: Sequence[ImageRecord],
                   class_map: ClassMap | None) -> tuple[list[ImageRecord], list[Issue], dict[str, int]]:
    """Records without boxes whose label is outside ``class_map`` (``None``: the map is made from
    the data, so nothing is unknown), one issue per image and label, and the box count per label."""
    if class_map is None:
        return list(records), [], {}
    known = set(class_map.names)
    totals: Counter[str] = Counter()
    kept: list[ImageRecord] = []
    issues: list[Issue] = []
    for record in records:
        unknown = Counter(label for label in record.labels if label not in known)
        if not unknown:
            kept.append(record)
            continue
        totals.update(unknown)
        for label, count in sorted(unknown.items()):
            issues.append(issue_for(record, "unknown_label", WARN, DROPPED_BOX,
                                    f"{count} box(es) labelled {label!r}, not in the class map",
                                    label=label, boxes=count))
        kept.append(with_boxes(record, [i for i, label in enumerate(record.labels) if label in known]))
    return kept, issues, dict(sorted(totals.items(), key=lambda kv: (-kv[1], kv[0])))
