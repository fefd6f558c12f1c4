"""The lint report: ``report.json`` (everything, for tools) and ``report.md`` (for people).

Both hold the counts per rule (every rule, zeros too, so the reader sees what was checked), the
images and boxes in and out, the unknown labels with their box counts, and every issue with its
image id and file path. The Markdown lists at most :data:`MD_ITEMS_PER_RULE` items per rule and
points to the JSON for the rest. :func:`summary_lines` is the few lines logged and printed.
"""
from __future__ import annotations

from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from ..fileio import write_json, write_text
from ..markdown import cell
from ..records import ClassMap, ImageRecord
from ..settings.schema import LintSettings
from .base import CLIPPED_BOX, DROPPED_BOX, ERROR, INFO, RULES, SEVERITY_RANK, WARN, Issue

REPORT_FORMAT = "obdb-lint-report"
MD_ITEMS_PER_RULE = 200
_EXAMPLES = 3


def _boxes_of(issue: Issue) -> int:
    return int(issue.details.get("boxes", 1))


def build_report(records_in: Sequence[ImageRecord], records_out: Sequence[ImageRecord], issues: Sequence[Issue], *,
                 settings: LintSettings, class_map: ClassMap | None, unknown_labels: dict[str, int],
                 source_dropped_boxes: int = 0, source_skipped_boxes: int = 0) -> dict[str, Any]:
    """The report as a JSON-able dict. ``source_skipped_boxes``: the boxes of images the source
    skipped (missing or unreadable files), which are in no record but were annotated."""
    kept_ids = {r.image_id for r in records_out}
    dropped_images = [r for r in records_in if r.image_id not in kept_ids]
    counts = {
        "images_in": len(records_in), "images_kept": len(records_out), "images_dropped": len(dropped_images),
        "boxes_in": int(sum(len(r.boxes) for r in records_in)),
        "boxes_kept": int(sum(len(r.boxes) for r in records_out)),
        "boxes_dropped": sum(_boxes_of(i) for i in issues if i.action == DROPPED_BOX),
        "boxes_clipped": sum(1 for i in issues if i.action == CLIPPED_BOX),
        "boxes_in_dropped_images": int(sum(len(r.boxes) for r in dropped_images)),
        "source_skipped_images": sum(1 for i in issues if i.rule == "source_skipped"),
        "source_dropped_boxes": source_dropped_boxes,
        "source_skipped_boxes": source_skipped_boxes,
    }
    rules: dict[str, Any] = {}
    for rule, description in RULES.items():
        mine = [i for i in issues if i.rule == rule]
        rules[rule] = {"description": description, "issues": len(mine),
                       "images": len({i.image_id or i.path for i in mine}),
                       "severity": dict(Counter(i.severity for i in mine)),
                       "action": dict(Counter(i.action for i in mine))}
    severity = Counter(i.severity for i in issues)
    return {
        "format": REPORT_FORMAT, "version": 1,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": settings.model_dump(mode="json"),
        "class_map": list(class_map.names) if class_map is not None else None,
        "ok": not issues,
        "counts": counts,
        "severity": {s: severity.get(s, 0) for s in (ERROR, WARN, INFO)},
        "rules": rules,
        "unknown_labels": unknown_labels,
        "issues": [i.to_json() for i in sorted(issues, key=_issue_order)],
    }


def _issue_order(issue: Issue) -> tuple[int, int, str, str, int]:
    rule_rank = list(RULES).index(issue.rule)
    return (-SEVERITY_RANK[issue.severity], rule_rank, issue.image_id, issue.path,
            -1 if issue.box is None else issue.box)


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A few lines: images/boxes in and out, then one line per rule that found something."""
    c = report["counts"]
    s = report["severity"]
    lines = [f"lint: {c['images_kept']} of {c['images_in']} image(s) kept ({c['images_dropped']} dropped"
             + (f", {c['source_skipped_images']} skipped while loading" if c["source_skipped_images"] else "")
             + f"); {c['boxes_kept']} of {c['boxes_in'] + c['source_skipped_boxes']} box(es) kept "
             f"({c['boxes_dropped']} dropped, {c['boxes_clipped']} clipped"
             + (f", {c['source_skipped_boxes']} on images skipped while loading" if c["source_skipped_boxes"] else "")
             + f"); {s['error']} error(s), {s['warn']} warning(s), {s['info']} note(s)"]
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for item in report["issues"]:
        by_rule.setdefault(item["rule"], []).append(item)
    for rule, block in report["rules"].items():
        if not block["issues"]:
            continue
        actions = ", ".join(f"{n} {a}" for a, n in sorted(block["action"].items()))
        examples = "; ".join(Path(i["path"]).name + (f" box {i['box']}" if "box" in i else "")
                             for i in by_rule.get(rule, [])[:_EXAMPLES])
        more = " …" if block["issues"] > _EXAMPLES else ""
        lines.append(f"  {rule}: {block['issues']} ({actions}) e.g. {examples}{more}")
    if report["unknown_labels"]:
        lines.append("  unknown labels (boxes): " + ", ".join(f"{k}={v}" for k, v in report["unknown_labels"].items()))
    return lines


_cell = cell  # one escaping rule for every report (obdb.markdown)


def to_markdown(report: dict[str, Any]) -> str:
    c = report["counts"]
    out = ["# Dataset lint report", "",
           f"Created {report['created']}. {c['images_kept']} of {c['images_in']} images kept, "
           f"{c['boxes_kept']} of {c['boxes_in']} boxes kept "
           f"({c['boxes_dropped']} dropped, {c['boxes_clipped']} clipped, "
           f"{c['boxes_in_dropped_images']} in dropped images).", ""]
    if c["source_skipped_images"] or c["source_dropped_boxes"]:
        out += [f"While loading, the source skipped {c['source_skipped_images']} image(s) holding "
                f"{c['source_skipped_boxes']} box(es) and dropped {c['source_dropped_boxes']} box(es) (listed under "
                f"`source_skipped`; boxes as a count only).", ""]
    out += ["| rule | issues | images | severity | action | meaning |", "|---|---:|---:|---|---|---|"]
    for rule, block in report["rules"].items():
        sev = ", ".join(f"{k} {v}" for k, v in sorted(block["severity"].items()))
        act = ", ".join(f"{k} {v}" for k, v in sorted(block["action"].items()))
        out.append(f"| `{rule}` | {block['issues']} | {block['images']} | {sev} | {act} "
                   f"| {_cell(block['description'])} |")
    if report["unknown_labels"]:
        out += ["", "## Labels missing from the class map", "", "| label | boxes |", "|---|---:|"]
        out += [f"| {_cell(k)} | {v} |" for k, v in report["unknown_labels"].items()]
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for item in report["issues"]:
        by_rule.setdefault(item["rule"], []).append(item)
    for rule in report["rules"]:
        items = by_rule.get(rule, [])
        if not items:
            continue
        out += ["", f"## `{rule}` ({len(items)})", "", "| severity | image | file | box | finding | action |",
                "|---|---|---|---:|---|---|"]
        for item in items[:MD_ITEMS_PER_RULE]:
            out.append(f"| {item['severity']} | {_cell(item['image_id'])} | {_cell(item['path'])} | "
                       f"{item.get('box', '')} | {_cell(item['message'])} | {item['action']} |")
        if len(items) > MD_ITEMS_PER_RULE:
            out.append(f"\n{len(items) - MD_ITEMS_PER_RULE} more in report.json.")
    return "\n".join(out) + "\n"


def write_report(folder: Path, report: dict[str, Any]) -> dict[str, Path]:
    """``report.json`` and ``report.md`` under ``folder``, each written atomically."""
    folder = Path(folder)
    return {"json": write_json(folder / "report.json", report),
            "md": write_text(folder / "report.md", to_markdown(report))}
