"""A runner process for the multi-worker tests: the real ``torch_model_runner.py`` entry point
(settings, data, split, study, final-model claim, outputs) with ``fit`` replaced by a cheap fake
that sleeps instead of training a detector.

Environment:
    FAKE_LOG        JSON lines file this worker appends to (one line per fit call)
    FAKE_SLEEP      seconds per fake epoch (default 0.2)
    FAKE_HANG       "1": the first trial never ends (the test kills the worker during it)
    FAKE_HANG_NAME  the first fit whose name contains this text never ends (e.g. "final")
    FAKE_RENDEZVOUS folder: the first trial waits until FAKE_PEERS workers have arrived there,
                    so every worker is certainly searching at the same time
    FAKE_PEERS      number of workers expected at the rendezvous (default 2)
"""
from __future__ import annotations

import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

import obdb.pipeline as pipeline  # obdb through the PYTHONPATH that start_worker() sets
from obdb.cli.runner import main
from obdb.training import EpochResult, Trainer, TrainState

CALLS = 0


def record(**fields: Any) -> None:
    line = json.dumps({"worker": os.environ.get("OBDB_WORKER_ID"), "pid": os.getpid(), "time": time.time(), **fields})
    with open(os.environ["FAKE_LOG"], "a", encoding="utf-8") as handle:
        handle.write(line + "\n")
        handle.flush()


def rendezvous() -> None:
    folder = os.environ.get("FAKE_RENDEZVOUS")
    if not folder:
        return
    Path(folder, f"{os.getpid()}").touch()
    deadline = time.time() + 90
    while len(list(Path(folder).iterdir())) < int(os.environ.get("FAKE_PEERS", "2")) and time.time() < deadline:
        time.sleep(0.05)


def fake_fit(data: Any, config: Any, params: Any, *, max_epochs: int, name: str, extra_hooks: Any = (),
             **_: Any) -> tuple[nn.Module, TrainState, Any]:
    global CALLS
    CALLS += 1
    record(event="start", name=name, params=params.model_dump())
    if CALLS == 1 and "trial" in name:
        rendezvous()
        if os.environ.get("FAKE_HANG") == "1":
            time.sleep(600)  # killed by the test long before this ends
    if CALLS == 1 and os.environ.get("FAKE_HANG_NAME") and os.environ["FAKE_HANG_NAME"] in name:
        time.sleep(600)
    model = nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    trainer = Trainer(model, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 1), [], device=torch.device("cpu"),
                      max_epochs=max_epochs, progress=False)  # a real trainer that never trains
    state = trainer.state
    quality = 1.0 / (1.0 + abs(math.log10(params.lr) + 2.0))
    for epoch in range(1, max_epochs + 1):
        time.sleep(float(os.environ.get("FAKE_SLEEP", "0.2")))
        score = quality * epoch / max_epochs
        state.epoch = epoch
        if score > state.best_score:
            state.best_score, state.best_epoch = score, epoch
        trainer.result = EpochResult(score, improved=score >= state.best_score)
        for hook in extra_hooks:
            hook.after_epoch(trainer)
        state.history.append({"epoch": float(epoch), "val/map": score})
    record(event="end", name=name, score=state.best_score)
    return nn.Linear(1, 1), state, config.spec


pipeline.fit = fake_fit

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
