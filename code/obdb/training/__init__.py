"""Training: a small trainer with hooks. Knows nothing of Optuna."""
from .hooks import BackboneFreezeHook, CheckpointHook, EarlyStopHook, EvalHook, TensorBoardHook
from .optim import build_optimizer, build_scheduler, warmup_factor
from .trainer import CheckpointError, EpochResult, Hook, Trainer, TrainingDiverged, TrainState, load_checkpoint

__all__ = ["BackboneFreezeHook", "CheckpointHook", "EarlyStopHook", "EvalHook", "TensorBoardHook", "build_optimizer",
           "build_scheduler", "warmup_factor", "CheckpointError", "EpochResult", "Hook", "Trainer", "TrainingDiverged",
           "TrainState", "load_checkpoint"]
