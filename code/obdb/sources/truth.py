"""Which shapes are ground truth: what people made or accepted, not model proposals.

A shape's CVAT ``source`` says who made it. ``auto`` is a model proposal: written by
``auto_annotate.py`` (``folder``, ``tasks``, ``missing``, ``obdb review --push``), by CVAT's own
automatic annotation, or by ``cvat-cli task auto-annotate``. Every other source is a person's
work and is ground truth: ``manual`` (drawn by hand), ``semi-auto`` (drawn by a person with an
interactor or tracker, or an auto shape a person edited), ``file`` (imported annotation files,
as ``upload-gt``/``upload-xml`` uploads are), ``consensus`` (merged from people's replicas), and a
missing source (the original system's exports). A proposal becomes ground truth when a person sets
its ``review`` attribute to ``accepted``.

``include_auto`` (``data.cvat.include_auto`` / ``data.mongo.include_auto``) chooses which
proposals are trained on and scored against:

* ``accepted`` (default): only those a person accepted;
* ``all``: every proposal (the old behaviour; e.g. to train on pseudo-labels on purpose);
* ``none``: no proposal, not even accepted ones.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

INCLUDE_AUTO_CHOICES = ("accepted", "all", "none")
#: CVAT shape sources that mark a model proposal (everything else is a person's work).
PROPOSAL_SOURCES = frozenset({"auto"})
REVIEW_ATTRIBUTE = "review"
ACCEPTED = "accepted"


def is_proposal(source: str | None) -> bool:
    """Whether a shape of this CVAT ``source`` was proposed by a model."""
    return (source or "").strip().lower() in PROPOSAL_SOURCES


def is_ground_truth(source: str | None, attributes: Mapping[str, str] | None,
                    include_auto: str = "accepted") -> bool:
    """Whether a shape with this CVAT ``source`` and these attributes (name → value, see
    :func:`attribute_values`) is trained on and scored against."""
    if include_auto not in INCLUDE_AUTO_CHOICES:
        raise ValueError(f"include_auto must be one of {', '.join(INCLUDE_AUTO_CHOICES)}, got {include_auto!r}")
    if not is_proposal(source) or include_auto == "all":
        return True
    if include_auto == "none":
        return False
    value = (attributes or {}).get(REVIEW_ATTRIBUTE)
    return str(value).strip().lower() == ACCEPTED if value is not None else False


def attribute_values(attributes: Any, names_by_id: Mapping[Any, str] | None = None) -> dict[str, str]:
    """A shape's attributes as ``{name: value}`` from any of the forms they are stored in: a
    mapping, a list of ``{"name", "value"}`` (``annotation_data`` as ``obdb sync`` writes it) or
    CVAT's list of ``{"spec_id", "value"}`` (``names_by_id`` maps spec ids to names). Entries that
    cannot be named are left out; ``None`` or anything else gives ``{}``."""
    if isinstance(attributes, Mapping):
        return {str(k): str(v) for k, v in attributes.items()}
    if not isinstance(attributes, Iterable) or isinstance(attributes, (str, bytes)):
        return {}
    out: dict[str, str] = {}
    for item in attributes:
        if not isinstance(item, Mapping) or "value" not in item:
            continue
        name = item.get("name")
        if name is None and names_by_id is not None:
            name = names_by_id.get(item.get("spec_id"))
        if name is not None:
            out[str(name)] = str(item["value"])
    return out
