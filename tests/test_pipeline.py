"""End to end through the real entry points on tiny data: search, final training, outputs,
scoring, reruns that resume instead of starting over, and runs that refuse to start."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import torch

from obdb.models import load_model
from obdb.split import SplitManifest

ROOT = Path(__file__).resolve().parents[1]
RUNNER = ROOT / "code" / "torch_model_runner.py"
TEST_MODEL = ROOT / "code" / "test_model.py"
OPTIMAL = {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.0001, "step_size": 3, "gamma": 0.5}


def run_cli(script: Path, *args: str, timeout: int = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(script), *args, "--progress", "false"], capture_output=True,
                          text=True, timeout=timeout, cwd=ROOT)


@pytest.mark.slow
def test_two_variants_search_then_final_training(settings_file, tmp_path: Path) -> None:
    path = settings_file(
        variants=["resnet18", "mobilenet_v3_large"],
        resnet18={"run_hpo": 1, "use_settings_file": 0, "optimal_hpo_settings": OPTIMAL},
        mobilenet_v3_large={"run_hpo": 1, "use_settings_file": 0},
        search_epochs=2, max_num_trials=3, max_train_epochs=2,
        train={"batch_size": 3, "eval_batch_size": 2, "workers": 0, "device": "cpu", "warmup_iters": 2,
               "max_detections": 12})
    result = run_cli(RUNNER, "-f", str(path))
    assert result.returncode == 0, result.stderr[-3000:]
    save_dir = tmp_path / "train"
    storage = f"sqlite:///{save_dir / 'optuna.db'}"

    for variant in ("resnet18", "mobilenet_v3_large"):
        out = save_dir / variant
        study = optuna.load_study(study_name=f"tiny-{variant}", storage=storage)
        finished = [t for t in study.trials if t.state in (optuna.trial.TrialState.COMPLETE,
                                                            optuna.trial.TrialState.PRUNED)]
        assert len(finished) == 3
        best = json.loads((out / "best_params.json").read_text())
        assert best["trial_number"] == study.best_trial.number
        assert best["best_value"] == pytest.approx(study.best_value)
        assert 0.0 <= best["best_value"] <= 1.0

        model, spec, class_map, header = load_model(out / "model.pt")
        assert class_map.names == ("red", "blue")
        assert header["extra"]["variant"] == variant and spec.backbone == variant
        raw = torch.load(out / "model.pt", weights_only=True)  # plain tensors and data, no pickled code
        assert raw["format"] == "obdb-model"
        assert json.loads((out / "class_map.json").read_text())["names"] == ["red", "blue"]

        metrics = json.loads((out / "metrics.json").read_text())
        assert metrics["status"] == "complete" and metrics["params"] == best["params"]
        assert 0.0 <= metrics["val"]["map"] <= 1.0 and 0.0 <= metrics["val"]["map50"] <= 1.0
        assert [h["epoch"] for h in metrics["history"]] == [1.0, 2.0]

        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["versions"]["torch"].startswith("2.")
        assert manifest["split_hash"] == metrics["split_hash"] and len(manifest["settings_hash"]) == 16

        runs = save_dir / "runs" / "tiny" / variant
        assert sorted(p.name for p in runs.iterdir()) == ["final", "trial-000", "trial-001", "trial-002"]
        assert any(p.name.startswith("events.out.tfevents") for p in (runs / "final").iterdir())

    # optimal_hpo_settings is the first trial of the search
    study = optuna.load_study(study_name="tiny-resnet18", storage=storage)
    assert study.trials[0].params == pytest.approx(OPTIMAL)

    # the split keeps every video on one side
    split = SplitManifest.load(next((save_dir / "splits").glob("*.json")))
    sides: dict[str, set[str]] = {}
    for image_id, side in split.assignment.items():
        sides.setdefault(split.groups[image_id], set()).add(side)
    assert all(len(s) == 1 for s in sides.values()) and split.counts()["val"] > 0
    assert "resnet18" in (save_dir / "summary.md").read_text()

    # test_model.py on the run's val split reproduces the final validation mAP
    scored = run_cli(TEST_MODEL, "-m", str(save_dir / "resnet18" / "model.pt"), "-f", str(path),
                     "--metrics-json", str(tmp_path / "score.json"))
    assert scored.returncode == 0, scored.stderr[-3000:]
    score = json.loads((tmp_path / "score.json").read_text())
    final = json.loads((save_dir / "resnet18" / "metrics.json").read_text())
    # to the last digit: the same images, sizes, cache, eval batch and max detections (12, not 100)
    assert score["max_detections"] == 12 and score["batch_size"] == 2
    for key in ("map", "map50", "map75"):
        assert score["metrics"][key] == final["val"][key], key
    assert set(score["metrics"]["per_class"]) == {"red", "blue"}
    assert "mAP50" in scored.stdout

    # the same command again continues: no new trials, no retraining
    before = (save_dir / "resnet18" / "model.pt").stat().st_mtime_ns
    again = run_cli(RUNNER, "-f", str(path))
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already has 3 finished trial(s)" in again.stderr
    assert "already trained" in again.stderr
    assert (save_dir / "resnet18" / "model.pt").stat().st_mtime_ns == before


def test_test_model_on_annotation_files(settings_file, tiny_data: Path, tmp_path: Path) -> None:
    path = settings_file(max_train_epochs=1)
    assert run_cli(RUNNER, "-f", str(path)).returncode == 0
    model = tmp_path / "train" / "resnet18" / "model.pt"
    scored = run_cli(TEST_MODEL, "-m", str(model), "--annotations", str(tiny_data / "annotations"),
                     "--images", str(tiny_data / "images"))
    assert scored.returncode == 0, scored.stderr[-3000:]
    result = json.loads((model.parent / "eval" / "files_metrics.json").read_text())
    assert result["num_images"] == 12
    assert 0.0 <= result["metrics"]["map"] <= 1.0


def test_killed_final_training_resumes(settings_file, tmp_path: Path) -> None:
    path = settings_file(max_train_epochs=4, max_plateau_count=10)
    last = tmp_path / "train" / "resnet18" / "checkpoints" / "last.pt"
    log = open(tmp_path / "first.log", "w")
    process = subprocess.Popen([sys.executable, str(RUNNER), "-f", str(path), "--progress", "false"],
                               stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    deadline = time.time() + 300
    while not last.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert last.exists(), (tmp_path / "first.log").read_text()[-3000:]
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    killed_at = torch.load(last, weights_only=True)["state"]["epoch"]
    assert 1 <= killed_at < 4
    assert not (tmp_path / "train" / "resnet18" / "model.pt").exists()

    rerun = run_cli(RUNNER, "-f", str(path))
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert f"resumed from {last} after epoch {killed_at}" in rerun.stderr
    metrics = json.loads((tmp_path / "train" / "resnet18" / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1.0, 2.0, 3.0, 4.0]
    assert metrics["epochs_run"] == 4
    load_model(tmp_path / "train" / "resnet18" / "model.pt")
    logs = sorted((tmp_path / "train" / "logs").glob("tiny-*.log"))
    assert len(logs) == 2  # one per run, kept on the output volume
    assert "resnet18 final epoch 4/4, loss" in logs[-1].read_text()


def test_run_refuses_unknown_variant_before_writing(settings_file, tmp_path: Path) -> None:
    path = settings_file(variants=["resnet19"])
    result = run_cli(RUNNER, "-f", str(path))
    assert result.returncode == 2
    assert "variants[0] (resnet19)" in result.stderr
    assert not (tmp_path / "train").exists()


def test_run_refuses_missing_pretrained_file(settings_file, tmp_path: Path) -> None:
    path = settings_file(resnet18={"run_hpo": 0, "pretrained_model_path": str(tmp_path / "nope.pth")})
    result = run_cli(RUNNER, "-f", str(path))
    assert result.returncode == 2
    assert "resnet18.pretrained_model_path: file not found" in result.stderr


def test_unwritable_save_dir_fails_before_training(settings_file, tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    path = settings_file(save_dir=str(blocker / "train"))
    result = run_cli(RUNNER, "-f", str(path))
    assert result.returncode == 2
    assert "is not writable" in result.stderr


def test_unreachable_study_database_fails_before_anything_is_written(settings_file, tmp_path: Path) -> None:
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    path = settings_file(hpo={"pruner": "none", "storage": f"postgresql://optuna:Sesame123@127.0.0.1:{port}/optuna"})
    result = run_cli(RUNNER, "-f", str(path))
    assert result.returncode == 2, result.stderr
    assert f"Optuna storage postgresql://optuna:***@127.0.0.1:{port}/optuna is not reachable" in result.stderr
    assert "Sesame123" not in result.stderr + result.stdout and "Traceback" not in result.stderr
    assert not (tmp_path / "train").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda_is_a_settings_error(settings_file, tmp_path: Path) -> None:
    path = settings_file(train={"batch_size": 3, "workers": 0, "device": "cuda:0", "warmup_iters": 2})
    result = run_cli(RUNNER, "-f", str(path))
    assert result.returncode == 2 and "train.device is 'cuda:0' but no CUDA device is available" in result.stderr
    assert not (tmp_path / "train").exists()


def test_missing_task_is_a_clear_error(settings_file, tmp_path: Path) -> None:
    path = settings_file(annotations_list=["gt_train_video00", "gt_train_video0"])
    result = run_cli(RUNNER, "-f", str(path))
    assert result.returncode == 2
    assert "gt_train_video0" in result.stderr and "Traceback" not in result.stderr


def test_a_diverging_final_training_is_one_line_naming_the_setting(settings_file, tmp_path: Path) -> None:
    """lr 10 turns the loss into NaN/inf within the first steps: exit 2, no traceback, the message
    names the variant, the lr and the key to change; no model is written."""
    path = settings_file(resnet18={"run_hpo": 0, "use_settings_file": 1,
                                   "optimal_hpo_settings": {**OPTIMAL, "lr": 10.0, "momentum": 0.99}})
    result = run_cli(RUNNER, "-f", str(path))
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    line = next(x for x in result.stderr.splitlines() if x.startswith("error: "))
    assert "resnet18 final: loss is" in line and "lr 10 came from resnet18.optimal_hpo_settings" in line, line
    assert not (tmp_path / "train" / "resnet18" / "model.pt").exists()
