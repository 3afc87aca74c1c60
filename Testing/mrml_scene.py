"""Shared set-up of the tests against the real MRML library (the ``slicer-core`` wheel): real scenes,
real segmentation nodes, real files — no mocks.

Importing it skips the importing test module when ``slicer`` is not the MRML library, so test modules
take ``slicer`` and ``vtk`` from here.  A module's ``scene`` fixture is
``yield from scene_removing_added_nodes()``.
"""

from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="needs the MRML library: pip install slicer-core (or run inside Slicer)")
if not hasattr(slicer, "vtkMRMLScene"):
    pytest.skip("'import slicer' gives no vtkMRMLScene (not slicer-core / Slicer)", allow_module_level=True)

import vtk  # noqa: E402

from WeakSegLib import mrml  # noqa: E402
from WeakSegLib.data.volume import Geometry, Volume  # noqa: E402
from WeakSegLib.mrml.nodes import _array_from_image  # noqa: E402
from WeakSegLib.mrml.segments import _get_tag  # noqa: E402

__all__ = ["SHAPE", "add_segment", "assert_same_snapshot", "drawn_scene", "new_segmentation", "oblique_geometry",
           "plain_volume_node", "rotation", "scene_removing_added_nodes", "seg_nrrd_round_trip", "slicer",
           "snapshot_segmentation", "sphere_with_scribbles", "vtk"]


def scene_removing_added_nodes():
    """For a module's ``scene`` fixture (``yield from``): yields ``slicer.mrmlScene`` (created outside
    Slicer) and removes the nodes the test added, so tests do not see each other's nodes."""
    scene = mrml.setup_scene()
    before = {scene.GetNthNode(i).GetID() for i in range(scene.GetNumberOfNodes())}
    yield scene
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


def seg_nrrd_round_trip(scene, node, path, name="read back"):
    """Write a segmentation node to a ``.seg.nrrd`` file and read it into a new node (Slicer's storage
    node, both ways); returns the new node."""
    writer = slicer.vtkMRMLSegmentationStorageNode()
    writer.SetFileName(str(path))
    assert writer.WriteData(node)
    loaded = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    reader = slicer.vtkMRMLSegmentationStorageNode()
    reader.SetFileName(str(path))
    assert reader.ReadData(loaded)
    return loaded


def snapshot_segmentation(node) -> dict:
    segmentation = node.GetSegmentation()
    segments = []
    for i in range(segmentation.GetNumberOfSegments()):
        segment_id = segmentation.GetNthSegmentID(i)
        segment = segmentation.GetSegment(segment_id)
        tags = {k: _get_tag(segment, k) for k in (mrml.TAG_SIZE_RANGE_ML, mrml.TAG_PRESENT, mrml.TAG_COMPLETE,
                                                        "Custom")}
        reps = []
        for rep in ("Binary labelmap", "Closed surface"):
            reps.append((rep, segment.GetRepresentation(rep) is not None))
        internal = node.GetBinaryLabelmapInternalRepresentation(segment_id)
        array = None
        if internal is not None and internal.GetPointData().GetScalars() is not None:
            array = np.array(_array_from_image(internal), copy=True)
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



def sphere_with_scribbles(scene, shape, name: str):
    """A noisy sphere (radius 5 voxels, centred) as a volume node, and a segmentation with one background and
    one "Organ" stroke on its middle slice: ``(volume, segmentation)``."""
    z0 = shape[0] // 2
    zz, yy, xx = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    truth = ((zz - z0) ** 2 + (yy - 12) ** 2 + (xx - 12) ** 2) <= 25
    image = truth + np.random.default_rng(0).normal(0, 0.2, shape)
    volume = mrml.volume_to_node(Volume(image.astype(np.float32), Geometry(shape)), name)
    seg = new_segmentation(scene, volume, f"{name} scribbles")
    background = np.zeros(shape, bool)
    background[z0, 1:3, 1:23] = True
    organ = np.zeros(shape, bool)
    organ[z0, 11:14, 10:15] = True
    add_segment(seg, "Background", background, volume)
    add_segment(seg, "Organ", organ, volume)
    return volume, seg
