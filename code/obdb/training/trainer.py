"""A small trainer: one readable loop, with everything optional done by hooks.

The loop itself only trains an epoch and then calls the hooks; evaluation, checkpoints, early
stopping, TensorBoard and (in :mod:`obdb.hpo`) trial reporting are hooks, so a search trial and a
final run share the exact same code path. Training knows nothing of Optuna.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from obdb.errors import UserError
from obdb.image_cache import detector_max_size, pad_thin

from .distributed import unwrap
from .optim import set_lr, warmup_factor

log = logging.getLogger(__name__)

#: warn when the training loop waits on the data loader longer than this share of the step time
DATA_WAIT_WARN = 0.2


class TrainingDiverged(UserError, RuntimeError):
    """The loss became NaN or infinite: these hyperparameters cannot train this model. A search
    trial that diverges fails and the search goes on; a final training stops the run (exit 2)
    with a message saying which setting to change."""


@dataclass
class TrainState:
    """Everything about progress that a resumed run needs (saved in every checkpoint)."""

    epoch: int = 0                  # completed epochs
    iteration: int = 0              # optimizer steps taken
    best_score: float = -math.inf
    best_epoch: int = -1
    plateau: int = 0                # epochs since the last improvement
    warmup_start: int = 0           # iteration the current lr warm-up began at (it restarts at unfreeze)
    history: list[dict[str, float]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "TrainState":
        return cls(**data)  # checkpoints from before warmup_start existed lack it: the default fits them


@dataclass(frozen=True)
class EpochResult:
    """The validation outcome of one epoch, set by the evaluation hook for the hooks after it
    (early stopping, best checkpoint, search pruning) in ``trainer.result``."""

    score: float
    improved: bool


class Hook:
    """Override what you need. ``trainer.metrics`` holds the current epoch's numbers (logged and
    kept in the history), ``trainer.result`` its :class:`EpochResult` once evaluated;
    ``trainer.summary`` numbers about the whole run (e.g. the epoch a search pruned it at), which
    :class:`~obdb.training.hooks.TensorBoardHook` writes when training ends, however it ends.
    ``before_epoch`` runs with the model already in train mode, before the epoch's first step."""

    def before_train(self, trainer: "Trainer") -> None: ...
    def before_epoch(self, trainer: "Trainer") -> None: ...
    def after_step(self, trainer: "Trainer", losses: dict[str, float]) -> None: ...
    def after_epoch(self, trainer: "Trainer") -> None: ...
    def after_train(self, trainer: "Trainer") -> None: ...


class Trainer:
    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer,
                 scheduler: torch.optim.lr_scheduler.LRScheduler, train_loader: Iterable,
                 *, device: torch.device, max_epochs: int, hooks: Sequence[Hook] = (),
                 warmup_iters: int = 0, amp: bool = False, name: str = "train", progress: bool = True,
                 seed: int | None = None) -> None:
        self.model = model
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.train_loader = train_loader
        self.device = device
        self.max_epochs = max_epochs
        self.hooks = list(hooks)
        self.warmup_iters = warmup_iters
        self.use_amp = amp and device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if self.use_amp else None
        self.name = name
        self.progress = progress
        self.seed = seed
        self.state = TrainState()
        self.metrics: dict[str, float] = {}
        self.result: EpochResult | None = None
        self.summary: dict[str, float] = {}
        self.data_wait_warned = False
        self.should_stop = False
        self.stop_reason = ""

    # --- checkpoint state -------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"model": unwrap(self.model).state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict(),
                "scaler": self.scaler.state_dict() if self.scaler else None,
                "state": self.state.to_dict(), "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, checkpoint: dict[str, Any]) -> None:
        unwrap(self.model).load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        self.scheduler.load_state_dict(checkpoint["scheduler"])
        if self.scaler and checkpoint.get("scaler"):
            self.scaler.load_state_dict(checkpoint["scaler"])
        self.state = TrainState.from_dict(checkpoint["state"])
        if checkpoint.get("torch_rng") is not None:
            torch.set_rng_state(checkpoint["torch_rng"])

    def resume(self, path: Path) -> bool:
        """Continue from a checkpoint written by :class:`~obdb.training.hooks.CheckpointHook`."""
        checkpoint = load_checkpoint(path)
        if checkpoint is None:
            return False
        try:
            self.load_state_dict(checkpoint)
        except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
            raise CheckpointError(f"checkpoint {path} does not fit this training run ({type(exc).__name__}: "
                                  f"{' '.join(str(exc).split())[:300]}); move it away to start this model "
                                  "from scratch") from exc
        log.info("%s: resumed from %s after epoch %d (best %.4f)", self.name, path, self.state.epoch,
                 self.state.best_score)
        return True

    # --- the loop ---------------------------------------------------------------------------
    def train(self) -> TrainState:
        if self.device.type == "cpu":
            torch.set_flush_denormal(True)  # denormal floats make random-init steps on a CPU far slower
        self.model.to(self.device)
        for hook in self.hooks:
            hook.before_train(self)
        try:
            while self.state.epoch < self.max_epochs and not self.should_stop:
                self.result = None
                self.train_one_epoch()
                self.state.epoch += 1
                self.metrics = {"epoch": float(self.state.epoch), **self.metrics}
                for hook in self.hooks:
                    hook.after_epoch(self)
                self.state.history.append(self.epoch_record())
                self.log_epoch()
            if not self.should_stop:
                self.stop_reason = self.stop_reason or f"reached {self.max_epochs} epochs"
        except BaseException as err:  # pruned, diverged, interrupted: hooks still close their files
            self.stop_reason = f"{type(err).__name__}: {err}"
            raise
        finally:
            for hook in self.hooks:
                hook.after_train(self)
        return self.state

    def epoch_record(self) -> dict[str, float]:
        """The epoch's line of the history: its metrics plus the evaluated score."""
        record = dict(self.metrics)
        if self.result is not None:
            record.update(score=self.result.score, improved=float(self.result.improved))
        return record

    def train_one_epoch(self) -> None:
        self.model.train()
        for hook in self.hooks:
            hook.before_epoch(self)
        generator = getattr(self.train_loader, "generator", None)
        if self.seed is not None and generator is not None:
            # the shuffle order depends on the epoch alone, so a resumed run sees the same batches
            generator.manual_seed(self.seed + self.state.epoch)
        sampler = getattr(self.train_loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):  # DistributedSampler: each epoch its own shard order
            sampler.set_epoch(self.state.epoch)
        totals: dict[str, float] = {}
        steps = images_seen = 0
        waited = stepped = 0.0
        bar = tqdm(self.train_loader, desc=f"{self.name} epoch {self.state.epoch + 1}/{self.max_epochs}",
                   leave=False, disable=not self.progress, dynamic_ncols=True)
        ready = time.perf_counter()
        for images, targets in bar:
            fetched = time.perf_counter()
            losses = self.train_step(images, targets)
            done = time.perf_counter()
            if steps > 0:  # the first batch also pays for worker start-up: not the loader's pace
                waited += fetched - ready
                stepped += done - fetched
            ready = done
            steps += 1
            images_seen += len(images)
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + value
            bar.set_postfix(loss=f"{losses['loss']:.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}")
        set_lr(self.optimizer, self.scheduler, 1.0)  # the scheduler must step from its own base lr
        self.metrics = {f"train/{k}": v / max(steps, 1) for k, v in totals.items()}
        self.metrics["lr"] = self.optimizer.param_groups[0]["lr"]
        self.metrics["train/images"] = float(images_seen)
        if stepped > 0:
            self.metrics["train/data_wait"] = waited / stepped
            self.check_data_wait(waited / stepped)
        self.scheduler.step()

    def check_data_wait(self, ratio: float) -> None:
        """Warn once per run when the model waits on the loader (``train/data_wait``: seconds spent
        waiting for batches per second spent in training steps, first batch of an epoch excluded)."""
        if ratio > DATA_WAIT_WARN and not self.data_wait_warned:
            self.data_wait_warned = True
            log.warning("%s: the model waited on the data loader for %.0f%% of its step time in epoch %d; "
                        "raise train.workers, keep train.cache_images on, or put the images on faster storage",
                        self.name, 100 * ratio, self.state.epoch + 1)

    def train_step(self, images: list[torch.Tensor], targets: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        warmup = warmup_factor(self.state.iteration - self.state.warmup_start, self.warmup_iters)
        set_lr(self.optimizer, self.scheduler, warmup)
        # An image thinner than 1:max_size would be resized to 0 px by the detector (images served
        # from the image cache are resized already and pass unchanged): pad it, boxes stay put.
        max_size = detector_max_size(unwrap(self.model))
        images = [pad_thin(img, max_size).to(self.device, non_blocking=True) for img in images]
        targets = [{k: v.to(self.device, non_blocking=True) for k, v in t.items()} for t in targets]
        with torch.autocast(device_type=self.device.type, enabled=self.use_amp):
            loss_dict = self.model(images, targets)
            loss = sum(loss_dict.values())
        if not torch.isfinite(loss):
            raise TrainingDiverged(f"{self.name}: loss is {loss.item()} at epoch {self.state.epoch + 1}, "
                                   f"iteration {self.state.iteration}")
        self.optimizer.zero_grad(set_to_none=True)
        if self.scaler:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()
        self.state.iteration += 1
        losses = {"loss": float(loss.detach())}
        losses.update({k: float(v.detach()) for k, v in loss_dict.items()})
        for hook in self.hooks:
            hook.after_step(self, losses)
        return losses

    def log_epoch(self) -> None:
        """One line per epoch, so a week-long run can be followed in its log file."""
        m = self.metrics
        parts = [f"{self.name} epoch {self.state.epoch}/{self.max_epochs}",
                 f"loss {m.get('train/loss', float('nan')):.4f}"]
        if self.result is not None:
            parts.append(f"val {self.result.score:.4f} "
                         f"(best {self.state.best_score:.4f} at epoch {self.state.best_epoch})")
        parts.append(f"lr {m.get('lr', 0.0):.2e}")
        log.info(", ".join(parts))

    def stop(self, reason: str) -> None:
        self.should_stop = True
        self.stop_reason = reason
        log.info("%s: stopping: %s", self.name, reason)


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be resumed from. Writes are atomic, so this means the file was
    damaged or replaced from outside: the run stops rather than silently starting over."""


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """Read a checkpoint safely (tensors and plain data only); None when there is none."""
    path = Path(path)
    if not path.exists():
        return None
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, not a torch file, pickled code refused, ...
        raise CheckpointError(f"checkpoint {path} cannot be read ({type(exc).__name__}: "
                              f"{' '.join(str(exc).split())[:300]}); move it away to start this model "
                              "from scratch") from exc
    if not isinstance(checkpoint, dict) or not {"model", "optimizer", "scheduler", "state"} <= checkpoint.keys():
        raise CheckpointError(f"checkpoint {path} is not an obdb training checkpoint (needs model, optimizer, "
                              "scheduler and state); move it away to start this model from scratch")
    return checkpoint
