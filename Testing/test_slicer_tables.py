"""WeakSegSlicerLib.tables: the module's cases and priors tables, on a real MRML scene."""

from __future__ import annotations

import numpy as np
import pytest
from mrml_scene import SHAPE, add_segment, drawn_scene, new_segmentation, plain_volume_node, scene_removing_added_nodes
from WeakSegSlicerLib import tables

from WeakSegLib import mrml
from WeakSegLib.data.volume import Volume


@pytest.fixture
def scene():
    yield from scene_removing_added_nodes()


def test_tables_of_the_module(scene):
    volume, seg, roi, points = drawn_scene(scene)
    other = plain_volume_node(scene, SHAPE, "MR")
    empty = new_segmentation(scene, other, "MR annotation")
    add_segment(empty, "Liver", np.zeros(SHAPE, bool), other)
    result = mrml.segmentation_node_from_labels(Volume(np.zeros(SHAPE, np.int16), mrml.geometry_from_node(volume)),
                                                mrml.classes_from_segmentation(seg), volume, "CT WeakSeg")
    result.SetAttribute(mrml.ATTR_RESULT, "true")
    assert tables.annotated_pairs(scene) == [(volume, seg), (other, empty)]  # the result is not an annotation
    assert mrml.reference_volume(seg) is volume

    roi.SetAttribute(mrml.ATTR_SEGMENTATION, seg.GetID())
    status = tables.case_status(volume, seg)
    assert status.startswith("Ready:") and "1 box(es)" in status and "2 tag(s)" in status
    assert tables.case_status(other, empty).startswith("Empty")
    assert tables.case_status(other, None).startswith("No annotation")
    mrml.set_segment_priors(seg, "Liver", present=False)
    assert tables.case_status(volume, seg).startswith("Error:") and "tagged absent" in tables.case_status(volume, seg)
    mrml.clear_segment_priors(seg, "Liver", ["present"])

    rows = tables.prior_rows([seg, None, empty])
    assert [(r.segmentation_node.GetName(), r.name) for r in rows] == [
        ("annotation", "Liver"), ("annotation", "Background"), ("annotation", "Tumor"), ("annotation", "Vessel"),
        ("MR annotation", "Liver")]
    assert rows[0].priors.size_range_ml == (0.02, 0.5) and rows[0].color == (204, 102, 76)

    tumor = rows[2].segment_id
    assert tables.apply_prior_edit(seg, tumor, "max_ml", "12.5 mL").size_range_ml == (0.0, 12.5)
    assert tables.apply_prior_edit(seg, tumor, "min_ml", "2").size_range_ml == (2.0, 12.5)
    assert tables.apply_prior_edit(seg, tumor, "max_ml", "").size_range_ml == (2.0, float("inf"))
    assert tables.apply_prior_edit(seg, tumor, "min_ml", "").size_range_ml is None
    with pytest.raises(ValueError, match="not a size"):
        tables.apply_prior_edit(seg, tumor, "min_ml", "big")
    with pytest.raises(ValueError, match="min <= max"):
        tables.apply_prior_edit(seg, "Liver", "min_ml", "3")  # above its max of 0.5 mL: refused, unchanged
    assert mrml.get_segment_priors(seg, "Liver").size_range_ml == (0.02, 0.5)
    assert tables.apply_prior_edit(seg, tumor, "presence", "absent").present is False
    assert tables.apply_prior_edit(seg, tumor, "presence", "not set").present is None
    assert tables.apply_prior_edit(seg, tumor, "complete", False).complete is None
    assert tables.apply_prior_edit(seg, tumor, "complete", True).complete is True

