"""Training engine: data sampling, the objective, the hook-based trainer, learning modes, DDP."""

from WeakSegLib.config import LossWeights, TrainConfig
from WeakSegLib.training.trainer import Trainer, TrainingError, TrainResult, train

__all__ = ["LossWeights", "TrainConfig", "Trainer", "TrainResult", "TrainingError", "train"]
