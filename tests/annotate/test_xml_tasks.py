"""The full-fidelity CVAT XML reader keeps every kind of shape, attribute and flag."""
from __future__ import annotations

from pathlib import Path

import pytest

from helpers.annotate import XML
from obdb.annotate.xml_tasks import read_xml_task, xml_files
from obdb.sources.contract import SourceError
from obdb.shapes import shape_box
from obdb.sources.local import parse_file


def test_every_shape_kind_and_attribute_is_kept(tmp_path: Path) -> None:
    path = tmp_path / "f.xml"
    path.write_text(XML)
    task = read_xml_task(path)
    assert task.name == "field 7" and [i.name for i in task.images] == ["a.png", "sub/b.png"]
    shapes = task.images[0].shapes
    assert [s.type for s in shapes] == ["rectangle", "polygon", "points", "ellipse"]
    box, poly, points, ellipse = shapes
    assert box.points == [1.5, 2, 10, 12.25] and box.occluded and box.z_order == 2 and box.rotation == 15
    assert box.attributes == {"species": "dock"}
    assert poly.points == [1, 1, 9, 1, 9, 9] and not poly.occluded and poly.group == 3
    assert points.points == [4, 5, 6, 7] and points.source == "auto"
    assert ellipse.points == [20, 20, 24, 17] and ellipse.attributes == {"note": "round"}
    assert task.ignored == {"tag": 1, "mask": 1}
    labels = {label.name: label for label in task.labels}
    # weed is declared "rectangle" but also has a polygon: type any, so CVAT accepts both
    assert labels["weed"].type == "any"
    species = labels["weed"].attributes[0]
    assert (species.name, species.input_type, species.values, species.default_value) == \
        ("species", "select", ["thistle", "dock"], "thistle")
    # an attribute used but not declared becomes a text attribute
    assert [(a.name, a.input_type) for a in labels["crop"].attributes] == [("note", "text")]
    request = labels["weed"].to_request()
    assert request["attributes"][0]["values"] == ["thistle", "dock"]
    # training reads the same file through the same reader; points and masks are boxes there too
    shapes = parse_file(path).frames[0].shapes
    assert [s.kind for s in shapes] == ["rectangle", "polygon", "points", "ellipse", "mask"]
    assert shape_box(shapes[-1].kind, shapes[-1].points) == (0, 0, 1, 3)
    assert sum(shape_box(s.kind, s.points, s.rotation, "skip") is not None for s in shapes) == 3


def test_bad_files_name_the_problem(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text("<annotations><image id='0' name='a.png'><box label='x' xtl='a' ytl='0' xbr='1' ybr='1'/>"
                   "</image></annotations>")
    with pytest.raises(SourceError, match=r"bad.xml: image 'a.png': xtl is not a number"):
        read_xml_task(bad)
    broken = tmp_path / "broken.xml"
    broken.write_text("<annotations><image>")
    with pytest.raises(SourceError, match="broken.xml: malformed XML at line 1"):
        read_xml_task(broken)
    video = tmp_path / "video.xml"
    video.write_text("<annotations><track id='0' label='x'/></annotations>")
    with pytest.raises(SourceError, match="CVAT for video"):
        read_xml_task(video)
    with pytest.raises(SourceError, match="no \\*.xml files"):
        xml_files(tmp_path / "empty") if (tmp_path / "empty").mkdir() is None else None


def test_one_reader_refuses_entity_bombs_and_external_entities(tmp_path: Path) -> None:
    """Training and upload read CVAT XML through one reader, and expat refuses both attacks there."""
    secret = tmp_path / "secret.txt"
    secret.write_text("do not read")
    laughs = "".join(f'<!ENTITY l{i} "{"&l%d;" % (i - 1) * 10}">' for i in range(1, 10))
    bomb = f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY l0 "ha">{laughs}]><annotations>&l9;</annotations>'
    xxe = (f'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file://{secret}">]>'
           '<annotations><image id="0" name="&x;"/></annotations>')
    for name, text in (("bomb.xml", bomb), ("xxe.xml", xxe)):
        path = tmp_path / name
        path.write_text(text)
        with pytest.raises(SourceError, match=rf"{name}: malformed XML"):
            read_xml_task(path)
        with pytest.raises(SourceError, match=rf"{name}: malformed XML"):
            parse_file(path)
