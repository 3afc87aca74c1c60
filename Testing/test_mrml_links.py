"""Markups tied to segments by node references and segment IDs (WeakSegLib.mrml.markups): they survive
renaming the segment and importing the scene, where node IDs change."""

from __future__ import annotations

import numpy as np
import pytest
from mrml_scene import drawn_scene, scene_removing_added_nodes, slicer

from WeakSegLib import mrml
from WeakSegLib.data.annotation import AnnotationError


@pytest.fixture
def scene():
    yield from scene_removing_added_nodes()


def _segment_id(seg, name):
    return seg.GetSegmentation().GetSegmentIdBySegmentName(name)


def test_link_survives_renaming_the_segment(scene):
    volume, seg, roi, points = drawn_scene(scene)
    tumor = _segment_id(seg, "Tumor")
    mrml.link_markups(roi, seg, _segment_id(seg, "Liver"))
    mrml.link_markups(points, seg, tumor)
    assert roi.GetNodeReference(mrml.ATTR_SEGMENTATION) is seg and roi.GetAttribute(mrml.ATTR_SEGMENT) != "Liver"
    before = mrml.annotation_from_nodes(seg, volume, None, *mrml.markups_for_segmentation(seg))
    seg.GetSegmentation().GetSegment(tumor).SetName("Lesion")
    rois, point_lists = mrml.markups_for_segmentation(seg)
    assert rois == [roi] and point_lists == [points]
    assert mrml.markups_for_segment(seg, tumor) == [points]
    after = mrml.annotation_from_nodes(seg, volume, None, rois, point_lists)
    assert after.boxes == before.boxes
    np.testing.assert_array_equal(after.labels, before.labels)
    with pytest.raises(AnnotationError, match="no segment with ID 'nope'"):
        mrml.link_markups(roi, seg, "nope")


def test_link_survives_scene_import(scene, tmp_path):
    """Save the scene, import it into a scene that already holds nodes (IDs are renumbered): the boxes
    and points still belong to the imported segmentation."""
    volume, seg, roi, points = drawn_scene(scene)
    mrml.link_markups(roi, seg, _segment_id(seg, "Liver"))
    mrml.link_markups(points, seg, _segment_id(seg, "Tumor"))
    path = tmp_path / "scene.mrml"
    saved = slicer.vtkMRMLScene()
    saved.SetURL(str(path))
    for node in (roi, points, seg):
        copy = saved.AddNewNodeByClass(node.GetClassName(), node.GetName())
        copy.Copy(node)
    # The references in the copy point at IDs of the first scene: give them the saved scene's.
    saved_seg = saved.GetFirstNodeByClass("vtkMRMLSegmentationNode")
    for class_name in ("vtkMRMLMarkupsROINode", "vtkMRMLMarkupsFiducialNode"):
        saved.GetFirstNodeByClass(class_name).SetNodeReferenceID(mrml.ATTR_SEGMENTATION, saved_seg.GetID())
    saved.Commit()
    target = slicer.vtkMRMLScene()
    for _ in range(3):  # occupy the IDs the saved nodes had
        target.AddNewNodeByClass("vtkMRMLSegmentationNode", "already here")
        target.AddNewNodeByClass("vtkMRMLMarkupsROINode", "already here")
    target.SetURL(str(path))
    target.Import()
    imported = [n for n in (target.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
                            for i in range(target.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")))
                if n.GetName() == seg.GetName()]
    assert len(imported) == 1 and imported[0].GetID() != saved_seg.GetID()
    rois, point_lists = mrml.markups_for_segmentation(imported[0], target)
    assert [n.GetName() for n in rois] == [roi.GetName()] and [n.GetName() for n in point_lists] == [points.GetName()]
    assert rois[0].GetAttribute(mrml.ATTR_SEGMENT) == _segment_id(seg, "Liver")
