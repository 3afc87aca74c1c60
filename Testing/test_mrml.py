"""WeakSegLib.mrml against the real MRML library (the ``slicer-core`` wheel): real scenes, real
segmentation nodes, real ``.seg.nrrd`` and NRRD files — no mocks."""

from __future__ import annotations

import json
import os
import signal
import sys
import textwrap
import time

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the MRML library: pip install slicer-core (or run inside Slicer)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("'import slicer' gives no vtkMRMLScene (not slicer-core / Slicer)", allow_module_level=True)

import vtk  # noqa: E402

from WeakSegLib import mrml  # noqa: E402
from WeakSegLib.annotation import UNKNOWN, AnnotationError, Box  # noqa: E402
from WeakSegLib.dataset import ClassInfo  # noqa: E402
from WeakSegLib.volume import Geometry, Volume, read_volume, write_volume  # noqa: E402


# ----------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def scene():
    return mrml.setup_scene()


@pytest.fixture(autouse=True)
def _clean_scene(scene):
    """Remove the nodes a test added, so tests do not see each other's nodes."""
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    yield
    added = [scene.GetNthNode(i) for i in range(scene.GetNumberOfNodes())]
    for node in added:
        if node is not None and node.GetID() not in before and scene.IsNodePresent(node):
            scene.RemoveNode(node)


def rotation(axis: str, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def oblique_geometry(shape=(7, 11, 13)) -> Geometry:
    rot = rotation("z", 20.0) @ rotation("x", 17.0)
    return Geometry(shape, (0.7, 0.9, 3.5), (-12.5, 30.25, 7.0), tuple(rot.ravel()))


def plain_volume_node(scene, shape=(8, 12, 14), name="plain", spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0)):
    """A volume node whose IJKToRAS is diag(spacing) + origin (RAS): RAS = ijk * spacing + origin."""
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, np.arange(np.prod(shape), dtype=np.float32).reshape(shape))
    node.SetSpacing(*spacing)
    node.SetOrigin(*origin)
    return node


def add_segment(segmentation_node, name, mask, reference_volume_node, color=(0.5, 0.5, 0.5)):
    """Paint a segment through Slicer's own import path (slicer.util -> segmentations logic)."""
    segment_id = segmentation_node.GetSegmentation().AddEmptySegment("", name, list(color))
    if mask.any():
        slicer.util.updateSegmentBinaryLabelmapFromArray(mask.astype(np.uint8), segmentation_node, segment_id,
                                                         reference_volume_node)
    return segment_id


def new_segmentation(scene, volume_node, name="annotation"):
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    node.SetReferenceImageGeometryParameterFromVolumeNode(volume_node)
    return node


def snapshot_segmentation(node) -> dict:
    segmentation = node.GetSegmentation()
    segments = []
    for i in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(i)
        segment = segmentation.GetSegment(segment_id)
        tags = {k: mrml._get_tag(segment, k) for k in (mrml.TAG_SIZE_RANGE_ML, mrml.TAG_PRESENT, mrml.TAG_COMPLETE,
                                                        "Custom")}
        reps = []
        for rep in ("Binary labelmap", "Closed surface"):
            reps.append((rep, segment.GetRepresentation(rep) is not None))
        internal = node.GetBinaryLabelmapInternalRepresentation(segment_id)
        array = None
        if internal is not None and internal.GetPointData().GetScalars() is not None:
            array = np.array(mrml._array_from_image(internal), copy=True)
        segments.append((segment_id, segment.GetName(), tuple(segment.GetColor()), tags, reps,
                         segment.GetLabelValue(), array))
    return {"node_mtime": node.GetMTime(), "segmentation_mtime": segmentation.GetMTime(),
            "source": segmentation.GetSourceRepresentationName(), "segments": segments,
            "layers": segmentation.GetNumberOfLayers()}


def assert_same_snapshot(a: dict, b: dict) -> None:
    assert a["node_mtime"] == b["node_mtime"]
    assert a["segmentation_mtime"] == b["segmentation_mtime"]
    assert a["source"] == b["source"] and a["layers"] == b["layers"]
    assert len(a["segments"]) == len(b["segments"])
    for sa, sb in zip(a["segments"], b["segments"]):
        assert sa[:6] == sb[:6]
        if sa[6] is None:
            assert sb[6] is None
        else:
            np.testing.assert_array_equal(sa[6], sb[6])


# ----------------------------------------------------------------------------------------------- geometry
def test_volume_round_trip_oblique_anisotropic(scene):
    geometry = oblique_geometry()
    volume = Volume(np.random.default_rng(0).normal(size=geometry.shape).astype(np.float32), geometry)
    node = mrml.volume_to_node(volume, "oblique")
    back = mrml.volume_from_node(node)
    np.testing.assert_array_equal(back.array, volume.array)
    assert back.array.dtype == np.float32
    np.testing.assert_allclose(back.geometry.spacing, geometry.spacing, atol=1e-9)
    np.testing.assert_allclose(back.geometry.origin, geometry.origin, atol=1e-9)
    np.testing.assert_allclose(back.geometry.direction, geometry.direction, atol=1e-12)


def test_ijk_to_ras_is_lps_flipped(scene):
    """A voxel's RAS position from the node's IJKToRAS equals the LPS position of the core flipped."""
    geometry = oblique_geometry()
    node = mrml.volume_to_node(Volume(np.zeros(geometry.shape, np.int16), geometry), "v")
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    m = mrml._array_from_vtk_matrix(matrix)
    for kji in [(0, 0, 0), (3, 5, 7), (6, 10, 12), (1.5, 2.25, 0.5)]:
        ras = m @ np.array([kji[2], kji[1], kji[0], 1.0])
        lps = geometry.index_to_physical(np.array(kji, float))
        np.testing.assert_allclose(ras[:3] * [-1, -1, 1], lps, atol=1e-9)


def _load_volume_file(path):
    """slicer.util.loadVolume where the application exists, else the Volumes logic (slicer-core)."""
    try:
        return slicer.util.loadVolume(str(path))
    except (ImportError, AttributeError):
        node = slicer.modules.volumes.logic().AddArchetypeVolume(str(path), "loaded", 0)
        assert node is not None, f"Volumes logic could not read {path}"
        return node


def test_nrrd_file_round_trip_sub_voxel(scene, tmp_path):
    """SimpleITK (LPS) writes a file, Slicer (RAS) reads it: geometry identical to sub-micron accuracy."""
    geometry = oblique_geometry((9, 10, 11))
    array = np.random.default_rng(1).integers(-100, 100, size=geometry.shape).astype(np.int16)
    path = write_volume(Volume(array, geometry), tmp_path / "oblique.nrrd")
    node = _load_volume_file(path)
    loaded = mrml.volume_from_node(node)
    np.testing.assert_array_equal(loaded.array, array)
    assert loaded.geometry.isclose(geometry, atol_mm=1e-4), loaded.geometry.describe()
    # A physical point maps to the same continuous index on both sides (sub-voxel agreement).
    point = np.array([-3.3, 31.7, 12.2])
    np.testing.assert_allclose(loaded.geometry.physical_to_index(point), geometry.physical_to_index(point), atol=1e-5)

    # And back: Slicer writes the node, SimpleITK reads it.
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(tmp_path / "written.nrrd"))
    assert storage.WriteData(node)
    again = read_volume(tmp_path / "written.nrrd")
    np.testing.assert_array_equal(again.array, array)
    assert again.geometry.isclose(geometry, atol_mm=1e-4), again.geometry.describe()


def test_vector_volume_gives_channels(scene):
    geometry = oblique_geometry((4, 5, 6))
    array = np.random.default_rng(2).normal(size=(*geometry.shape, 2)).astype(np.float32)
    node = mrml.volume_to_node(Volume(array, geometry), "two channels")
    assert node.IsA("vtkMRMLVectorVolumeNode")
    back = mrml.volume_from_node(node)
    assert back.array.shape == (*geometry.shape, 2)
    np.testing.assert_array_equal(back.array, array)


def test_label_map_node_and_probabilities(scene):
    geometry = oblique_geometry((4, 5, 6))
    labels = np.random.default_rng(3).integers(0, 3, size=geometry.shape).astype(np.uint8)
    node = mrml.volume_to_node(Volume(labels, geometry), "labels", node_class="vtkMRMLLabelMapVolumeNode")
    assert node.IsA("vtkMRMLLabelMapVolumeNode")
    np.testing.assert_array_equal(mrml.volume_from_node(node).array, labels)
    with pytest.raises(ValueError, match="integer"):
        mrml.volume_to_node(Volume(np.full(geometry.shape, 0.5), geometry), "x", node_class="vtkMRMLLabelMapVolumeNode")

    probabilities = Volume(np.random.default_rng(4).random((*geometry.shape, 3)).astype(np.float32), geometry)
    p_node = mrml.probabilities_to_node(probabilities, 2, "p2")
    assert p_node.IsA("vtkMRMLScalarVolumeNode") and not p_node.IsA("vtkMRMLVectorVolumeNode")
    np.testing.assert_array_equal(mrml.volume_from_node(p_node).array, probabilities.array[..., 2])
    with pytest.raises(ValueError, match="out of range"):
        mrml.probabilities_to_node(probabilities, 3, "bad")


def test_no_image_data_is_a_clear_error(scene):
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "empty")
    with pytest.raises(ValueError, match="no image data"):
        mrml.volume_from_node(node)


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
    assert mrml._get_tag(segment, mrml.TAG_SIZE_RANGE_ML) == "60.0,250.5"
    assert mrml._get_tag(segment, mrml.TAG_PRESENT) == "true"

    path = tmp_path / "priors.seg.nrrd"
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    assert storage.WriteData(seg)
    loaded = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "loaded")
    reader = slicer.vtkMRMLSegmentationStorageNode()
    reader.SetFileName(str(path))
    assert reader.ReadData(loaded)
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


# ----------------------------------------------------------------------------------------------- annotation
SHAPE = (8, 12, 14)  # (z, y, x) of the plain volume: RAS = (i, j, k)


def drawn_scene(scene):
    """A plain volume, a segmentation with scribbles + tags, an ROI and a point list."""
    volume = plain_volume_node(scene, SHAPE, "CT")
    seg = new_segmentation(scene, volume)
    background = np.zeros(SHAPE, bool)
    background[0, :, :] = True
    liver = np.zeros(SHAPE, bool)
    liver[3:5, 4:8, 5:9] = True
    tumor = np.zeros(SHAPE, bool)
    tumor[4, 6:10, 8:10] = True  # overlaps the liver at [4, 6:8, 8]: tumor (later) wins
    add_segment(seg, "Liver", liver, volume, (0.8, 0.4, 0.3))
    add_segment(seg, "Background", background, volume, (0.0, 0.0, 0.0))
    tumor_id = add_segment(seg, "Tumor", tumor, volume, (0.9, 0.9, 0.2))
    vessel_id = add_segment(seg, "Vessel", np.zeros(SHAPE, bool), volume, (0.2, 0.2, 0.9))
    mrml.set_segment_priors(seg, "Liver", size_range_ml=(0.02, 0.5), complete=False)
    mrml.set_segment_priors(seg, tumor_id, present=True, complete=True)
    mrml.set_segment_priors(seg, vessel_id, present=False)
    seg.GetSegmentation().GetSegment(tumor_id).SetTag("Custom", "kept")

    roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "liver box")
    roi.SetCenter(5.0, 6.0, 2.0)
    roi.SetSize(4.0, 4.0, 2.0)  # RAS x in [3, 7], y in [4, 8], z in [1, 3]
    roi.SetAttribute(mrml.ATTR_SEGMENT, "Liver")
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "tumor clicks")
    points.AddControlPoint(2.0, 3.0, 6.0)
    points.AddControlPoint(11.2, 9.9, 1.1)  # nearest voxel (i, j, k) = (11, 10, 1)
    points.SetAttribute(mrml.ATTR_SEGMENT, tumor_id)  # an ID works as well as a name
    return volume, seg, roi, points


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
    tilt.SetMatrixTransformToParent(mrml._vtk_matrix_from_array(matrix))
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

    path = tmp_path / "result.seg.nrrd"
    writer = slicer.vtkMRMLSegmentationStorageNode()
    writer.SetFileName(str(path))
    assert writer.WriteData(node)
    loaded = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "read back")
    reader = slicer.vtkMRMLSegmentationStorageNode()
    reader.SetFileName(str(path))
    assert reader.ReadData(loaded)
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


def test_markups_for_segmentation(scene):
    volume, seg, roi, points = drawn_scene(scene)
    assert mrml.markups_for_segmentation(seg) == ([], [])
    roi.SetAttribute(mrml.ATTR_SEGMENTATION, seg.GetID())
    rois, point_lists = mrml.markups_for_segmentation(seg)
    assert [n.GetID() for n in rois] == [roi.GetID()] and point_lists == []


# ----------------------------------------------------------------------------------------------- GUI helpers
def test_tables_of_the_module(scene):
    volume, seg, roi, points = drawn_scene(scene)
    other = plain_volume_node(scene, SHAPE, "MR")
    empty = new_segmentation(scene, other, "MR annotation")
    add_segment(empty, "Liver", np.zeros(SHAPE, bool), other)
    result = mrml.segmentation_node_from_labels(Volume(np.zeros(SHAPE, np.int16), mrml.geometry_from_node(volume)),
                                                mrml.classes_from_segmentation(seg), volume, "CT WeakSeg")
    result.SetAttribute(mrml.ATTR_RESULT, "true")
    assert mrml.annotated_pairs(scene) == [(volume, seg), (other, empty)]  # the result is not an annotation
    assert mrml.reference_volume(seg) is volume

    roi.SetAttribute(mrml.ATTR_SEGMENTATION, seg.GetID())
    status = mrml.case_status(volume, seg)
    assert status.startswith("Ready:") and "1 box(es)" in status and "2 tag(s)" in status
    assert mrml.case_status(other, empty).startswith("Empty")
    assert mrml.case_status(other, None).startswith("No annotation")
    mrml.set_segment_priors(seg, "Liver", present=False)
    assert mrml.case_status(volume, seg).startswith("Error:") and "tagged absent" in mrml.case_status(volume, seg)
    mrml.clear_segment_priors(seg, "Liver", ["present"])

    rows = mrml.prior_rows([seg, None, empty])
    assert [(r.segmentation_node.GetName(), r.name) for r in rows] == [
        ("annotation", "Liver"), ("annotation", "Background"), ("annotation", "Tumor"), ("annotation", "Vessel"),
        ("MR annotation", "Liver")]
    assert rows[0].priors.size_range_ml == (0.02, 0.5) and rows[0].color == (204, 102, 76)

    tumor = rows[2].segment_id
    assert mrml.apply_prior_edit(seg, tumor, "max_ml", "12.5 mL").size_range_ml == (0.0, 12.5)
    assert mrml.apply_prior_edit(seg, tumor, "min_ml", "2").size_range_ml == (2.0, 12.5)
    assert mrml.apply_prior_edit(seg, tumor, "max_ml", "").size_range_ml == (2.0, float("inf"))
    assert mrml.apply_prior_edit(seg, tumor, "min_ml", "").size_range_ml is None
    with pytest.raises(ValueError, match="not a size"):
        mrml.apply_prior_edit(seg, tumor, "min_ml", "big")
    with pytest.raises(ValueError, match="min <= max"):
        mrml.apply_prior_edit(seg, "Liver", "min_ml", "3")  # above its max of 0.5 mL: refused, unchanged
    assert mrml.get_segment_priors(seg, "Liver").size_range_ml == (0.02, 0.5)
    assert mrml.apply_prior_edit(seg, tumor, "presence", "absent").present is False
    assert mrml.apply_prior_edit(seg, tumor, "presence", "not set").present is None
    assert mrml.apply_prior_edit(seg, tumor, "complete", False).complete is None
    assert mrml.apply_prior_edit(seg, tumor, "complete", True).complete is True


def test_missing_requirements():
    assert mrml.missing_requirements(["# comment", "", "numpy>=1.0", "SimpleITK>=2.0  # ok"]) == []
    assert mrml.missing_requirements(["numpy>=999"]) == ["numpy>=999"]
    assert mrml.missing_requirements(["surely-not-installed-pkg>=1"]) == ["surely-not-installed-pkg>=1"]
    assert mrml.describe_gpu() is None or isinstance(mrml.describe_gpu(), str)


def test_preview_labelmap_for_the_effect(scene):
    """The prediction shown by the Segment Editor effect: value i+1 for the i-th selected segment."""
    geometry = oblique_geometry((6, 8, 10))
    volume = mrml.volume_to_node(Volume(np.zeros(geometry.shape, np.float32), geometry), "effect volume")
    labels = np.zeros(geometry.shape, np.int16)
    labels[1:4, 2:6, 3:8] = 1
    labels[2:3, 3:4, 4:6] = 2
    classes = [ClassInfo(0, "Background", (0, 0, 0)), ClassInfo(1, "Liver", (1, 1, 1)),
               ClassInfo(2, "Tumor", (2, 2, 2))]
    reference = mrml._reference_image(volume)
    preview = mrml.preview_labelmap(Volume(labels, geometry), classes, ["tumor", "Background", "Liver"], reference)
    values = mrml._array_from_image(preview)
    expected = np.select([labels == 2, labels == 0, labels == 1], [1, 2, 3])
    np.testing.assert_array_equal(values, expected)
    matrix = vtk.vtkMatrix4x4()
    preview.GetImageToWorldMatrix(matrix)
    np.testing.assert_allclose(mrml._array_from_vtk_matrix(matrix), mrml.ijk_to_ras_from_geometry(geometry), atol=1e-9)
    # A sub-extent reference (what the effect uses around the seeds) gets the matching part.
    reference.SetExtent(2, 6, 1, 5, 0, 3)
    part = mrml._array_from_image(mrml.preview_labelmap(Volume(labels, geometry), classes, ["Liver"], reference))
    np.testing.assert_array_equal(part, (labels[0:4, 1:6, 2:7] == 1).astype(np.int16))


def test_compatible_model(tmp_path):
    classes = [ClassInfo(0, "Background", (0, 0, 0)), ClassInfo(1, "Liver", (1, 1, 1))]
    assert not mrml.compatible_model(None, classes) and not mrml.compatible_model(tmp_path, classes)
    (tmp_path / "model.json").write_text(json.dumps({"classes": [c.to_dict() for c in classes]}))
    assert mrml.compatible_model(tmp_path, [ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "LIVER", (0, 0, 0))])
    assert not mrml.compatible_model(tmp_path, classes + [ClassInfo(2, "Tumor", (0, 0, 0))])
    copied = mrml.copy_model_folder(tmp_path, tmp_path.parent / "copied_model")
    assert (copied / "model.json").is_file()
    (tmp_path.parent / "busy").mkdir()
    (tmp_path.parent / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        mrml.copy_model_folder(tmp_path, tmp_path.parent / "busy")


# ----------------------------------------------------------------------------------------------- progress chart
def test_progress_chart_nodes(scene):
    history = [{"type": "progress", "iteration": i, "losses": {"pce": 1.0 / (i + 1), "size": 0.1},
                "violations": {"size": 0.5 / (i + 1)}} for i in range(5)]
    history.append({"type": "progress", "iteration": 5, "losses": {"pce": 0.1}})  # a term missing: NaN
    table, chart = mrml.ensure_progress_chart(scene)
    assert mrml.ensure_progress_chart(scene) == (table, chart)  # reused
    mrml.update_progress_chart(table, chart, history)
    mrml.update_progress_chart(table, chart, history)  # no duplicate series
    assert table.GetNumberOfColumns() == 4
    assert chart.GetNumberOfPlotSeriesNodes() == 3
    columns = mrml.progress_history_columns(history)
    assert list(columns) == ["iteration", "loss: pce", "loss: size", "violation: size"]
    assert np.isnan(columns["loss: size"][-1])
    assert mrml.format_eta(75.2) == "1 min 15 s" and mrml.format_eta(5) == "5 s" and mrml.format_eta(None) == ""
    assert mrml.format_eta(3 * 3600 + 120) == "3 h 02 min"


# ----------------------------------------------------------------------------------------------- worker process
FAKE_WORKER = textwrap.dedent("""
    import json, signal, subprocess, sys, time
    mode = sys.argv[1]
    def say(**message):
        print(json.dumps(message), flush=True)
    def on_term(*_):
        say(type="done", status="cancelled", model="model", predictions={})
        sys.exit(4)
    signal.signal(signal.SIGTERM, signal.SIG_IGN if mode == "stubborn" else on_term)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    say(type="start", child=child.pid)
    print("a plain line from a library", flush=True)
    print("warning on stderr", file=sys.stderr, flush=True)
    steps = 3 if mode == "quick" else 600
    for i in range(steps):
        say(type="progress", fraction=i / steps, iteration=i, eta_s=1.0, losses={"pce": 1.0 / (i + 1)})
        time.sleep(0.05)
    if mode == "fail":
        pass
    child.kill()
    say(type="done", status="completed", model="model", predictions={})
""")


def _start_fake(tmp_path, mode):
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER)
    return mrml.WorkerProcess([sys.executable, str(script), mode], cwd=tmp_path,
                              stderr_path=tmp_path / "stderr.log").start()


def _wait_for(worker, kind, timeout=20.0):
    end = time.monotonic() + timeout
    seen = []
    while time.monotonic() < end:
        seen += worker.poll()
        if any(m["type"] == kind for m in seen):
            return seen
        time.sleep(0.02)
    raise AssertionError(f"no '{kind}' message within {timeout} s: {seen}")


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is dead for our purposes
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return True


def test_worker_process_streams_messages(tmp_path):
    worker = _start_fake(tmp_path, "quick")
    assert worker.wait(timeout=30) == 0
    messages = worker.poll()
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "start" and kinds[-1] == "done" and kinds.count("progress") == 3
    assert {"type": "log", "level": "INFO", "message": "a plain line from a library"} in messages
    assert worker.done_message["status"] == "completed"
    assert "warning on stderr" in (tmp_path / "stderr.log").read_text()
    assert worker.finished


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_worker_cancel_sends_sigterm_to_the_tree(tmp_path):
    worker = _start_fake(tmp_path, "slow")
    start = _wait_for(worker, "progress")
    child = next(m["child"] for m in start if m["type"] == "start")
    worker.cancel(grace_s=20)
    assert worker.wait(timeout=20) == mrml.EXIT_CANCELLED
    worker.poll()
    assert worker.done_message["status"] == "cancelled"
    time.sleep(0.3)
    assert not _alive(child)  # SIGTERM reached the grandchild too (process group)
    assert "cancelled" in mrml.describe_worker_exit(worker.returncode)


@pytest.mark.skipif(os.name == "nt", reason="POSIX signals")
def test_worker_killed_after_grace_period(tmp_path):
    worker = _start_fake(tmp_path, "stubborn")
    start = _wait_for(worker, "progress")
    child = next(m["child"] for m in start if m["type"] == "start")
    worker.cancel(grace_s=0.5)
    code = worker.wait(timeout=20)
    assert code == -signal.SIGKILL
    time.sleep(0.3)
    assert not _alive(child)
    assert "signal 9" in mrml.describe_worker_exit(code)


def test_worker_helpers(tmp_path):
    assert mrml.parse_worker_line('{"type": "error", "message": "out of memory"}')["type"] == "error"
    assert mrml.parse_worker_line("{not json")["type"] == "log"
    assert mrml.parse_worker_line('{"no": "type"}')["type"] == "log"
    command = mrml.worker_command(tmp_path, "/opt/Slicer/PythonSlicer")
    assert command == ["/opt/Slicer/PythonSlicer", "-m", "WeakSegLib", "worker", str(tmp_path)]
    env = mrml.worker_environment({"PYTHONPATH": "/x"}, device="cpu")
    assert env["PYTHONPATH"].split(os.pathsep) == [str(mrml.library_root()), "/x"]
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["PYTHONUNBUFFERED"] == "1"
    assert (mrml.library_root() / "WeakSegLib" / "mrml.py").is_file()
    fake_app = tmp_path / "bin"
    fake_app.mkdir()
    (fake_app / "PythonSlicer").write_text("")
    assert mrml.find_python_executable(str(fake_app)) == str(fake_app / "PythonSlicer")
    assert mrml.find_python_executable(None) == sys.executable
    assert "out of memory" in mrml.describe_worker_exit(3, "CUDA out of memory", "/tmp/log")
    assert "refused" in mrml.describe_worker_exit(2, "no annotation")
    assert "exit code 1" in mrml.describe_worker_exit(1)
    assert mrml.describe_message({"type": "progress", "fraction": 0.5}) is None
    assert mrml.describe_message({"type": "start", "pid": 7, "cases": 2, "device": "cuda"}) == \
        "Worker started (pid 7): 2 case(s) on cuda."
    assert mrml.describe_message({"type": "done", "status": "completed", "seconds": 65, "predictions": {"a": "p"}}) == \
        "Worker completed in 1 min 05 s; 1 segmentation(s) written."
    assert mrml.describe_message({"type": "error", "message": "OOM"}) == "ERROR: OOM"
    assert mrml.describe_message({"type": "log", "level": "WARNING", "message": "w"}) == "WARNING: w"


# ----------------------------------------------------------------------------------------------- end to end
def test_end_to_end_with_the_real_worker(scene, tmp_path):
    """Nodes -> job -> `python -m WeakSegLib worker` -> predictions back as segmentations (Dice > 0.7)."""
    pytest.importorskip("WeakSegLib.worker", reason="WeakSegLib.worker is not written yet")
    shape = (24, 32, 32)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    truth = ((zz - 12) ** 2 + (yy - 16) ** 2 + (xx - 15) ** 2) <= 7**2
    image = np.where(truth, 1.0, 0.0) + np.random.default_rng(0).normal(0, 0.2, shape)
    geometry = Geometry(shape, (1.0, 1.0, 1.5), (0.0, 0.0, 0.0))
    volume = mrml.volume_to_node(Volume(image.astype(np.float32), geometry), "phantom")
    seg = new_segmentation(scene, volume, "scribbles")
    organ = np.zeros(shape, bool)
    organ[12, 14:19, 12:19] = True
    background = np.zeros(shape, bool)
    background[12, 2:5, 2:30] = True
    background[3, 10:20, 10:20] = True
    add_segment(seg, "Background", background, volume)
    add_segment(seg, "Organ", organ, volume)
    session = mrml.TrainingSession([(volume, seg)], {"iterations": 150, "device": "cpu", "seed": 0},
                                   job_dir=tmp_path / "job")
    session.start()
    assert session.status == "running" and (tmp_path / "job" / "job.json").is_file()
    seen = []
    while session.running:  # what the module's QTimer does
        seen += session.poll()
        time.sleep(0.2)
    seen += session.poll()
    session.finish()
    assert session.status == "completed", session.error_message
    assert any(m["type"] == "progress" for m in seen) and session.history and session.fraction == 1.0
    assert session.model_dir is not None and mrml.model_classes(session.model_dir)[1].name == "Organ"
    result = session.result_nodes["phantom"]
    assert result.GetName() == "phantom WeakSeg"
    classes = session.classes
    predicted = mrml.labels_from_segmentation_node(result, volume, classes).array == 1
    dice = 2 * (predicted & truth).sum() / (predicted.sum() + truth.sum())
    assert dice > 0.7, f"Dice {dice:.3f}"

    # The saved model segments a volume in a background process too.
    saved = mrml.copy_model_folder(session.model_dir, tmp_path / "saved model")
    other = mrml.volume_to_node(Volume(image.astype(np.float32), geometry), "new scan")
    prediction = mrml.PredictionSession(saved, [other], device="cpu", job_dir=tmp_path / "predict").start()
    assert prediction.wait(timeout=600) == "completed", prediction.error_message
    again = mrml.labels_from_segmentation_node(prediction.result_nodes["new_scan"], other, classes).array == 1
    assert 2 * (again & truth).sum() / (again.sum() + truth.sum()) > 0.7
    assert prediction.result_nodes["new_scan"].GetName() == "new scan WeakSeg"


def test_sessions_report_failures(scene, tmp_path):
    volume, seg, roi, points = drawn_scene(scene)
    with pytest.raises(FileNotFoundError, match="not a WeakSeg model folder"):
        mrml.PredictionSession(tmp_path, [volume])
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "model.json").write_text(json.dumps({"classes": [
        {"id": 0, "name": "Background", "color": [0, 0, 0]}, {"id": 1, "name": "Liver", "color": [1, 2, 3]}]}))
    broken = mrml.PredictionSession(tmp_path / "model", [volume], device="cpu", job_dir=tmp_path / "p").start()
    assert broken.wait(timeout=300) == "failed"
    assert "Segmentation failed" in broken.error_message and broken.result_nodes == {}
    empty = new_segmentation(scene, volume, "nothing drawn")
    add_segment(empty, "Liver", np.zeros(SHAPE, bool), volume)
    pytest.importorskip("WeakSegLib.worker", reason="WeakSegLib.worker is not written yet")
    with pytest.raises(AnnotationError, match="None of the volumes has an annotation"):
        mrml.TrainingSession([(volume, empty)], {"iterations": 1}, job_dir=tmp_path / "t").start()


# ----------------------------------------------------------------------------------------------- module Logic
@pytest.fixture
def weakseg_module(scene, tmp_path, monkeypatch):
    """Import WeakSeg/WeakSeg.py outside Slicer: real MRML (slicer-core), minimal stand-ins for what only
    the application provides (Qt timer, slicer.app, parameter node wrapper, PyTorch extension)."""
    import types
    import unittest

    qt = types.ModuleType("qt")

    class QTimer:
        def setInterval(self, ms):
            pass

        def connect(self, signal_name, slot):
            pass

        def start(self):
            pass

        def stop(self):
            pass

    qt.QTimer = QTimer
    i18n = types.ModuleType("slicer.i18n")
    i18n.tr = lambda text: text
    i18n.translate = lambda context, text: text
    wrapper = types.ModuleType("slicer.parameterNodeWrapper")
    stores: dict = {}

    def parameterNodeWrapper(cls):
        defaults = {name: getattr(cls, name, None) for name in cls.__annotations__}

        class Wrapped:
            def __init__(self, node):
                self.__dict__["_values"] = stores.setdefault(id(node), dict(defaults))

            def __getattr__(self, name):
                return self._values[name]

            def __setattr__(self, name, value):
                assert name in defaults, f"{name} is not a parameter"
                self._values[name] = value

        return Wrapped

    wrapper.parameterNodeWrapper = parameterNodeWrapper
    wrapper.WithinRange = lambda low, high: None
    scripted = types.ModuleType("slicer.ScriptedLoadableModule")
    parameter_node = slicer.vtkMRMLScriptedModuleNode()

    class ScriptedLoadableModuleLogic:
        def __init__(self):
            pass

        def getParameterNode(self):
            return parameter_node

    class ScriptedLoadableModuleTest(unittest.TestCase):
        def delayDisplay(self, message, *args, **kwargs):
            pass

    scripted.ScriptedLoadableModule = type("ScriptedLoadableModule", (), {})
    scripted.ScriptedLoadableModuleWidget = type("ScriptedLoadableModuleWidget", (), {})
    scripted.ScriptedLoadableModuleLogic = ScriptedLoadableModuleLogic
    scripted.ScriptedLoadableModuleTest = ScriptedLoadableModuleTest
    torch_utils = types.ModuleType("PyTorchUtils")
    torch_utils.PyTorchUtilsLogic = type("PyTorchUtilsLogic", (), {"torchInstalled": lambda self: True})
    for name, module in (("qt", qt), ("slicer.i18n", i18n), ("slicer.parameterNodeWrapper", wrapper),
                         ("slicer.ScriptedLoadableModule", scripted), ("PyTorchUtils", torch_utils)):
        monkeypatch.setitem(sys.modules, name, module)
    monkeypatch.setattr(slicer, "app", types.SimpleNamespace(
        temporaryPath=str(tmp_path), applicationDirPath=lambda: str(tmp_path / "no-such-dir"),
        processEvents=lambda: None, connect=lambda *args: None), raising=False)
    monkeypatch.syspath_prepend(str(mrml.library_root() / "WeakSeg"))
    monkeypatch.delitem(sys.modules, "WeakSeg", raising=False)
    import WeakSeg

    yield WeakSeg
    sys.modules.pop("WeakSeg", None)


def test_module_logic_trains_saves_and_segments(weakseg_module, scene, tmp_path):
    """The Logic of WeakSeg.py (what the GUI and WeakSegTest drive) end to end, on a tiny volume."""
    pytest.importorskip("WeakSegLib.worker", reason="WeakSegLib.worker is not written yet")
    logic = weakseg_module.WeakSegLogic()
    assert logic.ensureDependencies(askConfirmation=False)
    shape = (16, 24, 24)
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    truth = ((zz - 8) ** 2 + (yy - 12) ** 2 + (xx - 12) ** 2) <= 25
    image = truth + np.random.default_rng(0).normal(0, 0.2, shape)
    volume = mrml.volume_to_node(Volume(image.astype(np.float32), Geometry(shape)), "tiny")
    seg = new_segmentation(scene, volume, "tiny scribbles")
    background = np.zeros(shape, bool)
    background[8, 1:3, 1:23] = True
    organ = np.zeros(shape, bool)
    organ[8, 11:14, 10:15] = True
    add_segment(seg, "Background", background, volume)
    add_segment(seg, "Organ", organ, volume)
    mrml.set_segment_priors(seg, "Organ", size_range_ml=(0.3, 0.8))

    session = logic.train([(volume, seg)], minutes=5, iterations=20, device="cpu", timeoutS=600)
    assert session.status == "completed", session.error_message
    (result,) = session.result_nodes.values()
    assert result.GetName() == "tiny WeakSeg" and result.GetAttribute(mrml.ATTR_RESULT) == "true"
    assert logic.getParameterNode().modelPath == str(session.model_dir)
    assert not logic.isRunning() and session.history
    assert logic.chartNode is not None and logic.chartNode.GetNumberOfPlotSeriesNodes() > 0

    saved = logic.saveModel(str(tmp_path / "my model"))
    assert logic.getParameterNode().modelPath == saved and (tmp_path / "my model" / "model.json").is_file()
    assert [c.name for c in logic.loadModel(saved)] == ["Background", "Organ"]
    prediction = logic.segment([volume], device="cpu", timeoutS=600)
    assert prediction.status == "completed", prediction.error_message
    assert list(prediction.result_nodes) == ["tiny"]
    with pytest.raises(ValueError, match="no model yet"):
        logic.getParameterNode().modelPath = ""
        logic.startSegmentation([volume])
