"""WeakSegLib.mrml.results against the real MRML library: label volumes as segmentation nodes (and
back, through ``.seg.nrrd``), datasets and predictions from nodes, the effect's preview labelmap."""

from __future__ import annotations

import numpy as np
import pytest
from mrml_scene import (
    SHAPE,
    drawn_scene,
    oblique_geometry,
    plain_volume_node,
    scene_removing_added_nodes,
    seg_nrrd_round_trip,
    vtk,
)

from WeakSegLib import mrml
from WeakSegLib.data.annotation import UNKNOWN, Box
from WeakSegLib.data.dataset import ClassInfo
from WeakSegLib.data.volume import Volume, write_volume
from WeakSegLib.mrml.nodes import _array_from_image, _array_from_vtk_matrix
from WeakSegLib.mrml.segments import _reference_image


@pytest.fixture
def scene():
    yield from scene_removing_added_nodes()


# ----------------------------------------------------------------------------------------------- results
def test_result_segmentation_and_seg_nrrd_round_trip(scene, tmp_path):
    geometry = oblique_geometry((9, 10, 11))
    volume = mrml.volume_to_node(Volume(np.zeros(geometry.shape, np.float32), geometry), "MR")
    labels = np.zeros(geometry.shape, np.int16)
    labels[2:6, 3:7, 4:9] = 1
    labels[4:7, 5:8, 2:5] = 2
    labels[0, 0, 0] = UNKNOWN
    classes = [ClassInfo(0, "Background", (0, 0, 0)), ClassInfo(1, "Liver", (216, 101, 79)),
               ClassInfo(2, "Tumor", (128, 174, 128)), ClassInfo(3, "Vessel", (0, 151, 206))]
    node = mrml.segmentation_node_from_labels(Volume(labels, geometry), classes, volume, name=mrml.result_name(volume))
    assert node.GetName() == "MR WeakSeg"
    assert node.GetScene() is scene and node.GetDisplayNode() is not None
    assert node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole()).GetID() == volume.GetID()
    segmentation = node.GetSegmentation()
    names = [segmentation.GetNthSegment(i).GetName() for i in range(segmentation.GetNumberOfSegments())]
    assert names == ["Liver", "Tumor", "Vessel"]  # no background segment; empty class kept
    np.testing.assert_allclose(segmentation.GetNthSegment(0).GetColor(), np.array([216, 101, 79]) / 255, atol=1e-6)
    back = mrml.labels_from_segmentation_node(node, volume, classes)
    np.testing.assert_array_equal(back.array, np.where(labels < 0, 0, labels))

    loaded = seg_nrrd_round_trip(scene, node, tmp_path / "result.seg.nrrd")
    loaded_names = [loaded.GetSegmentation().GetNthSegment(i).GetName()
                    for i in range(loaded.GetSegmentation().GetNumberOfSegments())]
    assert loaded_names == names
    for i in range(3):
        np.testing.assert_allclose(loaded.GetSegmentation().GetNthSegment(i).GetColor(),
                                   segmentation.GetNthSegment(i).GetColor(), atol=1e-6)
    np.testing.assert_array_equal(mrml.labels_from_segmentation_node(loaded, volume, classes).array, back.array)

    with pytest.raises(ValueError, match=r"class ids \[7\]"):
        mrml.segmentation_node_from_labels(Volume(np.full(geometry.shape, 7, np.int16), geometry), classes, volume)


def test_result_follows_the_volume_transform(scene):
    volume = plain_volume_node(scene, SHAPE, "transformed")
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    volume.SetAndObserveTransformNodeID(transform.GetID())
    labels = np.zeros(SHAPE, np.int16)
    labels[1:3, 2:4, 3:5] = 1
    node = mrml.segmentation_node_from_labels(Volume(labels, mrml.geometry_from_node(volume)),
                                              [ClassInfo(0, "Background", (0, 0, 0)), ClassInfo(1, "A", (9, 9, 9))],
                                              volume)
    assert node.GetParentTransformNode().GetID() == transform.GetID()


def test_dataset_and_predictions_from_nodes(scene, tmp_path):
    volume, seg, roi, points = drawn_scene(scene)
    for node in (roi, points):
        node.SetAttribute(mrml.ATTR_SEGMENTATION, seg.GetID())
    unlabelled = plain_volume_node(scene, SHAPE, "CT")  # same name: ids stay unique
    dataset, volumes = mrml.dataset_from_nodes([(volume, seg), (unlabelled, None)])
    assert [c.id for c in dataset.cases] == ["CT", "CT_2"]
    assert volumes == {"CT": volume, "CT_2": unlabelled}
    assert dataset.class_names == ["Background", "Liver", "Tumor", "Vessel"]
    first, second = dataset.cases
    assert first.annotation is not None and first.annotation.boxes == [Box(1, (1, 4, 3), (4, 9, 8))]
    assert first.annotation.labels[1, 10, 11] == 2  # markups found through WeakSeg.Segmentation
    assert second.annotation is None and second.image.array.dtype == np.float32

    # Predictions written by a worker come back as "<volume> WeakSeg" segmentations.
    prediction = np.zeros(SHAPE, np.int16)
    prediction[2:5, 3:8, 4:9] = 1
    write_volume(Volume(prediction, second.image.geometry), tmp_path / "predictions" / "CT_2.nii.gz")
    nodes = mrml.load_predictions(tmp_path, volumes, dataset.classes)
    assert list(nodes) == ["CT_2"]
    result = nodes["CT_2"]
    assert result.GetName() == "CT WeakSeg" and result.GetAttribute(mrml.ATTR_RESULT) == "true"
    np.testing.assert_array_equal(mrml.labels_from_segmentation_node(result, unlabelled, dataset.classes).array,
                                  prediction)



def test_preview_labelmap_for_the_effect(scene):
    """The prediction shown by the Segment Editor effect: value i+1 for the i-th selected segment."""
    geometry = oblique_geometry((6, 8, 10))
    volume = mrml.volume_to_node(Volume(np.zeros(geometry.shape, np.float32), geometry), "effect volume")
    labels = np.zeros(geometry.shape, np.int16)
    labels[1:4, 2:6, 3:8] = 1
    labels[2:3, 3:4, 4:6] = 2
    classes = [ClassInfo(0, "Background", (0, 0, 0)), ClassInfo(1, "Liver", (1, 1, 1)),
               ClassInfo(2, "Tumor", (2, 2, 2))]
    reference = _reference_image(volume)
    preview = mrml.preview_labelmap(Volume(labels, geometry), classes, ["tumor", "Background", "Liver"], reference)
    values = _array_from_image(preview)
    expected = np.select([labels == 2, labels == 0, labels == 1], [1, 2, 3])
    np.testing.assert_array_equal(values, expected)
    matrix = vtk.vtkMatrix4x4()
    preview.GetImageToWorldMatrix(matrix)
    np.testing.assert_allclose(_array_from_vtk_matrix(matrix), mrml.ijk_to_ras_from_geometry(geometry), atol=1e-9)
    # A sub-extent reference (what the effect uses around the seeds) gets the matching part.
    reference.SetExtent(2, 6, 1, 5, 0, 3)
    part = _array_from_image(mrml.preview_labelmap(Volume(labels, geometry), classes, ["Liver"], reference))
    np.testing.assert_array_equal(part, (labels[0:4, 1:6, 2:7] == 1).astype(np.int16))

