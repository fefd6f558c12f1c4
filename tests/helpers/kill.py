"""A hook that stops training as a kill would, right after an epoch's checkpoint was written."""
from __future__ import annotations

from obdb.training import Hook, Trainer


class Interrupt(Exception):
    """Raised by :class:`KillAfter` in place of the process dying."""


class KillAfter(Hook):
    """Simulates the process being killed right after epoch ``epoch``'s checkpoint was written."""

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def after_epoch(self, trainer: Trainer) -> None:
        if trainer.state.epoch == self.epoch:
            raise Interrupt
