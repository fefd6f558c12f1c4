"""One command-line convention across every command (README, "Command-line conventions")."""
from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from obdb.cli.common import BoolAction, add_bool, guarded
from obdb.cli.main import COMMANDS, main

ROOT = Path(__file__).resolve().parents[1]


def all_parsers() -> list[tuple[str, argparse.ArgumentParser]]:
    """Every command's parser and every subcommand's parser."""
    found = []
    for name, (module_name, _) in COMMANDS.items():
        parser = importlib.import_module(module_name).build_parser(f"obdb {name}")
        found.append((name, parser))
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                found.extend((f"{name} {sub}", p) for sub, p in action.choices.items())
    return found


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.option_strings and not isinstance(a, argparse._HelpAction)]


@pytest.mark.parametrize("command,parser", all_parsers(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_option_follows_the_convention(command: str, parser: argparse.ArgumentParser) -> None:
    for action in options(parser):
        names = "/".join(action.option_strings)
        if action.help is not argparse.SUPPRESS:
            assert action.help, f"{command} {names}: no help text"
        boolean = isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction,
                                      argparse._StoreConstAction, argparse.BooleanOptionalAction))
        assert not boolean, f"{command} {names}: booleans are --x/--no-x (add_bool)"
        assert getattr(action.type, "__name__", "") != "parse_bool", f"{command} {names}: use add_bool"
        if "--out" in action.option_strings:
            assert "-o" in action.option_strings and action.metavar == "DIR", f"{command}: -o/--out is a folder"
        if "--tasks" in action.option_strings:
            assert action.metavar == "KEY", f"{command}: --tasks names a task list of the settings"
        if "--task" in action.option_strings:
            assert isinstance(action, argparse._AppendAction), f"{command}: --task is repeatable"
        if isinstance(action, BoolAction) and not action.negative:
            twin = "--no-" + action.option_strings[-1][2:]
            assert twin in parser._option_string_actions, f"{command} {names}: no {twin}"
            assert parser._option_string_actions[twin].nargs == 0, f"{command} {twin} takes no value"


def test_bool_options_read_as_written() -> None:
    parser = argparse.ArgumentParser()
    add_bool(parser, "--dry-run", "plan only")
    add_bool(parser, "--plots", "figures", default=True, takes_value=True)
    assert parser.parse_args([]).dry_run is False and parser.parse_args([]).plots is True
    assert parser.parse_args(["--dry-run", "--no-plots"]) == argparse.Namespace(dry_run=True, plots=False)
    assert parser.parse_args(["--no-dry-run", "--plots"]) == argparse.Namespace(dry_run=False, plots=True)
    assert parser.parse_args(["--plots", "False"]).plots is False  # an explicit value is read, never as "true"
    overrides = argparse.ArgumentParser()
    add_bool(overrides, "--progress", "bars", default=True, takes_value=True)
    overrides.add_argument("rest", nargs="*")
    args = overrides.parse_args(["--no-progress", "train.batch_size=2"])  # the override is not swallowed
    assert args.progress is False and args.rest == ["train.batch_size=2"]
    for bad in (["--dry-run", "False"], ["--plots", "maybe"], ["--no-plots=yes"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_help_and_version_on_stdout() -> None:
    for args in (["--help"], ["--version"]):
        result = subprocess.run([sys.executable, "-m", "obdb", *args], capture_output=True, text=True, timeout=60)
        assert result.returncode == 0 and result.stdout and not result.stderr, result
    listed = subprocess.run([sys.executable, "-m", "obdb", "--help"], capture_output=True, text=True, timeout=60)
    rows = [line for line in listed.stdout.splitlines() if line.startswith("  ") and line.split()[0] in COMMANDS]
    assert len(rows) == len(COMMANDS)
    assert len({line.index(line.split()[1]) for line in rows}) == 1  # descriptions in one column
    version = subprocess.run([sys.executable, "-m", "obdb", "--version"], capture_output=True, text=True, timeout=60)
    assert version.stdout.startswith("obdb ")


def test_unknown_command_suggests(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["lnit"]) == 2
    assert "did you mean 'lint'" in capsys.readouterr().err


@pytest.mark.parametrize("script", ["torch_model_runner.py", "test_model.py", "auto_annotate.py"])
def test_entry_script_without_the_environment_says_how_to_set_it_up(script: str) -> None:
    # -S: no site-packages, as with a bare system python3 that lacks torch
    result = subprocess.run([sys.executable, "-S", str(ROOT / "code" / script), "--help"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "lacks torch" in lines[0] and "scripts/setup_env.sh" in lines[0]
    assert ".venv/bin/python" in lines[0] and "Traceback" not in result.stderr


def test_a_missing_package_inside_a_command_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    def body() -> int:
        raise ModuleNotFoundError("No module named 'cvat_sdk'", name="cvat_sdk")

    assert guarded(body) == 2
    err = capsys.readouterr().err
    assert "'cvat_sdk' is not installed" in err and "setup_env.sh" in err and "rerun to resume" not in err
