"""Nothing is uploaded to CVAT that is not a decodable image from inside the data root (issue 20,
point 1), and one bad image does not stop ``auto_annotate folder`` or ``test_model`` (point 9).

Image names in an XML or a data set that lead out of the image folder — ``../``, absolute paths
(``/etc/shadow``), a symlink pointing elsewhere — are refused before any of their bytes is read,
counted and listed; files inside the folder that are not images are left out the same way. The
fake CVAT server records every uploaded byte, so the tests check what really left the machine.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import obdb.annotate.uploads as uploads
from helpers.annotate import key_image
from helpers.reliability import png_header_only
from obdb.cli.annotate import main
from obdb.evaluation.predict import evaluate
from obdb.models import ModelSpec, build_detector, save_model
from obdb.records import ClassMap, ImageRecord

CLASSES = ClassMap(("red", "blue"))


def run(*args: str) -> int:
    return main([*args, "--progress", "false", "--log-level", "WARNING"])


def box_xml(names: list[str], task: str = "field") -> str:
    images = "\n".join(
        f'  <image id="{i}" name="{name}" width="64" height="48">'
        f'<box label="red" xtl="1" ytl="2" xbr="{10 + i}" ybr="12"/></image>' for i, name in enumerate(names))
    return (f'<?xml version="1.0" encoding="utf-8"?>\n<annotations><version>1.1</version>'
            f'<meta><task><name>{task}</name><labels><label><name>red</name></label></labels></task></meta>\n'
            f'{images}\n</annotations>\n')


@pytest.fixture()
def layout(tmp_path: Path) -> dict[str, Path]:
    """``data/images`` with two good images, a text file and a symlink out; a real PNG outside."""
    images = tmp_path / "data" / "images"
    key_image(images / "a.png", 1)
    key_image(images / "b.png", 2)
    (images / "notes.png").write_text("not an image, but inside the folder\n")
    secret = key_image(tmp_path / "outside" / "secret.png", 99, seed=7)
    (images / "link.png").symlink_to(secret)
    return {"root": tmp_path, "images": images, "secret": secret}


def outside_names(layout: dict[str, Path]) -> list[str]:
    return ["../../outside/secret.png", str(layout["secret"]), "link.png", "../../etc/passwd", "/etc/shadow",
            "../../../../../../../../etc/passwd"]


def uploaded_bytes(fake_cvat) -> list[bytes]:
    return [frame.data for task in fake_cvat.tasks.values() for frame in task.frames]


def forbidden_contents(layout: dict[str, Path]) -> list[bytes]:
    found = [layout["secret"].read_bytes()]
    for path in ("/etc/passwd", "/etc/shadow"):
        try:
            found.append(Path(path).read_bytes())
        except OSError:
            pass
    return [data for data in found if data]


@pytest.fixture()
def probed(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Every path the upload code asks ``probe_image`` about (the only place it reads pixels)."""
    seen: list[Path] = []
    real = uploads.probe_image

    def spy(path: Path):  # type: ignore[no-untyped-def]
        seen.append(Path(path))
        return real(path)

    monkeypatch.setattr(uploads, "probe_image", spy)
    return seen


def test_upload_xml_sends_only_images_from_inside_the_folder(layout: dict[str, Path], fake_cvat, cvat_env,
                                                             probed: list[Path], tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    names = ["a.png", *outside_names(layout), "notes.png", "b.png"]
    xml = tmp_path / "xml" / "field.xml"
    xml.parent.mkdir()
    xml.write_text(box_xml(names))
    assert run("upload-xml", str(xml), "--images", str(layout["images"]), "--out", str(tmp_path / "o")) == 0
    printed = capsys.readouterr().out
    (task,) = fake_cvat.tasks.values()
    assert [f.name for f in task.frames] == ["a.png", "b.png"]
    sent = uploaded_bytes(fake_cvat)
    assert sent == [(layout["images"] / "a.png").read_bytes(), (layout["images"] / "b.png").read_bytes()]
    for secret in forbidden_contents(layout):
        assert all(secret not in data for data in sent)
    # the shapes of the images left out are left out too; the kept ones keep their own boxes
    shapes = sorted((s["frame"], s["points"][2]) for s in fake_cvat.annotations(task.id)["shapes"])
    assert shapes == [(0, 10.0), (1, 10.0 + len(names) - 1)]
    assert "left out 7 image(s)" in printed and "outside the image folder" in printed
    # refused names were never opened: only files inside the image folder were probed
    images_root = layout["images"].resolve()
    assert probed and all(images_root in p.resolve().parents for p in probed)
    assert layout["secret"].resolve() not in {p.resolve() for p in probed}


def test_upload_gt_sends_only_images_from_inside_the_data_root(layout: dict[str, Path], fake_cvat, cvat_env,
                                                               tmp_path: Path) -> None:
    annotations = tmp_path / "ann" / "gt_field.xml"
    annotations.parent.mkdir()
    annotations.write_text(box_xml(["a.png", "../../outside/secret.png", "link.png", "b.png"], task="gt_field"))
    assert run("upload-gt", "--annotations", str(annotations), "--images", str(layout["images"]),
               "--out", str(tmp_path / "o")) == 0
    (task,) = fake_cvat.tasks.values()
    assert sorted(f.name for f in task.frames) == ["a.png", "b.png"]
    for secret in forbidden_contents(layout):
        assert all(secret not in data for data in uploaded_bytes(fake_cvat))


def test_upload_records_checks_every_record_against_the_roots(layout: dict[str, Path], fake_cvat,
                                                              probed: list[Path]) -> None:
    """Records from any source (MongoDB, a CVAT cache) pass the same gate: outside the data
    roots or not an image means not uploaded."""
    from obdb.cvat.push import RunOptions
    from obdb.cvat.connection import CvatCredentials, connect

    def record(path: Path, name: str) -> ImageRecord:
        return ImageRecord(name, path, 64, 48, np.array([[1, 1, 9, 9]]), ["red"], task="gt")

    records = [record(layout["images"] / "a.png", "a"), record(layout["secret"], "s"),
               record(layout["images"] / "link.png", "l"), record(layout["images"] / "notes.png", "n")]
    session = connect(CvatCredentials.from_env(fake_cvat.env))
    (plan,) = uploads.upload_records(session, records, ["red"], RunOptions(out_dir=layout["root"] / "o",
                                     progress=False), roots=[layout["images"]])
    (task,) = fake_cvat.tasks.values()
    assert [f.name for f in task.frames] == ["a.png"]
    assert any("left out 3 image(s)" in note for note in plan.notes)
    assert layout["secret"].resolve() not in {p.resolve() for p in probed}


# --------------------------------------------------------------------------- point 9: bad images
@pytest.fixture(scope="module")
def model_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = ModelSpec("resnet18", "faster_rcnn", num_classes=CLASSES.num_classes, min_size=64, max_size=96)
    folder = tmp_path_factory.mktemp("model")
    model, spec = build_detector(spec, weights_dir=folder / "no-weights")
    save_model(folder / "model.pt", model, spec, CLASSES)
    return folder / "model.pt"


def thin_image(path: Path, width: int = 5000, height: int = 2) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((height, width, 3), 120, dtype=np.uint8)).save(path)
    return path


def test_one_bad_image_does_not_stop_a_folder_run(model_file: Path, fake_cvat, cvat_env, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "plot 9"
    key_image(folder / "f1.png", 1)
    key_image(folder / "f2.png", 2)
    thin_image(folder / "thin.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "page.jpg").write_text("<!DOCTYPE html><html><body>404</body></html>")
    good = (folder / "f1.png").read_bytes()
    (folder / "cut.png").write_bytes(good[: len(good) // 2])
    (folder / "bomb.png").write_bytes(png_header_only(100_000, 100_000))
    args = ["folder", str(folder), "-m", str(model_file), "-t", "0.0", "--max-detections", "3", "--device", "cpu",
            "--out", str(tmp_path / "out")]
    assert run(*args) == 0
    printed = capsys.readouterr().out
    task = fake_cvat.tasks[fake_cvat.task_id("plot 9")]
    assert sorted(f.name for f in task.frames) == ["f1.png", "f2.png", "thin.png"]
    assert "left out 4 image(s)" in printed
    for name in ("empty.png", "page.jpg", "cut.png", "bomb.png"):
        assert name in printed
    shapes = fake_cvat.annotations(task.id)["shapes"]
    thin_frame = [f.name for f in task.frames].index("thin.png")
    for shape in shapes:  # boxes on the thin image stay inside it (its padding is not part of it)
        if shape["frame"] == thin_frame:
            x1, y1, x2, y2 = shape["points"]
            assert 0 <= x1 <= x2 <= 5000 and 0 <= y1 <= y2 <= 2
    before = fake_cvat.annotations(task.id)
    assert run(*args) == 0  # the rerun works and adds nothing
    assert fake_cvat.annotations(task.id) == before


def test_a_5000_by_2_image_does_not_crash_evaluation(model_file: Path, tmp_path: Path) -> None:
    from obdb.models import load_model

    model, _spec, class_map, _header = load_model(model_file, map_location=torch.device("cpu"))
    records = [ImageRecord("thin", thin_image(tmp_path / "thin.png"), 5000, 2, np.array([[10, 0, 400, 2]]), ["red"]),
               ImageRecord("tall", thin_image(tmp_path / "tall.png", 3, 700), 3, 700, np.zeros((0, 4)), []),
               ImageRecord("ok", key_image(tmp_path / "ok.png", 3), 64, 48, np.array([[1, 1, 20, 20]]), ["blue"])]
    torch.manual_seed(0)
    metrics = evaluate(model, records, class_map, device="cpu", progress=False)
    assert "map" in metrics


# --------------------------------------------------------------------------- lint gates the run
def test_lint_drops_images_outside_the_data_root_without_opening_them(layout: dict[str, Path],
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever a source lets through, the run's lint stage (before the split, its report's
    thumbnails, training and evaluation) drops records whose file lies outside the data root,
    even with ``lint.enabled`` off, and never reads them."""
    import obdb.lint.images as lint_images
    from obdb.lint import lint_for_run
    from obdb.records import AnnotationSet
    from obdb.settings import parse_settings

    opened: list[Path] = []
    real = lint_images.inspect_image
    monkeypatch.setattr(lint_images, "inspect_image", lambda p, **kw: (opened.append(Path(p)), real(p, **kw))[1])

    def records() -> AnnotationSet:
        def rec(path: Path, name: str) -> ImageRecord:
            return ImageRecord(f"t/{name}", path, 64, 48, np.array([[1, 1, 9, 9]]), ["red"], task="t")
        return AnnotationSet([rec(layout["images"] / "a.png", "a"), rec(layout["secret"], "s"),
                              rec(layout["images"] / "link.png", "l"), rec(Path("/etc/passwd"), "p")])

    for enabled in (True, False):
        settings = parse_settings({"variants": ["resnet18"], "save_dir": str(layout["root"] / "train"),
                                   "dataset_dir": str(layout["root"] / "data"),
                                   "data": {"images_dir": str(layout["images"])}, "lint": {"enabled": enabled}})
        annotations = records()
        result = lint_for_run(annotations, settings, save_dir=layout["root"] / "train", progress=False)
        assert [r.image_id for r in result.records] == ["t/a"]  # a new list: the loaded set is not changed
        assert sorted(i.image_id for i in result.issues if i.rule == "outside_root") == ["t/l", "t/p", "t/s"]
    assert opened and all(p.resolve().parent == layout["images"].resolve() for p in opened)
