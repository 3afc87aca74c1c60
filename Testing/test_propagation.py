"""Scribble propagation: strokes resampled whole, the 3D walk's solvers, and 3D plans walking the network grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from WeakSegLib.data.annotation import UNKNOWN
from WeakSegLib.data.phantom import make_phantom_dataset
from WeakSegLib.data.simulate import simulate
from WeakSegLib.training import TrainConfig
from WeakSegLib.training.data import prepare_case
from WeakSegLib.training.propagation import propagate_scribbles, volume_solver
from WeakSegLib.transforms.preprocessing import Preprocessing


def _halving() -> Preprocessing:
    """A 3D preprocessing that halves each axis of a (4, 8, 8) grid of 1 mm voxels."""
    return Preprocessing("MR", 3, (2.0, 2.0, 2.0))


def test_a_thin_stroke_stays_whole_where_nearest_resampling_drops_it():
    labels = np.full((4, 8, 8), UNKNOWN, np.int64)
    labels[2, 2, :] = 1                      # one voxel thick, on an even z and y: nearest-exact never samples it
    pre = _halving()
    nearest = pre.labels_to_network(labels, labels.shape, (1.0, 1.0, 1.0))
    whole = pre.strokes_to_network(labels, labels.shape, (1.0, 1.0, 1.0))
    assert tuple(whole.shape) == (2, 4, 4)
    assert not (nearest == 1).any()
    expected = torch.full((2, 4, 4), UNKNOWN, dtype=torch.long)
    expected[1, 1, :] = 1                    # the cells (z 2-3, y 2-3) the stroke runs through, every x
    assert torch.equal(whole, expected)


def test_a_cell_where_two_classes_meet_stays_unknown():
    labels = np.full((4, 8, 8), UNKNOWN, np.int64)
    labels[0, 0, 0] = 0
    labels[0, 0, 1] = 2                      # same cell (0, 0, 0) as the background voxel
    labels[2, 4, 4] = 0                      # alone in cell (1, 2, 2)
    whole = _halving().strokes_to_network(labels, labels.shape, (1.0, 1.0, 1.0))
    assert whole[0, 0, 0] == UNKNOWN
    assert whole[1, 2, 2] == 0
    assert int((whole != UNKNOWN).sum()) == 1
    empty = _halving().strokes_to_network(np.full((4, 8, 8), UNKNOWN), (4, 8, 8), (1.0, 1.0, 1.0))
    assert bool((empty == UNKNOWN).all())


def _bright_ball(n: int = 24):
    z, y, x = np.mgrid[:n, :n, :n]
    inside = (z - n / 2) ** 2 + (y - n / 2) ** 2 + (x - n / 2) ** 2 < (n / 4) ** 2
    rng = np.random.default_rng(0)
    image = np.where(inside, 1.0, 0.2) + rng.normal(0, 0.03, inside.shape)
    labels = np.full(inside.shape, UNKNOWN, np.int64)
    labels[n // 2, n // 2 - 2:n // 2 + 3, n // 2] = 1          # a short stroke in the ball
    labels[n // 2, 1:n - 1, 1] = 0                              # and one beside it
    return image, labels, inside


def test_multigrid_and_jacobi_walks_give_the_same_labels():
    pytest.importorskip("pyamg")
    image, labels, inside = _bright_ball()
    assert volume_solver() == "cg_mg"
    jacobi = propagate_scribbles(image, labels, 3, solver="cg_j", spacing_zyx=(1.0, 1.0, 1.0))
    multigrid = propagate_scribbles(image, labels, 3, solver="cg_mg", spacing_zyx=(1.0, 1.0, 1.0))
    assert np.array_equal(jacobi, multigrid)
    assert (multigrid == 1).sum() > 10 * (labels == 1).sum()     # it spread, and onto the ball
    assert ((multigrid == 1) & ~inside).sum() == 0


def test_3d_plan_propagates_on_the_network_grid_and_2d_plan_on_the_slices():
    data = make_phantom_dataset(n_cases=1, seed=0, shape=(24, 48, 48))
    case = data.cases[0]
    case.annotation = simulate(case.ground_truth, data.num_classes, "scribbles", seed=0)
    config = TrainConfig(minutes=None, iterations=1)
    g = case.image.geometry
    for dims, spacing_xyz in ((3, (2.4, 2.4, 3.0)), (2, (1.2, 1.2, 3.0))):
        pre = Preprocessing("MR", dims, spacing_xyz[::-1])
        prepared = prepare_case(case, pre, data.num_classes, config)
        truth = pre.labels_to_network(case.ground_truth.array, g.shape, g.spacing_zyx)
        assert prepared.pseudo.shape == truth.shape == prepared.labels.shape
        labelled = prepared.pseudo != UNKNOWN
        # The walk reaches far past the strokes, and is right where it is confident.
        assert labelled.sum() > 5 * (prepared.labels != UNKNOWN).sum()
        assert (prepared.pseudo[labelled] == truth[labelled]).float().mean() > 0.9


def test_a_threshold_per_class_applies_to_the_class_a_voxel_would_get():
    """One threshold per class: a strict one keeps only that class's confident voxels, the others walk as far
    as their own threshold lets them; equal thresholds give the single threshold's labels."""
    image, labels, inside = _bright_ball()
    one = propagate_scribbles(image[12:13], labels[12:13], 2, threshold=0.8)
    assert np.array_equal(one, propagate_scribbles(image[12:13], labels[12:13], 2, threshold=[0.8, 0.8]))
    strict = propagate_scribbles(image[12:13], labels[12:13], 2, threshold=[0.8, 1.0])
    assert np.array_equal(strict == 1, labels[12:13] == 1)          # only the stroke itself (scribbles always win)
    assert np.array_equal(strict == 0, one == 0)                 # background walks as with 0.8
    lenient = propagate_scribbles(image[12:13], labels[12:13], 2, threshold=[0.5, 0.8])
    assert (lenient == 0).sum() >= (one == 0).sum() and np.array_equal(lenient == 1, one == 1)


def test_class_thresholds_are_checked_against_the_classes_and_their_range():
    with pytest.raises(ValueError, match="propagation_class_thresholds must lie in"):
        TrainConfig(iterations=1, propagation_class_thresholds=[0.5, 1.5])
    data = make_phantom_dataset(n_cases=1, seed=0, shape=(8, 32, 32))
    case = data.cases[0]
    case.annotation = simulate(case.ground_truth, data.num_classes, "scribbles", seed=0)
    config = TrainConfig(iterations=1, propagation_class_thresholds=[0.8] * (data.num_classes + 1))
    with pytest.raises(ValueError, match=f"has {data.num_classes + 1} values for {data.num_classes} classes"):
        prepare_case(case, Preprocessing("MR", 2, (3.0, 1.2, 1.2)), data.num_classes, config)
