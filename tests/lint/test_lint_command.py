"""``obdb lint`` exit codes, and lint inside the runner's data stage and ``obdb split`` on the tiny
data set with planted problems."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from helpers.lint_images import corrupt_png_pixels
from helpers.tiny_data import make_tiny_dataset, tiny_settings
from obdb import pipeline
from obdb.cli.main import main
from obdb.imageio import probe_image
from obdb.settings import load_settings

BAD = "video01_frame0001.png"
FAST_SPLIT = {"method": "group", "val_fraction": 0.25, "tsne": {"features": "pixels", "clusters": 2}}


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    """A fresh tiny data set (12 frames in 4 videos) that a test may damage."""
    return make_tiny_dataset(tmp_path / "data")


def write_settings(data: Path, tmp_path: Path, **changes: Any) -> Path:
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(tiny_settings(data, tmp_path, split=FAST_SPLIT, **changes)))
    return path


def plant_corrupt_frame(data: Path) -> Path:
    """Damage one frame so that the loader's quick check passes and only a full decode fails."""
    path = corrupt_png_pixels(data / "images" / BAD)
    assert isinstance(probe_image(path), tuple)
    return path


def lint_cli(path: Path, *extra: str) -> int:
    return main(["lint", "-f", str(path), "--progress", "false", *extra])


def test_clean_data_exits_0(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert lint_cli(write_settings(data, tmp_path)) == 0
    out = capsys.readouterr().out
    assert "lint: 12 of 12 image(s) kept (0 dropped)" in out
    report = json.loads((tmp_path / "train" / "lint" / "report.json").read_text())
    assert report["ok"] is True and report["counts"]["images_kept"] == 12


def test_error_exits_1_and_report_goes_to_out(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    plant_corrupt_frame(data)
    out_dir = tmp_path / "elsewhere"
    assert lint_cli(write_settings(data, tmp_path), "--out", str(out_dir)) == 1
    out = capsys.readouterr().out
    assert "truncated: 1 (1 dropped image) e.g. " + BAD in out and "1 issue(s) at or above 'error'" in out
    report = json.loads((out_dir / "report.json").read_text())
    assert [(i["rule"], Path(i["path"]).name) for i in report["issues"]] == [("truncated", BAD)]
    assert (out_dir / "report.md").is_file() and not (tmp_path / "train" / "lint").exists()


def test_fail_on_decides_for_warnings(data: Path, tmp_path: Path) -> None:
    images = data / "images"
    shutil.copyfile(images / "video00_frame0000.png", images / "video02_frame0000.png")  # an exact duplicate
    path = write_settings(data, tmp_path)
    assert lint_cli(path) == 0
    assert lint_cli(path, "--fail-on", "warn") == 1
    report = json.loads((tmp_path / "train" / "lint" / "report.json").read_text())
    assert [(i["rule"], i["image_id"]) for i in report["issues"]] == [
        ("exact_duplicate", "gt_train_video02/video02_frame0000.png")]


def test_nothing_usable_exits_1(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert lint_cli(write_settings(data, tmp_path), "lint.min_image_size=200") == 1
    assert "no usable images left after the data set checks (images removed by rule: too_small 12)" in \
        capsys.readouterr().out


def test_usage_and_settings_errors_exit_2(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_settings(data, tmp_path)
    assert lint_cli(path, "lint.min_image_sise=20") == 2
    assert "min_image_sise" in capsys.readouterr().err
    assert lint_cli(tmp_path / "missing.json") == 2
    with pytest.raises(SystemExit) as exit_info:
        lint_cli(path, "--fail-on", "info")
    assert exit_info.value.code == 2


def test_prepare_data_drops_exactly_the_planted_image(data: Path, tmp_path: Path) -> None:
    plant_corrupt_frame(data)
    settings = load_settings(write_settings(data, tmp_path))
    paths = pipeline.run_paths(settings)
    prepared = pipeline.prepare_data(settings, paths, progress=False)
    used = {r.image_id for r in prepared.train + prepared.val}
    everything = {f"gt_train_video{v:02d}/video{v:02d}_frame{f:04d}.png" for v in range(4) for f in range(3)}
    assert used == everything - {f"gt_train_video01/{BAD}"} == set(prepared.split.assignment)
    report = json.loads((paths.save_dir / "lint" / "report.json").read_text())
    assert [(i["rule"], i["image_id"]) for i in report["issues"]] == [("truncated", f"gt_train_video01/{BAD}")]
    # obdb split goes through the same lint and makes the same split
    assert main(["split", "-f", str(tmp_path / "settings.json"), "--progress", "false"]) == 0
    assert (paths.save_dir / "splits" / f"{prepared.split.hash}.json").is_file()
    assert len(list((paths.save_dir / "splits").glob("*.json"))) == 1


def test_prepare_data_with_nothing_usable_is_a_run_error(data: Path, tmp_path: Path) -> None:
    settings = load_settings(write_settings(data, tmp_path, lint={"max_image_size": 64}))
    with pytest.raises(pipeline.RunError, match=r"no usable images left .*too_large 12.*report\.json"):
        pipeline.prepare_data(settings, pipeline.run_paths(settings), progress=False)


def test_lint_can_be_switched_off(data: Path, tmp_path: Path) -> None:
    shutil.copyfile(data / "images" / "video00_frame0000.png", data / "images" / "video02_frame0000.png")
    settings = load_settings(write_settings(data, tmp_path, lint={"enabled": False}))
    prepared = pipeline.prepare_data(settings, pipeline.run_paths(settings), progress=False)
    assert len(prepared.train) + len(prepared.val) == 12
    assert not (tmp_path / "train" / "lint").exists()
