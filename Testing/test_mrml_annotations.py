"""WeakSegLib.mrml.annotations and .markups against the real MRML library: what a user drew
(segments, ROIs, point lists, transforms, other grids) as a WeakAnnotation; the user's nodes unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from mrml_scene import (
    SHAPE,
    add_segment,
    assert_same_snapshot,
    drawn_scene,
    new_segmentation,
    plain_volume_node,
    rotation,
    scene_removing_added_nodes,
    slicer,
    snapshot_segmentation,
    vtk,
)

from WeakSegLib import mrml
from WeakSegLib.data.annotation import UNKNOWN, AnnotationError, Box
from WeakSegLib.data.dataset import ClassInfo
from WeakSegLib.data.volume import Geometry, Volume
from WeakSegLib.mrml.nodes import _vtk_matrix_from_array


@pytest.fixture
def scene():
    yield from scene_removing_added_nodes()


def test_annotation_equals_what_was_drawn(scene):
    volume, seg, roi, points = drawn_scene(scene)
    annotation = mrml.annotation_from_nodes(seg, volume, roi_nodes=[roi], point_list_nodes=[points])
    classes = mrml.classes_from_segmentation(seg)
    assert [c.name for c in classes] == ["Background", "Liver", "Tumor", "Vessel"]
    assert annotation.num_classes == 4
    expected = np.full(SHAPE, UNKNOWN, np.int16)
    expected[0] = 0
    expected[3:5, 4:8, 5:9] = 1
    expected[4, 6:10, 8:10] = 2
    expected[6, 3, 2] = 2
    expected[1, 10, 11] = 2
    np.testing.assert_array_equal(annotation.labels, expected)
    assert annotation.boxes == [Box(1, (1, 4, 3), (4, 9, 8))]
    assert annotation.tags == {2: True, 3: False}
    assert annotation.size_ranges_ml == {1: (0.02, 0.5)}
    assert annotation.complete_classes == frozenset({2})
    assert annotation.geometry.isclose(mrml.geometry_from_node(volume))


def test_user_nodes_are_not_modified(scene):
    volume, seg, roi, points = drawn_scene(scene)
    before = snapshot_segmentation(seg)
    markups_before = [(n.GetMTime(), n.GetAttribute(mrml.ATTR_SEGMENT)) for n in (roi, points)]
    volume_before = (volume.GetMTime(), slicer.util.arrayFromVolume(volume).copy())
    mrml.annotation_from_nodes(seg, volume, roi_nodes=[roi], point_list_nodes=[points])
    mrml.classes_from_segmentation(seg)
    mrml.labels_from_segmentation_node(seg, volume)
    mrml.dataset_from_nodes([mrml.CaseNodes(volume, seg, [roi], [points])])
    assert_same_snapshot(before, snapshot_segmentation(seg))
    assert markups_before == [(n.GetMTime(), n.GetAttribute(mrml.ATTR_SEGMENT)) for n in (roi, points)]
    assert volume.GetMTime() == volume_before[0]
    np.testing.assert_array_equal(slicer.util.arrayFromVolume(volume), volume_before[1])


def test_closed_surface_segments_are_converted_on_a_copy(scene):
    volume = plain_volume_node(scene, (20, 20, 20), "ball volume")
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "surfaces")
    closed = slicer.vtkSegmentationConverter.GetSegmentationClosedSurfaceRepresentationName()
    seg.GetSegmentation().SetSourceRepresentationName(closed)
    sphere = vtk.vtkSphereSource()
    sphere.SetRadius(4.0)
    sphere.SetCenter(10.0, 10.0, 10.0)
    sphere.SetThetaResolution(64)
    sphere.SetPhiResolution(64)
    sphere.Update()
    segment = slicer.vtkSegment()
    segment.SetName("Ball")
    segment.AddRepresentation(closed, sphere.GetOutput())
    seg.GetSegmentation().AddSegment(segment)
    before = snapshot_segmentation(seg)
    annotation = mrml.annotation_from_nodes(seg, volume)
    assert_same_snapshot(before, snapshot_segmentation(seg))
    assert not seg.GetSegmentation().ContainsRepresentation("Binary labelmap")
    painted = annotation.labels == 1
    expected_ml = 4.0 / 3.0 * np.pi * 4.0**3 / 1000.0
    assert abs(painted.sum() / 1000.0 - expected_ml) < 0.25 * expected_ml
    assert painted[10, 10, 10] and not painted[10, 10, 16]


def test_segments_on_another_grid_are_resampled(scene):
    """Segments painted on a coarser, shifted, oblique grid land on the volume's voxels by nearest neighbour."""
    fine_geometry = Geometry((12, 14, 16), (1.0, 1.1, 1.3), (3.0, -2.0, 5.0), tuple(rotation("z", 10).ravel()))
    fine = mrml.volume_to_node(Volume(np.zeros(fine_geometry.shape, np.float32), fine_geometry), "fine")
    coarse_geometry = Geometry((6, 7, 8), (2.3, 2.1, 2.6), (2.1, -3.2, 4.3), tuple(rotation("y", 7).ravel()))
    coarse = mrml.volume_to_node(Volume(np.zeros(coarse_geometry.shape, np.float32), coarse_geometry), "coarse")
    seg = new_segmentation(scene, coarse, "drawn on coarse")
    coarse_mask = np.zeros(coarse_geometry.shape, bool)
    coarse_mask[1:4, 2:5, 3:6] = True
    coarse_mask[5, 6, 7] = True
    add_segment(seg, "Organ", coarse_mask, coarse)

    masks = mrml.segment_masks_on_volume(seg, fine)
    (mask,) = masks.values()
    assert mask.shape == fine_geometry.shape
    # Expected: each fine voxel centre takes the value of the coarse voxel it falls in.
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in fine_geometry.shape], indexing="ij"), -1).reshape(-1, 3)
    continuous = coarse_geometry.physical_to_index(fine_geometry.index_to_physical(grid.astype(float)))
    nearest = np.round(continuous).astype(int)
    inside = np.all((nearest >= 0) & (nearest < coarse_geometry.shape), axis=1)
    expected = np.zeros(len(grid), bool)
    expected[inside] = coarse_mask[tuple(nearest[inside].T)]
    expected = expected.reshape(fine_geometry.shape)
    near_tie = (np.abs(np.abs(continuous - np.floor(continuous)) - 0.5) < 1e-3).any(axis=1).reshape(fine_geometry.shape)
    assert expected.sum() > 50
    np.testing.assert_array_equal(mask[~near_tie], expected[~near_tie])

    annotation = mrml.annotation_from_nodes(seg, fine)
    np.testing.assert_array_equal(annotation.labels == 1, mask)


def test_transforms_between_nodes_are_applied(scene):
    volume = plain_volume_node(scene, SHAPE, "moved volume")
    seg = new_segmentation(scene, volume)
    mask = np.zeros(SHAPE, bool)
    mask[2, 3, 4] = True
    add_segment(seg, "Dot", mask, volume)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    shift = vtk.vtkMatrix4x4()
    shift.SetElement(0, 3, 2.0)  # +2 mm along R: two voxels along i
    transform.SetMatrixTransformToParent(shift)
    seg.SetAndObserveTransformNodeID(transform.GetID())
    (moved,) = mrml.segment_masks_on_volume(seg, volume).values()
    assert np.argwhere(moved).tolist() == [[2, 3, 6]]
    # The same transform on the volume too: they move together, nothing shifts.
    volume.SetAndObserveTransformNodeID(transform.GetID())
    (together,) = mrml.segment_masks_on_volume(seg, volume).values()
    assert np.argwhere(together).tolist() == [[2, 3, 4]]
    # Points are placed in world coordinates and mapped into the volume's frame.
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    points.AddControlPoint(7.0, 3.0, 2.0)  # world (7, 3, 2) = volume-local (5, 3, 2)
    points.SetAttribute(mrml.ATTR_SEGMENT, "Dot")
    annotation = mrml.annotation_from_nodes(seg, volume, point_list_nodes=[points])
    assert annotation.labels[2, 3, 5] == 1


def test_oblique_roi_gives_voxel_bounding_box(scene):
    volume = plain_volume_node(scene, (20, 24, 28), "roi volume", spacing=(1.0, 1.0, 2.0))
    seg = new_segmentation(scene, volume)
    add_segment(seg, "Kidney", np.zeros((20, 24, 28), bool), volume)
    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "tilted")
    roi.SetCenter(12.0, 11.0, 20.0)
    roi.SetSize(6.0, 4.0, 8.0)
    roi.SetAttribute(mrml.ATTR_SEGMENT, "kidney")  # case-insensitive
    tilt = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = np.eye(4)
    matrix[:3, :3] = rotation("z", 30.0)
    tilt.SetMatrixTransformToParent(_vtk_matrix_from_array(matrix))
    roi.SetAndObserveTransformNodeID(tilt.GetID())
    annotation = mrml.annotation_from_nodes(seg, volume, roi_nodes=[roi])
    (box,) = annotation.boxes
    # Independent expectation: rotate the 8 corners, RAS = (i, j, 2k), take the voxel-centre hull.
    half = np.array([3.0, 2.0, 4.0])
    corners = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)]) * half
    corners = (corners + [12.0, 11.0, 20.0]) @ rotation("z", 30.0).T
    ijk = corners / [1.0, 1.0, 2.0]
    lo = np.ceil(ijk.min(0) - 1e-6).astype(int)
    hi = np.floor(ijk.max(0) + 1e-6).astype(int) + 1
    assert box == Box(1, tuple(lo[::-1]), tuple(hi[::-1]))

    flat = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "flat")
    flat.SetCenter(10.0, 10.0, 10.3)
    flat.SetSize(4.0, 4.0, 0.0)
    flat.SetAttribute(mrml.ATTR_SEGMENT, "Kidney")
    annotation = mrml.annotation_from_nodes(seg, volume, roi_nodes=[flat])
    assert annotation.boxes[0].is_per_slice and annotation.boxes[0].start[0] == 5


def test_points_with_radius(scene):
    volume = plain_volume_node(scene, SHAPE, "points volume", spacing=(0.5, 0.5, 1.0))
    seg = new_segmentation(scene, volume)
    add_segment(seg, "Lesion", np.zeros(SHAPE, bool), volume)
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode")
    points.AddControlPoint(3.0, 3.0, 4.0)
    points.SetAttribute(mrml.ATTR_SEGMENT, "Lesion")
    points.SetAttribute(mrml.ATTR_RADIUS_MM, "1.2")
    annotation = mrml.annotation_from_nodes(seg, volume, point_list_nodes=[points])
    k, j, i = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    dist = np.sqrt((i * 0.5 - 3.0) ** 2 + (j * 0.5 - 3.0) ** 2 + (k * 1.0 - 4.0) ** 2)
    np.testing.assert_array_equal(annotation.labels == 1, dist <= 1.2)


def test_readable_errors(scene):
    volume, seg, roi, points = drawn_scene(scene)
    roi.RemoveAttribute(mrml.ATTR_SEGMENT)
    with pytest.raises(AnnotationError, match="does not say which segment"):
        mrml.annotation_from_nodes(seg, volume, roi_nodes=[roi])
    roi.SetAttribute(mrml.ATTR_SEGMENT, "Spleen")
    with pytest.raises(AnnotationError, match="not one of the classes"):
        mrml.annotation_from_nodes(seg, volume, roi_nodes=[roi])
    mrml.set_segment_priors(seg, "Liver", present=False)  # but it is scribbled
    with pytest.raises(AnnotationError, match=r"segmentation 'annotation' on volume 'CT'.*1=Liver.*tagged absent"):
        mrml.annotation_from_nodes(seg, volume)
    with pytest.raises(AnnotationError, match="not one of the classes"):
        mrml.annotation_from_nodes(seg, volume, classes=[ClassInfo(0, "Background", (0, 0, 0)),
                                                         ClassInfo(1, "Liver", (1, 1, 1))])



def test_markups_for_segmentation(scene):
    volume, seg, roi, points = drawn_scene(scene)
    assert mrml.markups_for_segmentation(seg) == ([], [])
    roi.SetAttribute(mrml.ATTR_SEGMENTATION, seg.GetID())
    rois, point_lists = mrml.markups_for_segmentation(seg)
    assert [n.GetID() for n in rois] == [roi.GetID()] and point_lists == []

