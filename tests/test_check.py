"""Issue 14: ``--check`` fails (exit 2) wherever the run would fail before training, and writes
nothing where it passes."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import pytest

from obdb.cli.runner import main

Writer = Callable[..., Path]


def check(path: Path, *extra: str) -> int:
    return main(["-f", str(path), "--check", "--progress", "false", *extra])


def test_check_passes_and_writes_nothing(settings_file: Writer, tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = settings_file()
    assert check(path) == 0
    assert "settings OK: 1 variant(s) (resnet18), 12 usable image(s)" in capsys.readouterr().out
    assert not (tmp_path / "train").exists()


def test_check_fails_on_unknown_variant(settings_file: Writer, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert check(settings_file(), "--variants", "resnet18,resnet99") == 2
    assert "--variants names ['resnet99']" in capsys.readouterr().err


def test_check_fails_without_usable_images(settings_file: Writer, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    path = settings_file()
    assert check(path, f"data.images_dir={tmp_path / 'empty'}") == 2
    assert "no usable images" in capsys.readouterr().err


def test_check_fails_where_the_split_cannot_be_made(settings_file: Writer,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    assert check(settings_file(annotations_list=["gt_train_video00"])) == 2  # one video: one group
    assert "needs at least 2 groups" in capsys.readouterr().err
    assert check(settings_file(annotations_list=["gt_train_video00"], split={"method": "tsne"})) == 2


def test_check_fails_on_a_leaking_split_with_fail_on_leak(settings_file: Writer, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = settings_file(split={"method": "random", "val_fraction": 0.5, "fail_on_leak": True})
    assert check(path) == 2
    assert "neighbouring frame pair(s)" in capsys.readouterr().err
    assert check(path, "split.fail_on_leak=false") == 0


def test_check_fails_on_placeholder_parameters_without_a_search(settings_file: Writer, tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    placeholder = {k: False for k in ("lr", "momentum", "weight_decay", "step_size", "gamma")}
    path = settings_file(resnet18={"run_hpo": 0, "optimal_hpo_settings": placeholder})
    assert check(path) == 2
    assert "optimal_hpo_settings are all false" in capsys.readouterr().err
    assert check(path, "resnet18.run_hpo=1") == 0


def test_check_fails_when_no_box_is_in_the_class_map(settings_file: Writer, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert check(settings_file(default_class_map=["Background", "green"])) == 2
    assert "no boxes with the labels ['green'] remain" in capsys.readouterr().err


def test_runner_stops_before_training_on_a_leaking_split(settings_file: Writer, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path = settings_file(split={"method": "random", "val_fraction": 0.5, "fail_on_leak": True})
    assert main(["-f", str(path), "--progress", "false"]) == 2
    assert "LEAKS" in capsys.readouterr().err
    save_dir = tmp_path / "train"
    assert list((save_dir / "splits").glob("*.json"))  # the manifest and report are there to inspect
    assert not (save_dir / "resnet18").exists()  # nothing trained
