"""Real ACDC data (../shared/data/acdc): loading, real scribbles, metrics and simulators on real volumes.

Skipped with a reason when the shared data folder is absent.
"""

from __future__ import annotations

import numpy as np
import pytest

from WeakSegLib.data.annotation import UNKNOWN
from WeakSegLib.data.dataset import Dataset, load_dataset
from WeakSegLib.data.simulate import KINDS, annotated_fraction, simulate
from WeakSegLib.evaluation.metrics import evaluate

pytestmark = pytest.mark.data


@pytest.fixture(scope="module")
def acdc(acdc_dir) -> Dataset:
    return load_dataset(acdc_dir)


def test_all_volumes_load_with_scribbles_and_ground_truth(acdc):
    assert len(acdc) == 160
    assert acdc.class_names == ["Background", "RV", "Myo", "LV"]
    assert len(acdc.groups()) == 80
    for case in acdc:
        assert case.annotation is not None and case.ground_truth is not None
        assert case.annotation.drawn_classes() <= {0, 1, 2, 3}
        assert case.ground_truth.geometry == case.image.geometry


def test_dice_of_ground_truth_with_itself_is_one(acdc):
    for case in acdc:
        report = evaluate(case.ground_truth, case.ground_truth, acdc.class_names)
        for name in ("RV", "Myo", "LV"):
            metrics = report["classes"][name]
            assert metrics["dice"] == 1.0, (case.id, name)
            assert metrics["hd95_mm"] == 0.0 and metrics["asd_mm"] == 0.0
            assert metrics["volume_error_ml"] == 0.0
        assert report["mean"]["dice"] == 1.0 and not any(report["skipped"].values())


def test_real_scribble_fractions(acdc):
    per_volume, per_scribbled_slices = [], []
    for case in acdc:
        labels = case.annotation.labels
        known = labels != UNKNOWN
        per_volume.append(annotated_fraction(case.annotation))
        scribbled = np.any(known, axis=(1, 2))  # slices holding any scribble
        per_scribbled_slices.append(known[scribbled].mean())
    mean_volume, mean_slices = float(np.mean(per_volume)), float(np.mean(per_scribbled_slices))
    assert 0.005 < mean_volume < 0.02
    assert mean_volume <= mean_slices < 0.03
    assert acdc.annotated_fraction() == pytest.approx(
        sum(c.annotation.num_annotated_voxels() for c in acdc) / sum(c.image.array.size for c in acdc))


def test_real_scribbles_agree_with_ground_truth(acdc):
    known = agree = 0
    for case in acdc:
        labels = case.annotation.labels
        mask = labels != UNKNOWN
        known += int(mask.sum())
        agree += int(np.count_nonzero(labels[mask] == case.ground_truth.array[mask]))
    assert agree / known > 0.999  # hand-drawn: a handful of voxels stray over a boundary


@pytest.mark.parametrize("case_index", [0, 57, 121])
def test_simulated_annotations_never_contradict_real_ground_truth(acdc, case_index):
    case = acdc[case_index]
    gt = case.ground_truth
    for kind in KINDS:
        for seed in (0, 1):
            annotation = simulate(gt, acdc.num_classes, kind, seed=seed)
            annotation.check_matches(case.image)
            if annotation.labels is not None:
                known = annotation.labels != UNKNOWN
                np.testing.assert_array_equal(annotation.labels[known], gt.array[known])
            for box in annotation.boxes:
                assert np.any(gt.array[box.slices()] == box.class_id)
            for c, present in annotation.tags.items():
                assert present == bool(np.any(gt.array == c))
    scribbles = simulate(gt, acdc.num_classes, "scribbles", seed=0)
    assert 0.002 < annotated_fraction(scribbles) < 0.03  # like the real ones (about 1%)
