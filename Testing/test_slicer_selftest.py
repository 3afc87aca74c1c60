"""The pieces of the module's self-test (WeakSegSlicerLib.selftest) that need no training; the whole
self-test runs in Testing/test_slicer_sessions.py::test_self_test_runs_outside_qt."""

from __future__ import annotations

import numpy as np
import pytest
from mrml_scene import scene_removing_added_nodes
from WeakSegSlicerLib import selftest

from WeakSegLib import mrml


@pytest.fixture
def scene():
    yield from scene_removing_added_nodes()


def test_every_class_must_reach_the_threshold():
    truth = np.zeros((4, 10, 10), np.int16)
    truth[1:3, 2:8, 2:8] = 1
    truth[2, 4:6, 4:6] = 2
    predicted = truth.copy()
    predicted[predicted == 2] = 1      # the small class is missed entirely
    dice = selftest.dice_per_class(predicted, truth, ["Background", "Organ", "Lesion"])
    assert dice["Lesion"] == 0.0 and dice["Organ"] > 0.9
    with pytest.raises(AssertionError, match=r"Dice below 0.7 for \{'Lesion': 0.0\}"):
        selftest.check_dice(dice)
    selftest.check_dice(selftest.dice_per_class(truth, truth, ["Background", "Organ", "Lesion"]))


def test_phantom_annotation_reads_back_as_drawn(scene):
    volume, seg, truth, names = selftest.make_annotated_phantom(scene)
    assert names == ["Background", "Organ", "Lesion"] and truth.shape == selftest.SHAPE
    annotation = mrml.annotation_from_nodes(seg, volume)
    drawn = annotation.labels >= 0
    assert drawn.any() and np.array_equal(annotation.labels[drawn], truth[drawn])
    assert set(np.unique(annotation.labels[drawn])) == {0, 1, 2}
    for class_id, (low, high) in annotation.size_ranges_ml.items():
        size = np.sum(truth == class_id) * annotation.geometry.voxel_volume_ml
        assert low <= size <= high


def test_sample_case_for_the_sample_data_module(scene):
    from WeakSegSlicerLib import sample_data
    from WeakSegSlicerLib.tables import annotated_pairs, case_status

    assert sample_data.load_sample_phantom(lambda: False, scene) is None  # the user declined the install
    volume, seg = sample_data.load_sample_phantom(lambda: True, scene)
    assert volume.GetName() == "WeakSegPhantom" and volume.GetImageData().GetDimensions() == (64, 64, 32)
    assert (volume, seg) in annotated_pairs(scene)  # "Add all annotated" finds it
    assert case_status(volume, seg).startswith("Ready: ") and "2 size range(s)" in case_status(volume, seg)
