"""The size prior on a trained network: clicks plus size ranges beat the same clicks alone (phantom).

Kervadec et al. (MedIA 2019): partial cross-entropy on a few clicked voxels cannot tell how far an organ
extends; adding each organ's volume as a range (+/- 20 %) brings the prediction to the right size.
Same phantom volumes, clicks, network, seed and iterations (150, far from convergence) for both
trainings; Dice on held-out volumes: about 0.17 alone, 0.26 with the ranges.
"""

from __future__ import annotations

import numpy as np
import pytest

from WeakSegLib.data.dataset import Case, Dataset
from WeakSegLib.data.phantom import make_phantom_dataset
from WeakSegLib.data.simulate import combine, simulate_points, simulate_size_ranges
from WeakSegLib.evaluation.metrics import dice
from WeakSegLib.training import TrainConfig, train

SHAPE = (12, 48, 48)


def _clicks(data: Dataset, sizes: bool) -> Dataset:
    cases = []
    for i, case in enumerate(data.cases):
        ann = simulate_points(case.ground_truth, data.num_classes, n_per_object=1, radius_mm=0.0, seed=i)
        if sizes:
            ann = combine(ann, simulate_size_ranges(case.ground_truth, data.num_classes, margin=0.2))
        cases.append(Case(case.id, case.image, ann, case.ground_truth, case.group))
    return Dataset(data.classes, cases, data.channels, data.modality, dict(data.priors), data.name)


def _held_out_dice(model, test: Dataset) -> float:
    scores = []
    for case in test.cases:
        pred = model.predict(case.image).labels.array
        per = dice(pred, case.ground_truth.array, labels=list(range(1, test.num_classes)))
        scores.append(np.nanmean([v for v in per.values()]))
    return float(np.mean(scores))


@pytest.mark.slow
def test_clicks_with_size_ranges_beat_the_same_clicks_alone():
    train_data = make_phantom_dataset(n_cases=3, seed=3, shape=SHAPE)
    test_data = make_phantom_dataset(n_cases=2, seed=11, shape=SHAPE)
    config = {"iterations": 150, "device": "cpu", "seed": 0, "propagate_scribbles": False, "augment": False}
    alone = train(_clicks(train_data, sizes=False), TrainConfig(**config))
    with_sizes = train(_clicks(train_data, sizes=True), TrainConfig(**config))
    assert any("size" in (h.get("terms") or {}) for h in with_sizes.history)
    assert not any("size" in (h.get("terms") or {}) for h in alone.history)
    d_alone, d_sizes = _held_out_dice(alone.model, test_data), _held_out_dice(with_sizes.model, test_data)
    assert d_sizes >= d_alone + 0.05, (d_alone, d_sizes)
    # The size violation is reported per class while training.
    assert any(k.startswith("size/") for h in with_sizes.history for k in (h.get("violations") or {}))
