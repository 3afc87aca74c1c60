"""WeakSegLib.mrml.segments against the real MRML library: classes from segment names, segment
priors stored as tags in real ``.seg.nrrd`` files."""

from __future__ import annotations

import numpy as np
import pytest
from mrml_scene import (
    add_segment,
    new_segmentation,
    plain_volume_node,
    scene_removing_added_nodes,
    seg_nrrd_round_trip,
)

from WeakSegLib import mrml
from WeakSegLib.mrml.segments import _get_tag


@pytest.fixture
def scene():
    yield from scene_removing_added_nodes()


# ----------------------------------------------------------------------------------------------- classes & priors
def test_classes_from_segmentation_background_any_case_any_position(scene):
    volume = plain_volume_node(scene)
    seg = new_segmentation(scene, volume)
    shape = (8, 12, 14)
    add_segment(seg, "Liver", np.zeros(shape, bool), volume, (1.0, 0.0, 0.0))
    add_segment(seg, "BACKGROUND", np.zeros(shape, bool), volume, (0.0, 0.0, 1.0))
    add_segment(seg, "Tumor", np.zeros(shape, bool), volume, (0.0, 1.0, 0.0))
    classes = mrml.classes_from_segmentation(seg)
    assert [(c.id, c.name) for c in classes] == [(0, "BACKGROUND"), (1, "Liver"), (2, "Tumor")]
    assert classes[0].color == (0, 0, 255) and classes[1].color == (255, 0, 0)

    other = new_segmentation(scene, volume, "other")
    add_segment(other, "tumor", np.zeros(shape, bool), volume)
    add_segment(other, "Vessel", np.zeros(shape, bool), volume)
    union = mrml.classes_from_segmentations([other, seg])
    assert [c.name for c in union] == ["BACKGROUND", "tumor", "Vessel", "Liver"]


def test_segment_priors_round_trip_through_seg_nrrd(scene, tmp_path):
    volume = plain_volume_node(scene)
    seg = new_segmentation(scene, volume)
    mask = np.zeros((8, 12, 14), bool)
    mask[2:4, 3:5, 4:6] = True
    liver = add_segment(seg, "Liver", mask, volume)
    add_segment(seg, "Tumor", np.zeros_like(mask), volume)
    assert mrml.get_segment_priors(seg, "Liver") == mrml.SegmentPriors()
    mrml.set_segment_priors(seg, liver, size_range_ml=(60, 250.5), present=True)
    mrml.set_segment_priors(seg, "Tumor", size_range_ml=(0, float("inf")), present=False, complete=False)
    mrml.set_segment_priors(seg, "Liver", complete=True)  # None leaves the others unchanged
    expected = {"Liver": mrml.SegmentPriors((60.0, 250.5), True, True),
                "Tumor": mrml.SegmentPriors((0.0, float("inf")), False, False)}
    for name, priors in expected.items():
        assert mrml.get_segment_priors(seg, name) == priors
    segment = seg.GetSegmentation().GetSegment(liver)
    assert _get_tag(segment, mrml.TAG_SIZE_RANGE_ML) == "60.0,250.5"
    assert _get_tag(segment, mrml.TAG_PRESENT) == "true"

    loaded = seg_nrrd_round_trip(scene, seg, tmp_path / "priors.seg.nrrd", "loaded")
    for name, priors in expected.items():
        assert mrml.get_segment_priors(loaded, name) == priors

    assert mrml.clear_segment_priors(seg, "Tumor", ["present"]) == mrml.SegmentPriors((0.0, float("inf")), None, False)
    with pytest.raises(ValueError, match="min <= max"):
        mrml.set_segment_priors(seg, "Tumor", size_range_ml=(5, 1))
    with pytest.raises(KeyError, match="No segment 'Spleen'"):
        mrml.set_segment_priors(seg, "Spleen", present=True)
    seg.GetSegmentation().GetSegment(liver).SetTag(mrml.TAG_PRESENT, "maybe")
    with pytest.raises(ValueError, match="'true' or 'false'"):
        mrml.get_segment_priors(seg, "Liver")

