"""Dataset lint: bad images, bad boxes, duplicates and unknown labels, found before training.

Runs between loading and the split (:func:`lint_for_run`) and as ``obdb lint``. Unusable images
are left out and bad boxes fixed or dropped; every change is listed in a JSON + Markdown report.
"""
from .base import ERROR, INFO, RULES, WARN, Issue, LintError
from .run import LintResult, lint, lint_annotations, lint_for_run, settings_class_map

__all__ = ["ERROR", "INFO", "RULES", "WARN", "Issue", "LintError", "LintResult", "lint", "lint_annotations",
           "lint_for_run", "settings_class_map"]
