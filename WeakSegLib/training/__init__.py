"""Training engine: planning, preprocessing, data, objective, the hook-based trainer, modes."""

from .config import LossWeights, Plan, TrainConfig

__all__ = ["LossWeights", "Plan", "TrainConfig", "Trainer", "TrainResult", "TrainingError", "train"]


def __getattr__(name):
    # The trainer imports the model, which imports this package: load it lazily.
    if name in ("Trainer", "TrainResult", "TrainingError", "train"):
        from . import trainer

        return getattr(trainer, name)
    raise AttributeError(name)
