"""Box pseudo-labels: the inscribed ellipse of each box, nested boxes drawn over larger ones."""

import numpy as np
import pytest
import torch

from WeakSegLib.data.annotation import UNKNOWN
from WeakSegLib.training.box_prior import ellipse_labels


def test_a_per_slice_box_gives_an_ellipse_in_its_slice_with_an_unknown_rim():
    labels = ellipse_labels([(2, (1, 0, 0), (2, 9, 9))], (3, 9, 9), margin=0.2).numpy()
    assert (labels[0] == UNKNOWN).all() and (labels[2] == UNKNOWN).all()      # other slices: no information
    s = labels[1]
    assert s[4, 4] == 2                                  # centre: r = 0
    assert s[0, 0] == 0                                  # corner: r = sqrt(2) * 8/9 > 1.2 -> background
    assert s[4, 0] == UNKNOWN                            # edge midpoint: r = 4/4.5 = 0.89, in the rim
    assert s[4, 2] == 2                                  # r = 2/4.5 = 0.44
    # every voxel of the box is labelled or in the rim; nothing outside the box
    r = np.hypot(*np.meshgrid((np.arange(9) - 4) / 4.5, (np.arange(9) - 4) / 4.5, indexing="ij"))
    assert ((s == 2) == (r <= 0.8)).all()
    assert ((s == UNKNOWN) == (np.abs(r - 1) < 0.2)).all()


def test_a_nested_box_draws_over_the_larger_one_and_keeps_its_outer_part():
    outer = (1, (0, 0, 0), (1, 21, 21))
    inner = (3, (0, 7, 7), (1, 14, 14))
    labels = ellipse_labels([inner, outer], (1, 21, 21), margin=0.1).numpy()[0]   # order given does not matter
    assert labels[10, 10] == 3                           # the inner box's centre
    assert labels[7, 7] == 1                             # inner corner, outside its ellipse: the outer class
    assert labels[0, 0] == 0                             # outer corner: background
    same = ellipse_labels([outer, inner], (1, 21, 21), margin=0.1).numpy()[0]
    assert (labels == same).all()


def test_where_boxes_of_two_classes_cross_the_labels_are_unknown():
    # The right ventricle's box crosses the myocardium's on ACDC's slices: the smaller box's ellipse would
    # label myocardium as RV there (docs/benchmarks.md, per-slice boxes).
    a = (1, (0, 0, 0), (1, 12, 12))
    b = (2, (0, 6, 6), (1, 20, 20))
    labels = ellipse_labels([a, b], (1, 20, 20), margin=0.0).numpy()[0]
    assert (labels[6:12, 6:12] == UNKNOWN).all()         # the crossing
    assert labels[5, 5] == 1 and labels[13, 13] == 2     # each ellipse outside it
    assert labels[0, 19] == UNKNOWN                      # outside both boxes: no box says anything
    kept = ellipse_labels([a, b], (1, 20, 20), margin=0.0, overlap_unknown=False).numpy()[0]
    assert kept[8, 8] in (1, 2)
    # a box of the same class or a nested box is not a crossing
    nested = ellipse_labels([(1, (0, 0, 0), (1, 21, 21)), (3, (0, 7, 7), (1, 14, 14))], (1, 21, 21),
                            margin=0.1).numpy()[0]
    assert nested[10, 10] == 3 and nested[7, 7] == 1
    same = ellipse_labels([(1, (0, 0, 0), (1, 12, 12)), (1, (0, 6, 6), (1, 20, 20))], (1, 20, 20),
                          margin=0.0).numpy()[0]
    assert same[8, 8] == 1


def test_a_3d_box_gives_an_ellipsoid():
    labels = ellipse_labels([(1, (0, 0, 0), (5, 5, 5))], (5, 5, 5), margin=0.0).numpy()
    assert labels[2, 2, 2] == 1 and labels[0, 0, 0] == 0 and labels[2, 2, 0] == 1   # r(2,2,0) = 2/2.5 = 0.8
    assert labels[0, 0, 2] == 0                          # r = sqrt(0.64 + 0.64) > 1


def test_the_margin_is_checked():
    with pytest.raises(ValueError, match="box_prior_margin"):
        ellipse_labels([(1, (0, 0, 0), (1, 3, 3))], (1, 3, 3), margin=1.0)
    assert ellipse_labels([], (1, 2, 2)).dtype == torch.int64
