"""Where results go (WeakSegLib.mrml.results): the volume's earlier result or a chosen node is updated
instead of adding a node per run, results sit in the volume's study, segment terminology is carried
over, a closed scene loads nothing; the effect's preview covers the whole volume."""

from __future__ import annotations

import numpy as np
import pytest
from mrml_scene import (
    SHAPE,
    add_segment,
    new_segmentation,
    plain_volume_node,
    scene_removing_added_nodes,
    slicer,
    vtk,
)

from WeakSegLib import mrml
from WeakSegLib.data.dataset import ClassInfo
from WeakSegLib.data.volume import Volume, write_volume
from WeakSegLib.mrml.nodes import _array_from_image
from WeakSegLib.mrml.segments import _get_tag

CLASSES = [ClassInfo(0, "Background", (0, 0, 0)), ClassInfo(1, "Liver", (216, 101, 79))]
LIVER_TERMINOLOGY = ("Segmentation category and type - 3D Slicer General Anatomy list~SCT^123037004^Anatomical "
                     "Structure~SCT^10200004^Liver~^^~Anatomic codes - DICOM master list~^^~^^")


@pytest.fixture
def scene():
    yield from scene_removing_added_nodes()


def _write_prediction(tmp_path, volume, value=1):
    labels = np.zeros(SHAPE, np.int16)
    labels[2:5, 3:8, 4:9] = value
    write_volume(Volume(labels, mrml.geometry_from_node(volume)), tmp_path / "predictions" / "CT.nii.gz")
    return labels


def test_results_are_updated_placed_in_the_study_and_keep_terminology(scene, tmp_path):
    volume = plain_volume_node(scene, SHAPE, "CT")
    annotation = new_segmentation(scene, volume, "scribbles")
    liver = add_segment(annotation, "Liver", np.zeros(SHAPE, bool), volume)
    annotation.GetSegmentation().GetSegment(liver).SetTag(mrml.TERMINOLOGY_TAG, LIVER_TERMINOLOGY)
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    study = hierarchy.CreateStudyItem(hierarchy.CreateSubjectItem(hierarchy.GetSceneItemID(), "Patient"), "Study")
    hierarchy.CreateItem(study, volume)   # Slicer's subject hierarchy plugins do this when a DICOM series loads
    terminologies = mrml.segment_terminologies([annotation])
    assert terminologies == {"liver": LIVER_TERMINOLOGY}

    labels = _write_prediction(tmp_path, volume)
    first = mrml.load_predictions(tmp_path, {"CT": volume}, CLASSES, terminologies=terminologies)["CT"]
    assert hierarchy.GetItemParent(hierarchy.GetItemByDataNode(first)) == study
    assert slicer.vtkSegment.GetTerminologyEntryTagName() == mrml.TERMINOLOGY_TAG
    assert _get_tag(first.GetSegmentation().GetNthSegment(0), mrml.TERMINOLOGY_TAG) == LIVER_TERMINOLOGY

    count = scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")
    again = mrml.load_predictions(tmp_path, {"CT": volume}, CLASSES)["CT"]
    assert again is first and scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == count
    assert first.GetSegmentation().GetNumberOfSegments() == 1
    np.testing.assert_array_equal(mrml.labels_from_segmentation_node(again, volume, CLASSES).array, labels)

    chosen = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my output")
    into = mrml.load_predictions(tmp_path, {"CT": volume}, CLASSES, targets={"CT": chosen})["CT"]
    assert into is chosen and chosen.GetName() == "my output" and chosen.GetAttribute(mrml.ATTR_RESULT) == "true"
    fresh = mrml.load_predictions(tmp_path, {"CT": volume}, CLASSES, reuse=False)["CT"]
    assert fresh not in (first, chosen)
    assert mrml.existing_result(volume) is fresh  # the last one

    mrml.show_in_3d(fresh, True)
    assert fresh.GetSegmentation().ContainsRepresentation("Closed surface")
    mrml.show_in_3d(fresh, False)
    assert not fresh.GetSegmentation().ContainsRepresentation("Closed surface")


def test_no_result_for_a_volume_that_left_the_scene(scene, tmp_path):
    volume = plain_volume_node(scene, SHAPE, "CT")
    _write_prediction(tmp_path, volume)
    scene.RemoveNode(volume)
    assert mrml.load_predictions(tmp_path, {"CT": volume}, CLASSES) == {}


def test_preview_covers_the_whole_volume_for_scribbles_on_one_slice(scene):
    """Slicer's auto-complete base grows the scribbles' extent by max(3, ratio x span) voxels: for
    scribbles on one slice that is 3 slices each side.  The effect previews on the whole source volume."""
    shape = (20, 12, 14)
    volume = plain_volume_node(scene, shape, "tall")
    seg = new_segmentation(scene, volume)
    mask = np.zeros(shape, bool)
    mask[10, 4:8, 5:9] = True
    add_segment(seg, "Liver", mask, volume)
    merged = slicer.vtkOrientedImageData()
    seg.GenerateMergedLabelmapForAllSegments(merged, slicer.vtkSegmentation.EXTENT_UNION_OF_EFFECTIVE_SEGMENTS)
    assert merged.GetExtent()[4] == merged.GetExtent()[5] == 10  # the scribbles' region: one slice
    source = slicer.vtkOrientedImageData()
    source.ShallowCopy(volume.GetImageData())
    matrix = vtk.vtkMatrix4x4()
    volume.GetIJKToRASMatrix(matrix)
    source.SetImageToWorldMatrix(matrix)
    labels = np.zeros(shape, np.int16)
    labels[1:19, 2:10, 3:11] = 1  # the prediction spans almost every slice
    reference = mrml.whole_volume_geometry(source)
    assert reference.GetExtent() == source.GetExtent()
    preview = mrml.preview_labelmap(Volume(labels, mrml.geometry_from_node(volume)), CLASSES, ["Liver"], reference)
    values = _array_from_image(preview)
    assert values.shape == shape
    np.testing.assert_array_equal(values, labels)
