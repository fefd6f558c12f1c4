"""Final training under torchrun: 2 CPU processes on gloo through the real runner, on the tiny
data. Rank 0 alone writes checkpoints, outputs and TensorBoard; a run stopped mid-training
resumes on 2 processes from rank 0's checkpoint."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import torch

from obdb.models import load_model
from obdb.training import distributed

ROOT = Path(__file__).resolve().parents[2]
RUNNER = ROOT / "code" / "torch_model_runner.py"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(settings: Path, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()), str(RUNNER), "-f", str(settings),
               "--progress", "false"]
    return subprocess.Popen(command, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env, cwd=ROOT)


def test_helpers_are_no_ops_outside_torchrun() -> None:
    assert not distributed.requested() or os.environ.get("WORLD_SIZE")
    assert distributed.on_rank0(lambda x: x + 1, 1) == 2
    assert distributed.broadcast({"a": 1}) == {"a": 1} and distributed.is_main()
    model = torch.nn.Linear(2, 2)
    assert distributed.wrap(model, torch.device("cpu")) is model and distributed.unwrap(model) is model
    assert distributed.sampler_for([1, 2, 3], seed=0) is None


def test_final_training_on_two_processes_resumes(settings_file, tmp_path: Path) -> None:
    """With model.freeze_backbone_epochs=1 the ranks also change phase (a new DDP wrapper) in the
    first run or at the resume, whichever reaches epoch 2."""
    settings = settings_file(max_train_epochs=4, max_plateau_count=10,
                             model={"min_size": 96, "max_size": 96, "pretrained": "none", "freeze_backbone_epochs": 1})
    out = tmp_path / "train" / "resnet18"
    last = out / "checkpoints" / "last.pt"

    first = torchrun(settings, tmp_path / "first.log")
    deadline = time.time() + 240  # generous bounds: a shared CPU can be several times slower
    while not last.exists() and first.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    assert last.exists(), (tmp_path / "first.log").read_text()[-4000:]
    first.send_signal(signal.SIGTERM)  # torchrun stops both ranks (a preempted job)
    first.wait(timeout=60)
    stopped_at = torch.load(last, weights_only=True)["state"]["epoch"]
    assert 1 <= stopped_at < 4 and not (out / "model.pt").exists()

    second = torchrun(settings, tmp_path / "second.log")
    try:
        second.wait(timeout=360)
    finally:
        second.kill()
    text = (tmp_path / "second.log").read_text()
    assert second.returncode == 0, text[-4000:]
    assert "rank 1 of 2" in text and "backend gloo" in text
    assert text.count(f"resumed from {last} after epoch {stopped_at}") == 2  # both ranks resumed
    both = (tmp_path / "first.log").read_text() + text
    assert both.count("train the FPN and head only") >= 2 and both.count("backbone unfrozen") == 2, both[-4000:]

    metrics = json.loads((out / "metrics.json").read_text())
    assert [h["epoch"] for h in metrics["history"]] == [1.0, 2.0, 3.0, 4.0]
    assert metrics["status"] == "complete" and 0.0 <= metrics["val"]["map"] <= 1.0
    model, spec, class_map, header = load_model(out / "model.pt")  # plain keys, no "module." prefix
    assert class_map.names == ("red", "blue") and spec.backbone == "resnet18"
    events = list((tmp_path / "train" / "runs" / "tiny" / "resnet18" / "final").glob("events.out.tfevents*"))
    assert len(events) == 2  # one per run, both from rank 0; rank 1 wrote none
    logs = sorted(p.name for p in (tmp_path / "train" / "logs").iterdir())
    assert sum("rank1" in name for name in logs) == 2 and len(logs) == 4
    assert not (tmp_path / "train" / "summary.md").read_text().count("rank")
