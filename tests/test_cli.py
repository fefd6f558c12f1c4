"""The ``obdb`` command dispatches to the same code as the scripts in code/."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from obdb.cli.common import parse_bool
from obdb.cli.main import main

ROOT = Path(__file__).resolve().parents[1]


def test_usage_and_unknown_command(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "usage: obdb COMMAND" in capsys.readouterr().err
    assert main(["--help"]) == 0
    assert main(["trian"]) == 2
    assert "unknown command 'trian'" in capsys.readouterr().err


def test_subcommand_reaches_the_runner(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "-f", str(tmp_path / "missing.json")]) == 2
    assert "settings file not found" in capsys.readouterr().err


def test_review_command_is_listed_and_parses(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    assert "review" in capsys.readouterr().out  # help goes to stdout (obdb --help | less)
    with pytest.raises(SystemExit) as exit_info:
        main(["review", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert all(flag in out for flag in ("--folds", "--epochs", "--out", "--top"))


def test_test_model_report_flags_are_documented(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["test", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("-o DIR, --out DIR", "--show-case", "--num-disp", "--iou", "--score-threshold", "--no-plots",
                 "--metrics-json"):
        assert flag in out, flag


@pytest.mark.parametrize("text,value", [("False", False), ("no", False), ("0", False), ("TRUE", True), ("yes", True)])
def test_parse_bool(text: str, value: bool) -> None:
    assert parse_bool(text) is value


def test_test_model_refuses_missing_model(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "code" / "test_model.py"), "-m", str(tmp_path / "m.pt")],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "model file not found" in result.stderr


def test_test_model_refuses_a_pickle(tmp_path: Path) -> None:
    import torch

    bad = tmp_path / "model.pt"
    torch.save(torch.nn.Linear(2, 2), bad)  # a whole pickled module, as the original system saved
    result = subprocess.run([sys.executable, str(ROOT / "code" / "test_model.py"), "-m", str(bad),
                             "--annotations", str(tmp_path), "--images", str(tmp_path)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr and str(bad) in result.stderr


def test_test_model_refuses_overrides_without_a_settings_file(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    model = tmp_path / "model.pt"
    model.write_bytes(b"not read: the arguments are checked first")
    assert main(["test", "-m", str(model), "train.batch_size=2"]) == 2
    err = capsys.readouterr().err
    assert "train.batch_size=2" in err and "no -f SETTINGS" in err
