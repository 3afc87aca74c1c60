"""What the methods of one benchmark run share: the config, the split with its annotations, the test seeds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from WeakSegLib.bench.config import BenchConfig
from WeakSegLib.data.dataset import Dataset


@dataclass
class TrainedWeakSeg:
    """The ``weakseg`` method's model, which the interactive methods start from."""

    model: object                       # WeakSegLib.model.Model
    train_seconds: float                # the trainer's clock, preparation included
    model_dir: Path | None = None       # saved copy (interactive-finetune loads it as init_model)


@dataclass
class BenchContext:
    """The data every method of a run sees; ``weakseg`` is filled in by the ``weakseg`` method."""

    config: BenchConfig
    train: Dataset                      # training cases with the benchmark's annotation (ground truth kept)
    test: Dataset                       # held-out cases with ground truth
    test_seeds: dict[str, np.ndarray]   # test case id -> (z, y, x) int16 seeds, UNKNOWN where free
    train_fraction: float               # annotated voxels over all training voxels
    test_seed_fraction: float | None    # seeded voxels over all test voxels (None without test seeds)
    workdir: Path                       # scratch folder of the run, removed at its end
    cuda: bool = False                  # the device is CUDA (peak GPU memory is reported)
    weakseg: TrainedWeakSeg | None = None
