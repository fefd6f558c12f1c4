"""The dashboards in a real browser: ``scripts/dashboards.sh`` starts optuna-dashboard on a
finished study and TensorBoard on its logs, headless Chromium renders both single-page apps, and
the rendered DOM must show the study, its trials and the scalar tags. Screenshots are saved (to
``doc_img/`` when ``OBDB_UPDATE_SCREENSHOTS=1``, as the README's pictures were made).

The study and logs come from obdb's own code (``run_search`` with ``PruneHook``, and
``TensorBoardHook``) driven by a cheap objective, so the test needs no detector training.
Chromium is the Debian package (``scripts/setup_browser.sh``); without it the test skips.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Sequence

import pytest
import torch

from obdb.hpo import build_pruner, build_sampler, open_storage, run_search
from obdb.settings.schema import HyperParams, ParamRange
from obdb.training import EpochResult, Trainer
from obdb.training.hooks import TensorBoardHook

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
STUDY = "demo-resnet18"
TAGS = ("loss/loss", "val/map", "lr")

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium is not installed (bash scripts/setup_browser.sh "
                       "as root, or apt-get install chromium); the browser test needs it"),
    pytest.mark.skipif(not (BIN / "optuna-dashboard").exists() or not (BIN / "tensorboard").exists(),
                       reason="optuna-dashboard/tensorboard not installed in this environment"),
]


def make_study_and_logs(out: Path, trials: int = 8, epochs: int = 3) -> str:
    """A finished search (complete and pruned trials) and one TensorBoard run per trial."""
    space = {"lr": ParamRange(low=1e-3, high=1e-1), "momentum": ParamRange(low=0.8, high=0.95, log=False)}

    def objective(params: HyperParams, number: int, hooks: Sequence[Any]) -> float:
        board = TensorBoardHook(out / "runs" / "demo" / "resnet18" / f"trial-{number:03d}", every=1)
        model = torch.nn.Linear(1, 1)  # a real trainer that never trains: the hooks see what they would
        optimizer = torch.optim.SGD(model.parameters(), lr=params.lr)
        trainer = Trainer(model, optimizer, torch.optim.lr_scheduler.StepLR(optimizer, 1), [],
                          device=torch.device("cpu"), max_epochs=epochs, progress=False)
        board.before_train(trainer)
        distance = abs(math.log10(params.lr) + 2.0)  # best at lr = 0.01
        quality = 1.0 / (1.0 + distance)
        try:
            for epoch in range(1, epochs + 1):
                for _ in range(5):
                    trainer.state.iteration += 1
                    loss = (0.5 + distance) * 2.0 / math.sqrt(trainer.state.iteration)
                    board.after_step(trainer, {"loss": loss, "loss_classifier": loss / 2})
                trainer.state.epoch = epoch
                score = quality * epoch / epochs
                trainer.metrics = {"train/loss": loss, "val/map": score, "val/map50": min(1.0, 1.5 * score),
                                   "lr": params.lr * (0.5 ** (epoch // 2))}
                trainer.result = EpochResult(score, improved=True)
                board.after_epoch(trainer)
                for hook in hooks:
                    hook.after_epoch(trainer)
        finally:
            board.after_train(trainer)
        return quality

    url = f"sqlite:///{out / 'optuna.db'}"
    run_search(objective, name=STUDY, storage=open_storage(url),
               sampler=build_sampler("tpe", n_startup_trials=3, seed=0),
               pruner=build_pruner("median", warmup_epochs=1, max_epochs=epochs), space=space, log_scale=["lr"],
               base=HyperParams(), max_trials=trials)
    return url


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_http(url: str, timeout: float = 90) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer within {timeout} s")


def chromium(tmp_path: Path, url: str, *, screenshot: Path | None = None, size: str = "1400,900") -> str:
    """The DOM after the page's scripts ran (or a screenshot), from headless Chromium."""
    profile = tmp_path / f"chromium-{time.monotonic_ns()}"
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", "--hide-scrollbars", f"--user-data-dir={profile}", f"--window-size={size}",
               "--virtual-time-budget=15000", "--run-all-compositor-stages-before-draw"]
    command += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    result = subprocess.run([*command, url], capture_output=True, text=True, timeout=120)
    shutil.rmtree(profile, ignore_errors=True)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def rendered(tmp_path: Path, url: str, needles: Sequence[str], attempts: int = 4) -> str:
    """The page's DOM once every needle is in it: single-page apps fill in after their data
    requests, which can lag on a loaded machine, so render again (bounded) until they show."""
    dom = ""
    for _ in range(attempts):
        dom = chromium(tmp_path, url)
        if all(needle in dom for needle in needles):
            return dom
        time.sleep(2)
    missing = [needle for needle in needles if needle not in dom]
    raise AssertionError(f"{url}: {missing} not shown after {attempts} renders")


def wait_tensorboard_tags(url: str, tags: Sequence[str], timeout: float = 90) -> None:
    """TensorBoard reads event files in the background after it starts answering."""
    deadline = time.time() + timeout
    seen: set[str] = set()
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/data/plugin/scalars/tags", timeout=5) as response:
                runs = json.loads(response.read())
            seen = {tag for run in runs.values() for tag in run}
            if set(tags) <= seen:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"TensorBoard did not load the tags {sorted(set(tags) - seen)} within {timeout} s")


def check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1400, 900) and len(data) > 20_000  # a rendered page, not a blank one


@pytest.fixture()
def dashboards(tmp_path: Path) -> Any:
    url = make_study_and_logs(tmp_path / "train")
    optuna_port, tb_port = free_port(), free_port()
    log = open(tmp_path / "dashboards.log", "w")
    process = subprocess.Popen(["bash", "scripts/dashboards.sh", "--storage", url, "--logdir",
                                str(tmp_path / "train" / "runs"), "--optuna-port", str(optuna_port),
                                "--tensorboard-port", str(tb_port)], cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True, env={**os.environ, "VENV": str(BIN.parent)})
    try:
        optuna_url, tb_url = f"http://127.0.0.1:{optuna_port}", f"http://127.0.0.1:{tb_port}"
        try:
            wait_http(f"{optuna_url}/api/studies")
            wait_http(f"{tb_url}/data/runs")
            wait_tensorboard_tags(tb_url, TAGS)
        except TimeoutError as err:
            pytest.fail(f"{err}\n{(tmp_path / 'dashboards.log').read_text()[-3000:]}")
        yield SimpleNamespace(optuna=optuna_url, tensorboard=tb_url)
    finally:
        os.killpg(process.pid, signal.SIGTERM)  # the script's trap stops both servers
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)
        log.close()


def test_dashboards_show_the_study_trials_and_scalars(dashboards: Any, tmp_path: Path) -> None:
    rendered(tmp_path, f"{dashboards.optuna}/dashboard", [STUDY])
    # the study page with the metric name set by run_search, and the list of its trials
    rendered(tmp_path, f"{dashboards.optuna}/dashboard/studies/1", [STUDY, "val_map"])
    rendered(tmp_path, f"{dashboards.optuna}/dashboard/studies/1/trials",
             [*(f"Trial {number}" for number in range(8)), "Complete", "Pruned"])

    # the Time Series view renders only the cards in view: filter to the three tags checked
    rendered(tmp_path, f"{dashboards.tensorboard}/?tagFilter=%5E(loss%2Floss%7Cval%2Fmap%7Clr)%24#timeseries",
             [*(f'title="{tag}"' for tag in TAGS), "demo/resnet18/trial-007"])

    shots = {"dashboard_optuna.png": f"{dashboards.optuna}/dashboard/studies/1",
             "dashboard_tensorboard.png": f"{dashboards.tensorboard}/#scalars"}
    folder = ROOT / "doc_img" if os.environ.get("OBDB_UPDATE_SCREENSHOTS") == "1" else tmp_path
    for name, url in shots.items():
        chromium(tmp_path, url, screenshot=folder / name)
        check_png(folder / name)
