"""Tests for the local annotation source (CVAT XML, COCO JSON, Pascal VOC) — no torch needed."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from obdb.records import AnnotationSet
from obdb.sources.contract import Source, SourceError
from obdb.sources.cvat_xml import CvatBox, CvatImage, cvat_xml_text
from obdb.sources.driver import LoadOptions, load as load_source
from obdb.sources.local import LocalSource, load_local

# --------------------------------------------------------------------------- helpers / fixtures


def make_image(path: Path, size: tuple[int, int] = (64, 48), fmt: str = "PNG") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (40, 120, 60)).save(path, format=fmt)
    return path


def cvat_xml(task: str | None, images: list[str], *, meta_kind: str = "task") -> str:
    """CVAT for images 1.1 document; ``images`` are pre-rendered <image> elements."""
    meta = "" if task is None else f"<meta><{meta_kind}><id>1</id><name>{task}</name></{meta_kind}></meta>"
    return f'<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>{meta}\n' \
           + "\n".join(images) + "\n</annotations>\n"


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    """A data folder with images/ (a.png, b.png, c.png 64x48) and an empty annotations/."""
    for name in ("a.png", "b.png", "c.png"):
        make_image(tmp_path / "images" / name)
    (tmp_path / "annotations").mkdir()
    return tmp_path


def load(paths, data: Path, options: LoadOptions | None = None, **kwargs) -> AnnotationSet:
    kwargs.setdefault("progress", False)
    if options is not None:
        return load_source(LocalSource(paths, data / "images"), options, progress=kwargs["progress"])
    return load_local(paths, images_dir=data / "images", **kwargs)


# --------------------------------------------------------------------------- CVAT XML


def test_cvat_boxes_and_polygons(data: Path) -> None:
    xml = write(data / "annotations" / "export.xml", cvat_xml("my task", [
        '<image id="3" name="a.png" width="64" height="48">'
        '<box label="Tree" occluded="1" xtl="1" ytl="2" xbr="11.5" ybr="22"/>'
        '<polygon label="Dead" points="10,5;30,8;20,25"/>'
        '<tag label="daytime"/>'
        "</image>",
        '<image id="4" name="b.png" width="64" height="48"/>',
    ]))
    result = load(xml, data)
    assert [r.image_id for r in result.records] == ["my task/a.png", "my task/b.png"]
    a, b = result.records
    np.testing.assert_allclose(a.boxes, [[1, 2, 11.5, 22], [10, 5, 30, 25]])
    assert a.labels == ["Tree", "Dead"]
    assert a.boxes.dtype == np.float32
    assert (a.frame, b.frame) == (3, 4)
    assert a.task == "my task" and a.group == "my_task"  # group: the task's recording name (issue 14)
    assert (a.width, a.height) == (64, 48)
    assert a.path == data / "images" / "a.png"
    assert a.meta["occluded"] == [True, False] and a.meta["format"] == "cvat"
    assert len(b.boxes) == 0 and b.labels == []
    assert result.skipped == [] and result.dropped_boxes == 0
    assert result.label_names() == ["Tree", "Dead"]


def test_cvat_job_export_and_file_stem_task_names(data: Path) -> None:
    job = write(data / "annotations" / "job_7.xml",
                cvat_xml("job task", ['<image id="0" name="a.png" width="64" height="48"/>'], meta_kind="job"))
    bare = write(data / "annotations" / "no_meta.xml",
                 cvat_xml(None, ['<image id="0" name="b.png" width="64" height="48"/>']))
    result = load([job, bare], data)
    assert [r.task for r in result.records] == ["job task", "no_meta"]


def test_rotated_box_and_ellipse_become_enclosing_boxes(data: Path) -> None:
    xml = write(data / "annotations" / "rot.xml", cvat_xml("t", [
        '<image id="0" name="a.png" width="64" height="48">'
        '<box label="T" xtl="10" ytl="20" xbr="30" ybr="24" rotation="90"/>'
        '<ellipse label="T" cx="30" cy="20" rx="5" ry="3"/>'
        "</image>"]))
    record = load(xml, data).records[0]
    np.testing.assert_allclose(record.boxes, [[18, 12, 22, 32], [25, 17, 35, 23]], atol=1e-4)


def test_clipping_and_degenerate_boxes_are_counted(data: Path, caplog: pytest.LogCaptureFixture) -> None:
    xml = write(data / "annotations" / "clip.xml", cvat_xml("t", [
        '<image id="0" name="a.png" width="64" height="48">'
        '<box label="T" xtl="-5" ytl="-3" xbr="10" ybr="10"/>'       # clipped to 0,0,10,10
        '<box label="T" xtl="60" ytl="40" xbr="90" ybr="70"/>'       # clipped to 60,40,64,48
        '<box label="T" xtl="70" ytl="10" xbr="90" ybr="20"/>'       # fully outside -> dropped
        '<box label="T" xtl="5" ytl="5" xbr="5.5" ybr="20"/>'        # 0.5 px wide -> dropped
        '<box label="T" xtl="63.5" ytl="1" xbr="80" ybr="9"/>'       # 0.5 px left after clipping
        "</image>"]))
    with caplog.at_level(logging.WARNING, logger="obdb.sources"):
        result = load(xml, data)
    np.testing.assert_allclose(result.records[0].boxes, [[0, 0, 10, 10], [60, 40, 64, 48]])
    assert result.dropped_boxes == 3
    assert "dropped 3 degenerate box" in caplog.text


def test_non_box_shapes_are_ignored_with_a_count(data: Path, caplog: pytest.LogCaptureFixture) -> None:
    xml = write(data / "annotations" / "shapes.xml", cvat_xml("t", [
        '<image id="0" name="a.png" width="64" height="48">'
        '<polyline label="T" points="1,1;5,5"/><points label="T" points="3,3"/>'
        '<polyline label="T" points="2,2;6,6"/><box label="T" xtl="1" ytl="1" xbr="5" ybr="5"/>'
        "</image>"]))
    with caplog.at_level(logging.WARNING, logger="obdb.sources"):
        result = load(xml, data)
    assert len(result.records[0].boxes) == 1  # the one-point "points" shape is a degenerate box
    assert "skipped 2 polyline shape(s)" in caplog.text and result.dropped_boxes == 1


def test_size_mismatch_warns_and_uses_real_size(data: Path, caplog: pytest.LogCaptureFixture) -> None:
    xml = write(data / "annotations" / "size.xml", cvat_xml("t", [
        '<image id="0" name="a.png" width="640" height="480">'
        '<box label="T" xtl="10" ytl="10" xbr="600" ybr="400"/></image>']))
    with caplog.at_level(logging.WARNING, logger="obdb.sources"):
        record = load(xml, data).records[0]
    assert (record.width, record.height) == (64, 48)
    np.testing.assert_allclose(record.boxes, [[10, 10, 64, 48]])
    assert "640x480" in caplog.text and "64x48" in caplog.text


def test_image_name_with_folder_falls_back_to_basename(data: Path) -> None:
    xml = write(data / "annotations" / "dirs.xml", cvat_xml("t", [
        '<image id="0" name="session1/cam0/a.png" width="64" height="48"/>',
        '<image id="1" name="session1\\b.png" width="64" height="48"/>']))
    result = load(xml, data)
    assert [r.path.name for r in result.records] == ["a.png", "b.png"]
    assert result.records[0].image_id == "t/session1/cam0/a.png"


def test_cvat_video_export_is_rejected(data: Path) -> None:
    xml = write(data / "annotations" / "video.xml",
                '<annotations><version>1.1</version><track id="0" label="T"/></annotations>')
    with pytest.raises(SourceError, match="CVAT for images"):
        load(xml, data)


def test_writer_round_trips(data: Path) -> None:
    text = cvat_xml_text("rt", ["Tree"], [CvatImage(0, "a.png", 64, 48, [CvatBox("Tree", 1, 2, 30, 40)])])
    xml = write(data / "annotations" / "rt.xml", text)
    record = load(xml, data).records[0]
    assert record.task == "rt" and record.labels == ["Tree"]
    np.testing.assert_allclose(record.boxes, [[1, 2, 30, 40]])


# --------------------------------------------------------------------------- COCO / VOC


def test_coco_json(data: Path) -> None:
    coco = {
        "images": [{"id": 7, "file_name": "a.png", "width": 64, "height": 48},
                   {"id": 9, "file_name": "b.png", "width": 64, "height": 48}],
        "categories": [{"id": 1, "name": "Tree"}, {"id": 2, "name": "Dead"}],
        "annotations": [
            {"id": 1, "image_id": 7, "category_id": 1, "bbox": [2, 3, 10, 20], "iscrowd": 0},
            {"id": 2, "image_id": 7, "category_id": 2, "bbox": [50, 40, 30, 30]},          # clipped
            {"id": 3, "image_id": 7, "category_id": 1, "bbox": [1, 1, 5, 5], "iscrowd": 1},  # crowd
            {"id": 4, "image_id": 9, "category_id": 2, "segmentation": [[1, 1, 9, 2, 4, 12]]},
        ],
    }
    path = write(data / "annotations" / "coco_val.json", json.dumps(coco))
    result = load(path, data)
    a, b = result.records
    assert a.image_id == "coco_val/a.png" and a.task == "coco_val" and a.frame == 7
    np.testing.assert_allclose(a.boxes, [[2, 3, 12, 23], [50, 40, 64, 48]])
    assert a.labels == ["Tree", "Dead"] and a.meta["format"] == "coco"
    np.testing.assert_allclose(b.boxes, [[1, 1, 9, 12]])


def test_coco_unknown_category_is_an_error(data: Path) -> None:
    coco = {"images": [{"id": 1, "file_name": "a.png"}], "categories": [],
            "annotations": [{"id": 5, "image_id": 1, "category_id": 3, "bbox": [0, 0, 1, 1]}]}
    path = write(data / "annotations" / "bad.json", json.dumps(coco))
    with pytest.raises(SourceError, match=r"bad\.json.*category_id 3"):
        load(path, data)


def test_pascal_voc(data: Path) -> None:
    make_image(data / "images" / "tile.jpg", (100, 80), fmt="JPEG")
    voc = write(data / "annotations" / "tile.xml", """
        <annotation><folder>x</folder><filename>some/where/tile.jpg</filename>
          <size><width>100</width><height>80</height><depth>3</depth></size>
          <object><name>Tree</name><difficult>1</difficult>
            <bndbox><xmin>10</xmin><ymin>20</ymin><xmax>30</xmax><ymax>200</ymax></bndbox></object>
          <object><name>Alive</name>
            <bndbox><xmin>50.5</xmin><ymin>5</ymin><xmax>60</xmax><ymax>15</ymax></bndbox></object>
        </annotation>""")
    result = load(voc, data)
    (record,) = result.records
    assert record.image_id == "tile/some/where/tile.jpg" and record.task == "tile" and record.frame is None
    np.testing.assert_allclose(record.boxes, [[10, 20, 30, 80], [50.5, 5, 60, 15]])
    assert record.labels == ["Tree", "Alive"] and record.meta["difficult"] == [True, False]


def test_folder_mixes_formats_sorted_and_dedupes(data: Path) -> None:
    ann = data / "annotations"
    write(ann / "b_cvat.xml", cvat_xml("b_task", ['<image id="0" name="b.png" width="64" height="48"/>']))
    write(ann / "a_coco.json", json.dumps({"images": [{"id": 1, "file_name": "a.png"}],
                                           "annotations": [], "categories": []}))
    write(ann / "notes.txt", "not an annotation")
    result = load([ann, ann / "b_cvat.xml"], data)
    assert [r.task for r in result.records] == ["a_coco", "b_task"]


# --------------------------------------------------------------------------- bad images


def test_bad_images_are_skipped_and_listed(data: Path, caplog: pytest.LogCaptureFixture) -> None:
    images = data / "images"
    (images / "empty.png").write_bytes(b"")
    (images / "text.jpg").write_text("this is not a JPEG")
    full = make_image(images / "full.png", (200, 150)).read_bytes()
    (images / "cut.png").write_bytes(full[: len(full) // 2])
    make_image(images / "cut.jpg", (200, 150), fmt="JPEG")
    jpg = (images / "cut.jpg").read_bytes()
    (images / "cut.jpg").write_bytes(jpg[:-40])
    names = ["a.png", "missing.png", "empty.png", "text.jpg", "cut.png", "cut.jpg"]
    xml = write(data / "annotations" / "bad.xml", cvat_xml("t", [
        f'<image id="{i}" name="{n}" width="64" height="48"><box label="T" xtl="1" ytl="1" xbr="9" ybr="9"/></image>'
        for i, n in enumerate(names)]))
    with caplog.at_level(logging.WARNING, logger="obdb.sources"):
        result = load(xml, data)
    assert [r.image_id for r in result.records] == ["t/a.png"]
    reasons = {Path(s.path).name: s.reason for s in result.skipped}
    assert set(reasons) == set(names[1:])
    assert "not found" in reasons["missing.png"]
    assert "0 bytes" in reasons["empty.png"]
    assert "not a readable image" in reasons["text.jpg"]
    assert "truncated" in reasons["cut.png"] and "truncated" in reasons["cut.jpg"]
    assert "skipped 5 image(s)" in caplog.text


# --------------------------------------------------------------------------- task selection


@pytest.fixture()
def two_tasks(data: Path) -> list[Path]:
    ann = data / "annotations"
    return [write(ann / "1.xml", cvat_xml("gt_val_A", ['<image id="0" name="a.png" width="64" height="48"/>'])),
            write(ann / "2.xml", cvat_xml("gt_val_A_2", ['<image id="0" name="b.png" width="64" height="48"/>'])),
            write(ann / "3.xml", cvat_xml("other", ['<image id="0" name="c.png" width="64" height="48"/>']))]


def test_task_selection_is_exact(data: Path, two_tasks: list[Path]) -> None:
    result = load(data / "annotations", data, tasks=["gt_val_A"])
    assert [r.image_id for r in result.records] == ["gt_val_A/a.png"]
    result = load(data / "annotations", data, tasks=["gt_val_A_2", "other"])
    assert [r.task for r in result.records] == ["gt_val_A_2", "other"]
    assert len(load(data / "annotations", data, tasks=[]).records) == 3


def test_missing_task_is_an_error_listing_available(data: Path, two_tasks: list[Path]) -> None:
    with pytest.raises(SourceError) as info:
        load(data / "annotations", data, tasks=["gt_val_A", "gt_val"])
    message = str(info.value)
    assert "['gt_val']" in message and "gt_val_A_2" in message and "other" in message


def test_duplicate_task_names_are_an_error(data: Path) -> None:
    ann = data / "annotations"
    row = ['<image id="0" name="a.png" width="64" height="48"/>']
    write(ann / "x.xml", cvat_xml("same", row))
    write(ann / "y.xml", cvat_xml("same", row))
    with pytest.raises(SourceError, match="duplicate image id 'same/a.png'"):
        load(ann, data)


# --------------------------------------------------------------------------- malformed input


def test_malformed_xml_names_file_and_line(data: Path) -> None:
    xml = write(data / "annotations" / "broken.xml",
                '<annotations>\n<image id="0" name="a.png">\n<box label="T"\n</annotations>\n')
    with pytest.raises(SourceError, match=r"broken\.xml: malformed XML at line 4"):
        load(xml, data)


def test_malformed_json_names_file_and_line(data: Path) -> None:
    path = write(data / "annotations" / "broken.json", '{"images": [],\n "annotations": [\n}')
    with pytest.raises(SourceError, match=r"broken\.json: malformed JSON at line 3"):
        load(path, data)


@pytest.mark.parametrize("name, text", [("odd.xml", "<foo/>"), ("odd.json", '{"a": 1}'),
                                        ("odd.xml", "plain text"), ("odd.json", "")])
def test_unknown_format_names_file(data: Path, name: str, text: str) -> None:
    path = write(data / "annotations" / name, text)
    with pytest.raises(SourceError, match=name.replace(".", r"\.")):
        load(path, data)


def test_missing_paths_and_bad_regex_are_errors(data: Path) -> None:
    with pytest.raises(SourceError, match="does not exist"):
        load(data / "nope.xml", data)
    with pytest.raises(SourceError, match="no annotation files"):
        load(data / "annotations", data)
    xml = write(data / "annotations" / "ok.xml", cvat_xml("t", []))
    with pytest.raises(SourceError, match="group_regex"):
        load(xml, data, group_regex="(")
    with pytest.raises(SourceError, match="images folder"):
        load_local(xml, images_dir=data / "nowhere", progress=False)


# --------------------------------------------------------------------------- options


@pytest.fixture()
def labelled(data: Path) -> Path:
    return write(data / "annotations" / "lab.xml", cvat_xml("lab", [
        '<image id="0" name="a.png" width="64" height="48">'
        '<box label="Dead" xtl="1" ytl="1" xbr="9" ybr="9"/><box label="Alive" xtl="2" ytl="2" xbr="9" ybr="9"/>'
        '<box label="Bird" xtl="3" ytl="3" xbr="9" ybr="9"/></image>',
        '<image id="1" name="b.png" width="64" height="48"><box label="Bird" xtl="3" ytl="3" xbr="9" ybr="9"/></image>',
        '<image id="2" name="c.png" width="64" height="48"/>']))


def test_label_map_renames_and_drops(data: Path, labelled: Path) -> None:
    result = load(labelled, data, label_map={"Dead": "Tree", "Alive": "Tree", "Bird": None})
    assert [r.labels for r in result.records] == [["Tree", "Tree"], [], []]
    assert result.dropped_boxes == 0  # label drops are deliberate, not degenerate boxes
    result = load(labelled, data, label_map={"Bird": ""}, keep_empty=False)
    assert [r.image_id for r in result.records] == ["lab/a.png"]


def test_keep_empty(data: Path, labelled: Path) -> None:
    assert len(load(labelled, data, keep_empty=True).records) == 3
    assert [r.image_id for r in load(labelled, data, keep_empty=False).records] == ["lab/a.png", "lab/b.png"]


def test_group_regex(data: Path) -> None:
    for name in ("vid1_f0001.png", "vid1_f0002.png", "vid2_f0001.png", "loose.png"):
        make_image(data / "images" / name)
    xml = write(data / "annotations" / "g.xml", cvat_xml("gtask", [
        f'<image id="{i}" name="clips/{n}" width="64" height="48"/>'
        for i, n in enumerate(["vid1_f0001.png", "vid1_f0002.png", "vid2_f0001.png", "loose.png"])]))
    groups = [r.group for r in load(xml, data, group_regex=r"^(vid\d+)_f").records]
    assert groups == ["vid1", "vid1", "vid2", "gtask"]
    groups = [r.group for r in load(xml, data, group_regex=r"^vid\d+").records]  # no group: whole match
    assert groups == ["vid1", "vid1", "vid2", "gtask"]
    assert {r.group for r in load(xml, data).records} == {"gtask"}


def test_local_source_wraps_load_local(data: Path, labelled: Path) -> None:
    source = LocalSource(annotations=[labelled], images_dir=data / "images")
    assert isinstance(source, Source)
    result = load_source(source, LoadOptions(keep_empty=False), progress=False)
    assert [r.image_id for r in result.records] == ["lab/a.png", "lab/b.png"]


# --------------------------------------------------------------------------- containment, proposals, skipped shapes


def test_names_outside_the_images_folder_are_skipped_unopened(data: Path, tmp_path: Path, monkeypatch,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    from obdb.sources import driver

    secret = make_image(tmp_path / "secret.png")
    (data / "images" / "link.png").symlink_to(secret)
    names = ["a.png", "../secret.png", str(secret), "link.png", "sub\\..\\..\\secret.png"]
    xml = write(data / "annotations" / "out.xml", cvat_xml("t", [
        f'<image id="{i}" name="{n}" width="64" height="48"><box label="T" xtl="1" ytl="1" xbr="9" ybr="9"/></image>'
        for i, n in enumerate(names)]))
    opened: list[Path] = []
    monkeypatch.setattr(driver, "probe_image", lambda path: opened.append(path) or (64, 48))
    with caplog.at_level(logging.WARNING, logger="obdb.sources"):
        result = load(xml, data)
    assert [r.image_id for r in result.records] == ["t/a.png"] and opened == [data / "images" / "a.png"]
    assert sorted(s.path for s in result.skipped) == sorted(names[1:])
    assert all("outside the data root" in s.reason or "absolute path" in s.reason for s in result.skipped)
    assert "skipped 4 image name(s) outside the data root (never opened)" in caplog.text


def test_proposals_left_out_are_counted_and_frames_with_skipped_shapes_are_no_negatives(
        data: Path, monkeypatch, caplog: pytest.LogCaptureFixture) -> None:
    from obdb.sources import driver

    asked = []

    def human_only(source, attributes, include_auto):
        asked.append((source, dict(attributes), include_auto))
        return source != "auto"

    monkeypatch.setattr(driver, "is_ground_truth", human_only)
    xml = write(data / "annotations" / "p.xml", cvat_xml("t", [
        '<image id="0" name="a.png" width="64" height="48">'
        '<box label="T" source="manual" xtl="1" ytl="1" xbr="9" ybr="9"/>'
        '<box label="T" source="auto" xtl="2" ytl="2" xbr="9" ybr="9">'
        '<attribute name="review">rejected</attribute></box>'
        "</image>",
        '<image id="1" name="b.png" width="64" height="48">'
        '<box label="T" source="auto" xtl="1" ytl="1" xbr="9" ybr="9"/>'
        "</image>",
        '<image id="2" name="c.png" width="64" height="48"><polygon label="T" points="1,1;9,1;9,9"/></image>']))
    with caplog.at_level(logging.INFO, logger="obdb.sources"):
        result = load(xml, data, options=LoadOptions(polygons="skip", include_auto="accepted"))
    # b.png: only a proposal, so a negative as people annotated it; c.png: its polygon is skipped, so left out
    assert [(r.image_id, len(r.boxes)) for r in result.records] == [("t/a.png", 1), ("t/b.png", 0)]
    assert ("auto", {"review": "rejected"}, "accepted") in asked
    assert "left out 2 model proposal(s) not taken as ground truth (include_auto = accepted)" in caplog.text
    assert "left out 1 frame(s) whose every shape was skipped" in caplog.text
