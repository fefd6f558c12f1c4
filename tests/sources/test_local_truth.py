"""Local CVAT XML exports follow the same ground-truth rule as the cvat and mongo sources."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from obdb.settings import parse_settings
from obdb.sources.factory import load_from_settings
from obdb.sources.local import load_local

XML = """<?xml version="1.0" encoding="utf-8"?>
<annotations><version>1.1</version>
<meta><task><name>t</name><labels><label><name>weed</name></label></labels></task></meta>
<image id="0" name="a.png" width="64" height="48">
  <box label="weed" source="manual" occluded="0" xtl="1" ytl="1" xbr="20" ybr="20"></box>
  <box label="weed" source="auto" occluded="0" xtl="30" ytl="1" xbr="40" ybr="20">
    <attribute name="review">accepted</attribute></box>
  <box label="weed" source="auto" occluded="0" xtl="1" ytl="25" xbr="20" ybr="40">
    <attribute name="review">unreviewed</attribute></box>
  <box label="weed" source="auto" occluded="0" xtl="30" ytl="25" xbr="40" ybr="40">
    <attribute name="review">rejected</attribute></box>
</image></annotations>
"""


@pytest.fixture()
def export(tmp_path: Path) -> Path:
    (tmp_path / "ann").mkdir()
    (tmp_path / "ann" / "t.xml").write_text(XML)
    Image.new("RGB", (64, 48), (90, 120, 60)).save(tmp_path / "a.png")
    return tmp_path


@pytest.mark.parametrize("rule,expected", [("accepted", 2), ("all", 4), ("none", 1)])
def test_local_xml_takes_human_and_accepted_shapes(export: Path, rule: str, expected: int) -> None:
    loaded = load_local(export / "ann", images_dir=export, progress=False, include_auto=rule)
    assert len(loaded.records[0].boxes) == expected


def test_the_default_leaves_out_unreviewed_and_rejected_proposals(export: Path) -> None:
    assert [b.tolist() for b in load_local(export / "ann", images_dir=export, progress=False).records[0].boxes] == \
        [[1, 1, 20, 20], [30, 1, 40, 20]]
    raw = {"variants": ["resnet18"], "dataset_dir": str(export), "save_dir": str(export / "out"),
           "data": {"annotations": [str(export / "ann")], "images_dir": str(export)}}
    assert len(load_from_settings(parse_settings(json.loads(json.dumps(raw))), progress=False).records[0].boxes) == 2
    raw["data"]["include_auto"] = "all"
    assert len(load_from_settings(parse_settings(raw), progress=False).records[0].boxes) == 4
