"""Learning modes: plug-ins into the trainer's hooks (the loop itself never changes).

A mode may add loss terms on labelled batches (``extra_terms``), terms on unlabelled data
(``unlabelled_terms``), update state after each optimiser step (``after_step``, e.g. a mean
teacher's EMA), act every epoch (``on_epoch_end``) or after training (``finish``, e.g. SMILEr
relabeling rounds).  ``standard`` is the objective assembled from the annotations alone.
"""

from __future__ import annotations

from typing import Any


class TrainingMode:
    name = "standard"
    paper = "WeakSeg objective assembled from the annotations present"

    def __init__(self, **options: Any):
        if options:
            raise ValueError(f"Mode '{self.name}' takes no options, got {sorted(options)}.")

    def setup(self, trainer) -> None:
        pass

    def extra_terms(self, trainer, logits, batch) -> dict:
        return {}

    def unlabelled_terms(self, trainer) -> dict:
        return {}

    def after_step(self, trainer) -> None:
        pass

    def on_epoch_end(self, trainer) -> None:
        pass

    def finish(self, trainer) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


MODES: dict[str, type[TrainingMode]] = {"standard": TrainingMode}


def get_mode(name: str, options: dict | None = None) -> TrainingMode:
    if name not in MODES:
        raise ValueError(f"Unknown training mode '{name}'; available: {', '.join(sorted(MODES))}.")
    return MODES[name](**(options or {}))
