"""Bad images among good ones are dropped and listed, not fatal; and ``--flag False`` never means
true in any command line.

The first half runs ``obdb lint`` and ``obdb split`` as subprocesses on the tiny data set with one
image of each kind of damage (truncated, zero bytes, a text file named ``.png``, a PNG header
claiming 100000 x 100000 pixels, pixel data that only a full decode finds broken). The second half
walks every parser of every command and checks each boolean option.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from helpers.lint_images import corrupt_png_pixels
from helpers.reliability import DAMAGE, OBDB, QUIET, run, run_parallel
from helpers.tiny_data import make_tiny_dataset, tiny_settings
from obdb.cli import annotate, db, lint, review, runner, split, sync, test_model
from obdb.cli.common import BoolAction, parse_bool
from obdb.settings import SettingsError, apply_overrides

HERE = Path(__file__).resolve().parent

SOURCE_REASONS = {"truncated": "corrupt or truncated image", "zero_bytes": "empty image file (0 bytes)",
                  "text_named_png": "not a readable image", "huge_header": "image too large to open safely"}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """12 frames, 5 of them damaged; ``obdb lint`` and ``obdb split`` run on it side by side."""
    root = tmp_path_factory.mktemp("mixed")
    data = make_tiny_dataset(root / "data")
    images = sorted((data / "images").glob("*.png"))
    damaged = {kind: images[1 + 2 * i] for i, kind in enumerate(DAMAGE)}
    for kind, path in damaged.items():
        DAMAGE[kind](path)
    damaged["pixels_corrupt"] = corrupt_png_pixels(images[9])
    folders = {}
    for command in ("lint", "split"):
        folders[command] = root / command
        folders[command].mkdir()
        (folders[command] / "settings.json").write_text(json.dumps(tiny_settings(data, folders[command])))
    outcomes = run_parallel(lambda c=c: run([*OBDB, c, "-f", str(folders[c] / "settings.json"), *QUIET])
                            for c in folders)
    return {"images": images, "damaged": damaged, "folders": folders, **dict(zip(folders, outcomes))}


def test_lint_names_every_damaged_file_and_fails(mixed: dict[str, Any]) -> None:
    out = mixed["lint"]
    assert out.code == 1 and "Traceback" not in out.stderr, out.text
    for kind, reason in SOURCE_REASONS.items():
        assert f"{mixed['damaged'][kind]}: {reason}" in out.stderr, (kind, out.text)
    assert "5 issue(s) at or above 'error'" in out.stdout
    report = json.loads((mixed["folders"]["lint"] / "train" / "lint" / "report.json").read_text())
    listed = {Path(i["path"]).name: i["rule"] for i in report["issues"] if i["severity"] == "error"}
    expected = {p.name: "source_skipped" for k, p in mixed["damaged"].items() if k != "pixels_corrupt"}
    assert listed == {**expected, mixed["damaged"]["pixels_corrupt"].name: "truncated"}
    assert report["counts"]["images_kept"] == 7


def test_split_drops_the_damaged_images_and_keeps_the_rest(mixed: dict[str, Any]) -> None:
    out = mixed["split"]
    assert out.code == 0, out.text
    save = mixed["folders"]["split"] / "train"
    manifests = list((save / "splits").glob("*.json"))
    assert len(manifests) == 1
    used = {image_id.split("/", 1)[1] for image_id in json.loads(manifests[0].read_text())["assignment"]}
    damaged = {p.name for p in mixed["damaged"].values()}
    assert used == {p.name for p in mixed["images"]} - damaged and len(used) == 7
    report = json.loads((save / "lint" / "report.json").read_text())
    assert {Path(i["path"]).name for i in report["issues"] if i["action"] == "dropped image"} == damaged


def test_a_png_named_jpg_is_kept(tmp_path: Path) -> None:
    """A wrong extension on a real image is only noted: PIL and training read images by content."""
    data = make_tiny_dataset(tmp_path / "data", videos=2, frames=2)
    xml = data / "annotations" / "gt_train_video00.xml"
    xml.write_text(xml.read_text().replace("video00_frame0000.png", "video00_frame0000.jpg"))
    shutil.move(data / "images" / "video00_frame0000.png", data / "images" / "video00_frame0000.jpg")
    (tmp_path / "settings.json").write_text(json.dumps(tiny_settings(data, tmp_path)))
    out = run([*OBDB, "lint", "-f", str(tmp_path / "settings.json"), "--fail-on", "warn", *QUIET])
    assert out.code == 0, out.text
    report = json.loads((tmp_path / "train" / "lint" / "report.json").read_text())
    assert [(i["rule"], Path(i["path"]).name) for i in report["issues"]] == [
        ("extension_mismatch", "video00_frame0000.jpg")]


# --------------------------------------------------------------------------- boolean options
# every parser with the smallest argument list it accepts
PARSERS: dict[str, tuple[argparse.ArgumentParser, list[str]]] = {
    "torch_model_runner.py": (runner.build_parser(), ["-f", "s.json"]),
    "test_model.py": (test_model.build_parser(), ["-m", "m.pt"]),
    "obdb lint": (lint.build_parser(), ["-f", "s.json"]),
    "obdb split": (split.build_parser(), ["-f", "s.json"]),
    "obdb review": (review.build_parser(), ["-f", "s.json"]),
    "obdb sync": (sync.build_parser(), []),
    "obdb db export": (db.build_parser(), ["export", "--out", "o"]),
    "obdb db import": (db.build_parser(), ["import", "p.json"]),
    **{f"auto_annotate.py {mode}": (annotate.build_parser(), [mode, *args]) for mode, args in {
        "folder": ["d", "-m", "m.pt"], "tasks": ["-m", "m.pt"], "upload-xml": ["d", "--images", "i"],
        "upload-gt": ["--annotations", str(HERE), "--images", str(HERE), "--progress", "false"],
        "missing": ["-m", "m.pt"], "status": []}.items()},
}

MAINS = {"auto_annotate.py upload-gt": annotate.main}


def options_of(parser: argparse.ArgumentParser, argv: list[str]) -> list[argparse.Action]:
    """The optional arguments of the (sub)command that ``argv`` selects."""
    actions = list(parser._actions)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            actions = options_of(action.choices[argv[0]], argv[1:])
    return [a for a in actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


def parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace | None:
    """The parsed arguments, or None when argparse refuses them (it exits with 2)."""
    try:
        return parser.parse_args(argv)
    except SystemExit as exit_info:
        assert exit_info.code == 2
        return None


@pytest.mark.parametrize("name", list(PARSERS))
def test_flag_false_never_means_true(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser, base = PARSERS[name]
    checked = 0
    for action in options_of(parser, base):
        flag = action.option_strings[0]
        valued = action.type is parse_bool or (isinstance(action, BoolAction) and action.nargs == "?")
        if isinstance(action, BoolAction) and action.negative:  # the --no-x twin: always false, no value
            args = parse(parser, [*base, flag])
            assert args is not None and getattr(args, action.dest) is False, flag
            assert parse(parser, [*base, flag, "true"]) is None or getattr(parse(parser, [*base, flag, "true"]),
                                                                          "overrides", None) == ["true"], flag
            checked += 1
            continue
        if valued:  # takes a value: "False" means false, anything unknown is refused
            for word, value in (("False", False), ("false", False), ("0", False), ("no", False), ("True", True)):
                args = parse(parser, [*base, flag, word])
                assert args is not None and getattr(args, action.dest) is value, (flag, word)
            assert parse(parser, [*base, flag, "maybe"]) is None
            checked += 1
        elif isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction, BoolAction)):
            # an on/off flag takes no value: "--flag False" must not switch it on unnoticed
            args = parse(parser, [*base, flag, "False"])
            if args is not None:  # "False" was taken as a settings override: it must be refused
                assert getattr(args, "overrides", None) == ["False"], flag
                if args.settings:
                    with pytest.raises(SettingsError, match="takes no value"):
                        apply_overrides({}, args.overrides)
                else:  # a command that also works without -f
                    capsys.readouterr()
                    assert MAINS[name]([*base, flag, "False"]) == 2, flag
                    assert "'False': key.path=value overrides change a settings file" in capsys.readouterr().err
            checked += 1
    capsys.readouterr()
    assert checked, f"{name}: no boolean option found (--progress at least)"

