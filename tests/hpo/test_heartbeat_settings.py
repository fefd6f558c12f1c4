"""Settings for several workers: heartbeat interval, grace period and retries (hpo.*)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from obdb.pipeline import heartbeats
from obdb.settings import SettingsError, load_settings


def write(tmp_path: Path, hpo: dict) -> Path:
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"variants": ["resnet18"], "hpo": hpo}))
    return path


def test_defaults_and_overrides(tmp_path: Path) -> None:
    settings = load_settings(write(tmp_path, {}))
    assert (settings.hpo.heartbeat_interval, settings.hpo.grace_period, settings.hpo.max_retry) == (30, 120, 2)
    assert heartbeats(settings) == {"heartbeat_interval": 30, "grace_period": 120, "max_retry": 2}
    settings = load_settings(write(tmp_path, {}), ["hpo.heartbeat_interval=1", "hpo.grace_period=3",
                                                   "hpo.max_retry=0"])
    assert heartbeats(settings) == {"heartbeat_interval": 1, "grace_period": 3, "max_retry": 0}


@pytest.mark.parametrize(("hpo", "message"), [
    ({"heartbeat_interval": 30, "grace_period": 30}, "grace_period (30) must be longer than heartbeat_interval (30)"),
    ({"grace_period": 10}, "grace_period (10) must be longer than heartbeat_interval (30)"),
    ({"heartbeat_interval": 0}, "hpo.heartbeat_interval"),
    ({"heartbeat_interval": 1.5}, "hpo.heartbeat_interval"),
    ({"max_retry": -1}, "hpo.max_retry"),
    ({"heartbeat_intervall": 5}, "heartbeat_interval"),  # a typo is an error, with a suggestion
])
def test_bad_values_are_errors(tmp_path: Path, hpo: dict, message: str) -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(write(tmp_path, hpo))
    assert message in str(info.value)
