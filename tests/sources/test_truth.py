"""The ground-truth rule (obdb.sources.truth): what people made or accepted."""
from __future__ import annotations

import pytest

from obdb.sources.truth import attribute_values, is_ground_truth, is_proposal


@pytest.mark.parametrize("source", ["manual", "semi-auto", "file", "consensus", None, "", "Manual"])
def test_peoples_shapes_are_always_ground_truth(source):
    for rule in ("accepted", "all", "none"):
        for attributes in (None, {}, {"review": "rejected"}, {"review": "unreviewed"}):
            assert is_ground_truth(source, attributes, rule)
    assert not is_proposal(source)


@pytest.mark.parametrize(("review", "accepted", "all_", "none"), [
    (None, False, True, False), ("unreviewed", False, True, False), ("n/a", False, True, False),
    ("rejected", False, True, False), ("accepted", True, True, False), (" Accepted ", True, True, False)])
def test_proposals_count_once_accepted(review, accepted, all_, none):
    attributes = {} if review is None else {"review": review, "score": "0.9"}
    assert is_proposal("auto") and is_proposal("AUTO")
    assert is_ground_truth("auto", attributes) is accepted  # the default rule is "accepted"
    assert is_ground_truth("auto", attributes, "accepted") is accepted
    assert is_ground_truth("auto", attributes, "all") is all_
    assert is_ground_truth("auto", attributes, "none") is none


def test_unknown_rule_is_refused():
    with pytest.raises(ValueError, match="include_auto must be one of accepted, all, none"):
        is_ground_truth("auto", {}, "some")


def test_attribute_values_reads_every_stored_form():
    assert attribute_values({"review": "accepted"}) == {"review": "accepted"}
    assert attribute_values([{"name": "review", "value": "accepted"}, {"name": "score", "value": "0.5"}]) == {
        "review": "accepted", "score": "0.5"}
    assert attribute_values([{"spec_id": 7, "value": "accepted"}, {"spec_id": 9, "value": "x"}], {7: "review"}) == {
        "review": "accepted"}
    assert attribute_values(None) == {} and attribute_values("review") == {} and attribute_values([1, {}]) == {}
