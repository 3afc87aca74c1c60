"""Markups nodes as annotations: a markups ROI is a box, a markups point list gives points.

A markups node is tied to its segmentation by a node reference (role ``WeakSeg.Segmentation``),
which Slicer keeps valid when the scene is saved, loaded or imported (node IDs change then), and to
its segment by the node attribute ``WeakSeg.Segment`` holding the segment's ID, which survives
renaming the segment (a segment name is accepted too).  :func:`link_markups` sets both.  Point lists
may set ``WeakSeg.RadiusMm`` (default 0: the nearest voxel).  Parent transforms are honoured:
positions are mapped into the volume node's own frame, then to LPS.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import slicer
import vtk

from WeakSegLib.data.annotation import AnnotationError, Box
from WeakSegLib.data.dataset import ClassInfo
from WeakSegLib.data.volume import Geometry
from WeakSegLib.mrml.nodes import LPS_FROM_RAS, _array_from_vtk_matrix, _scene_for, geometry_from_node
from WeakSegLib.mrml.segments import _class_id_by_name, _class_key

logger = logging.getLogger(__name__)

ATTR_SEGMENT = "WeakSeg.Segment"
ATTR_RADIUS_MM = "WeakSeg.RadiusMm"
ATTR_SEGMENTATION = "WeakSeg.Segmentation"   # node reference role: markups -> segmentation node


def _world_to_volume_points(points_world_ras: np.ndarray, volume_node) -> np.ndarray:
    """World RAS points (N, 3) -> the volume node's own RAS coordinates."""
    points = np.asarray(points_world_ras, dtype=float).reshape(-1, 3)
    parent = volume_node.GetParentTransformNode()
    if parent is None:
        return points
    transform = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(None, parent, transform)
    return np.array([transform.TransformPoint(*p) for p in points], dtype=float)


def _ras_to_lps(points: np.ndarray) -> np.ndarray:
    return np.asarray(points, dtype=float) @ LPS_FROM_RAS.T


def markups_class(markups_node, classes: Sequence[ClassInfo], segmentation_node=None) -> int:
    """The class a markups node belongs to, from its ``WeakSeg.Segment`` attribute (name or ID)."""
    value = markups_node.GetAttribute(ATTR_SEGMENT)
    if not value:
        raise AnnotationError(
            f"Markups '{markups_node.GetName()}' does not say which segment it belongs to. Set its attribute: "
            f"node.SetAttribute('{ATTR_SEGMENT}', '<segment name>') (the Weak annotation effect does this).")
    name = value
    if segmentation_node is not None:
        segment = segmentation_node.GetSegmentation().GetSegment(value)
        if segment is not None:
            name = segment.GetName()
    class_id = _class_id_by_name(classes).get(_class_key(name))
    if class_id is None:
        raise AnnotationError(f"Markups '{markups_node.GetName()}' belongs to segment '{value}', which is not one of "
                              f"the classes {[c.name for c in classes]}. Rename the segment or fix the attribute "
                              f"'{ATTR_SEGMENT}'.")
    return class_id


def box_from_roi(roi_node, class_id: int, volume_node, geometry: Geometry | None = None) -> Box | None:
    """A voxel :class:`Box` from a markups ROI: the axis-aligned bounding box, in voxel space, of the
    ROI's 8 corners (so an oblique ROI gives the smallest voxel box holding it), clipped to the image.

    A flat ROI (thinner than a voxel on an axis) gives a one-voxel-thick box on the nearest slice.
    Returns None (with a warning) for an ROI that is not placed yet.
    """
    if roi_node.GetNumberOfControlPoints() == 0:
        logger.warning("ROI '%s' is not placed yet; it is ignored.", roi_node.GetName())
        return None
    geometry = geometry or geometry_from_node(volume_node)
    half = np.asarray(roi_node.GetSize(), dtype=float) / 2.0
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)], dtype=float)
    corners_object = np.c_[signs * half, np.ones(8)]
    object_to_world = _array_from_vtk_matrix(roi_node.GetObjectToWorldMatrix())
    corners_world = (corners_object @ object_to_world.T)[:, :3]
    corners_lps = _ras_to_lps(_world_to_volume_points(corners_world, volume_node))
    index = geometry.physical_to_index(corners_lps)
    lo = np.ceil(index.min(axis=0) - 1e-6).astype(int)
    hi = np.floor(index.max(axis=0) + 1e-6).astype(int) + 1
    flat = hi <= lo
    centre = np.round(index.mean(axis=0)).astype(int)
    lo = np.where(flat, centre, lo)
    hi = np.where(flat, centre + 1, hi)
    shape = np.asarray(geometry.shape)
    lo_clipped, hi_clipped = np.clip(lo, 0, shape), np.clip(hi, 0, shape)
    if np.any(hi_clipped <= lo_clipped):
        raise AnnotationError(f"ROI '{roi_node.GetName()}' lies outside the volume '{volume_node.GetName()}'. Move it "
                              f"onto the image or remove it.")
    if np.any(lo_clipped != lo) or np.any(hi_clipped != hi):
        logger.warning("ROI '%s' extends beyond the volume '%s'; it is clipped to the image.", roi_node.GetName(),
                       volume_node.GetName())
    return Box(class_id, tuple(lo_clipped), tuple(hi_clipped))


def points_from_point_list(point_list_node, class_id: int, volume_node) -> list[tuple[int, tuple, float]]:
    """``[(class_id, (x, y, z) LPS mm in the volume's frame, radius_mm), ...]`` for the placed points."""
    radius_text = point_list_node.GetAttribute(ATTR_RADIUS_MM)
    try:
        radius = float(radius_text) if radius_text else 0.0
    except ValueError:
        raise AnnotationError(f"Point list '{point_list_node.GetName()}' has {ATTR_RADIUS_MM}='{radius_text}'; it "
                              f"must be a number of millimetres.") from None
    if not math.isfinite(radius) or radius < 0:
        raise AnnotationError(f"Point list '{point_list_node.GetName()}' has a negative or non-finite radius "
                              f"({radius} mm).")
    world = []
    for i in range(point_list_node.GetNumberOfControlPoints()):
        if point_list_node.GetNthControlPointPositionStatus(i) != point_list_node.PositionDefined:
            continue
        position = [0.0, 0.0, 0.0]
        point_list_node.GetNthControlPointPositionWorld(i, position)
        world.append(position)
    if not world:
        return []
    lps = _ras_to_lps(_world_to_volume_points(np.array(world), volume_node))
    return [(class_id, tuple(float(v) for v in p), radius) for p in lps]


def link_markups(markups_node, segmentation_node, segment_id: str) -> None:
    """Tie a markups node to a segment: node reference to the segmentation, segment ID attribute."""
    if segmentation_node.GetSegmentation().GetSegment(segment_id) is None:
        raise AnnotationError(f"Segmentation '{segmentation_node.GetName()}' has no segment with ID '{segment_id}'.")
    markups_node.SetAttribute(ATTR_SEGMENT, segment_id)
    markups_node.SetNodeReferenceID(ATTR_SEGMENTATION, segmentation_node.GetID())
    markups_node.RemoveAttribute(ATTR_SEGMENTATION)


def linked_segmentation(markups_node):
    """The segmentation node a markups node is tied to (node reference; an attribute holding the
    segmentation's ID is understood too), or None."""
    node = markups_node.GetNodeReference(ATTR_SEGMENTATION)
    if node is None:
        node_id = markups_node.GetAttribute(ATTR_SEGMENTATION)
        scene = markups_node.GetScene()
        node = scene.GetNodeByID(node_id) if node_id and scene is not None else None
    return node


def markups_for_segment(segmentation_node, segment_id: str, class_name: str = "vtkMRMLMarkupsFiducialNode",
                        scene=None) -> list:
    """The markups nodes of ``class_name`` tied to one segment (by ID, or by its current name)."""
    segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
    keys = {segment_id} | ({segment.GetName()} if segment is not None else set())
    rois, point_lists = markups_for_segmentation(segmentation_node, scene)
    nodes = rois if class_name == "vtkMRMLMarkupsROINode" else point_lists
    return [n for n in nodes if n.GetAttribute(ATTR_SEGMENT) in keys]


def markups_for_segmentation(segmentation_node, scene=None) -> tuple[list, list]:
    """ROI nodes and point lists tied to a segmentation (:func:`linked_segmentation`)."""
    scene = _scene_for(scene, segmentation_node)
    rois, point_lists = [], []
    for class_name, out in (("vtkMRMLMarkupsROINode", rois), ("vtkMRMLMarkupsFiducialNode", point_lists)):
        for i in range(scene.GetNumberOfNodesByClass(class_name)):
            node = scene.GetNthNodeByClass(i, class_name)
            if linked_segmentation(node) is segmentation_node:
                out.append(node)
    return rois, point_lists


