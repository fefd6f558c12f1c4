"""Trainer hooks: evaluation, early stopping, checkpoints, TensorBoard and backbone freezing.

Order matters and is the order given to the trainer: evaluate first (it sets ``trainer.result``,
the :class:`~obdb.training.trainer.EpochResult` the others read), then early stopping, best
weights and the checkpoint (so a kill after the epoch loses nothing), then logging.
"""
from __future__ import annotations

import gc
import logging
import math
from pathlib import Path
from typing import Any, Callable

from torch import nn

from ..fileio import save_torch
from .distributed import unwrap
from .trainer import EpochResult, Hook, Trainer

log = logging.getLogger(__name__)


class EvalHook(Hook):
    """Runs ``evaluate(model) -> metrics`` after each epoch and tracks the best ``metric``.

    ``evaluate`` gets the model in train mode and must switch to eval itself; it must never see
    training data (the original system validated in train mode, with gradients, on train data).
    """

    def __init__(self, evaluate: Callable[[nn.Module], dict[str, Any]], metric: str = "map",
                 min_delta: float = 0.0) -> None:
        self.evaluate = evaluate
        self.metric = metric
        self.min_delta = min_delta

    def after_epoch(self, trainer: Trainer) -> None:
        results = self.evaluate(trainer.model)
        trainer.model.train()
        for key, value in results.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                trainer.metrics[f"val/{key}"] = float(value)
        score = float(results[self.metric])
        state = trainer.state
        improved = score > state.best_score + self.min_delta or state.best_epoch < 0
        if improved:
            state.best_score = score
            state.best_epoch = state.epoch
            state.plateau = 0
        else:
            state.plateau += 1
        trainer.result = EpochResult(score, improved)


class EarlyStopHook(Hook):
    """Stops after ``patience`` epochs without improvement (the original ``max_plateau_count``)."""

    def __init__(self, patience: int) -> None:
        self.patience = patience

    def before_train(self, trainer: Trainer) -> None:
        self.after_epoch(trainer)  # a resumed run may already be past its patience

    def after_epoch(self, trainer: Trainer) -> None:
        if trainer.state.plateau >= self.patience:
            trainer.stop(f"no improvement for {trainer.state.plateau} epochs "
                         f"(best {trainer.state.best_score:.4f} at epoch {trainer.state.best_epoch})")


class CheckpointHook(Hook):
    """Writes ``last.pt`` after every epoch (atomically) and ``best.pt`` (weights only) whenever
    the metric improved. Resuming is :meth:`Trainer.resume` on ``last_path``.

    ``last.pt`` is written first: it commits the epoch. A process killed before that loses the
    epoch and leaves ``best.pt`` as it was; one killed between the two files left ``best.pt`` an
    improvement behind, and :meth:`before_train` of the resumed run rewrites it from the resumed
    weights, which are the best ones when the last finished epoch was the best."""

    def __init__(self, folder: Path, save_best: bool = True) -> None:
        self.folder = Path(folder)
        self.save_best = save_best

    @property
    def last_path(self) -> Path:
        return self.folder / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.folder / "best.pt"

    def before_train(self, trainer: Trainer) -> None:
        state = trainer.state
        if self.save_best and state.epoch > 0 and state.best_epoch == state.epoch:
            self._save_best(trainer)

    def after_epoch(self, trainer: Trainer) -> None:
        state = trainer.state_dict()
        state["state"]["history"] = [*trainer.state.history, trainer.epoch_record()]
        save_torch(self.last_path, state)
        if self.save_best and trainer.result is not None and trainer.result.improved:
            self._save_best(trainer)

    def _save_best(self, trainer: Trainer) -> None:
        save_torch(self.best_path, {k: v.detach().cpu() for k, v in unwrap(trainer.model).state_dict().items()})


class TensorBoardHook(Hook):
    """Losses every ``every`` steps, validation metrics, lr and ``train/data_wait`` every epoch,
    and ``trainer.summary`` at the end, under ``log_dir`` (one folder per trial or final run so
    curves of variants and trials are told apart)."""

    def __init__(self, log_dir: Path, every: int = 10) -> None:
        self.log_dir = Path(log_dir)
        self.every = max(1, every)
        self.writer: Any = None

    def before_train(self, trainer: Trainer) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(self.log_dir), purge_step=trainer.state.iteration or None)

    def after_step(self, trainer: Trainer, losses: dict[str, float]) -> None:
        if trainer.state.iteration % self.every == 0:
            for key, value in losses.items():
                self.writer.add_scalar(f"loss/{key}", value, trainer.state.iteration)

    def after_epoch(self, trainer: Trainer) -> None:
        epoch = trainer.state.epoch
        for key, value in trainer.metrics.items():
            if key.startswith(("val/", "train/")) or key == "lr":
                if isinstance(value, float) and math.isfinite(value):
                    self.writer.add_scalar(key, value, epoch)
        self.writer.flush()

    def after_train(self, trainer: Trainer) -> None:
        if self.writer is not None:
            for key, value in trainer.summary.items():
                self.writer.add_scalar(key, value, trainer.state.epoch)
            self.writer.add_text("stop_reason", trainer.stop_reason or "finished", trainer.state.epoch)
            self.writer.close()
            self.writer = None


class BackboneFreezeHook(Hook):
    """Freeze, then unfreeze: for the first ``epochs`` epochs only the FPN and the head train (the
    new layers settle before they send large gradients into pretrained features); from then on
    the backbone's ``trainable_layers`` train too, and the lr warm-up starts again.

    The optimizer holds every trainable parameter from the start; a frozen parameter gets no
    gradient, so SGD leaves it (and its weight decay) alone, and the optimizer's layout is the same
    in both phases, which is what lets a checkpoint of either phase resume. The backbone's
    BatchNorm layers are in eval mode while frozen, so their running statistics stay put too. The
    phase follows from ``trainer.state.epoch`` alone, so a resumed run is in the right one.

    Under torchrun, ``rewrap`` (``DistributedDataParallel`` around the bare model) is called at
    every phase change: DDP fixes the set of parameters it all-reduces when it is built, so the
    frozen phase needs a wrapper without the backbone and the unfrozen phase one with it. Every
    rank changes phase at the same epoch, which is what building a wrapper (a collective) needs."""

    def __init__(self, epochs: int, rewrap: Callable[[nn.Module], nn.Module] | None = None) -> None:
        self.epochs = epochs
        self.rewrap = rewrap
        self.trainable: dict[str, bool] = {}
        self.wrapped_frozen = False  # the phase the current DDP wrapper was built for

    @staticmethod
    def _body(trainer: Trainer) -> nn.Module:
        return unwrap(trainer.model).backbone.body

    def before_train(self, trainer: Trainer) -> None:
        self.trainable = {name: p.requires_grad for name, p in self._body(trainer).named_parameters()}

    def before_epoch(self, trainer: Trainer) -> None:
        body = self._body(trainer)
        epoch = trainer.state.epoch
        if epoch < self.epochs:
            for parameter in body.parameters():
                parameter.requires_grad_(False)
            for module in body.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):  # noqa: SLF001 - every BatchNorm kind
                    module.eval()
            if epoch == 0:
                log.info("%s: epochs 1-%d train the FPN and head only (model.freeze_backbone_epochs)",
                         trainer.name, self.epochs)
            self._wrap_for(trainer, frozen=True)
            return
        for name, parameter in body.named_parameters():
            parameter.requires_grad_(self.trainable.get(name, True))
        self._wrap_for(trainer, frozen=False)
        if epoch == self.epochs and self.epochs > 0:
            trainer.state.warmup_start = trainer.state.iteration
            log.info("%s: epoch %d: backbone unfrozen (%d trainable tensors); lr warm-up restarts", trainer.name,
                     epoch + 1, sum(self.trainable.values()))

    def _wrap_for(self, trainer: Trainer, *, frozen: bool) -> None:
        if self.rewrap is None or frozen == self.wrapped_frozen:
            return
        bare = unwrap(trainer.model)
        trainer.model = bare  # the old wrapper (and its gradient hooks) goes before the new one is built
        gc.collect()
        trainer.model = self.rewrap(bare)
        self.wrapped_frozen = frozen
