"""Segmentation nodes: classes from segment names, per-segment priors stored as segment tags, and
segment masks on a volume's voxel grid.

* Segments are classes, matched by name (case-insensitive; segments sharing a name share a class,
  across cases too).  A segment named ``Background`` is class 0; the others are classes 1..K in
  segment order (:func:`classes_from_segmentation`).
* Segment tags, saved in the ``.seg.nrrd`` file (:func:`set_segment_priors`):
  ``WeakSeg.SizeRangeMl`` = ``"min,max"`` in mL (``inf`` allowed as max),
  ``WeakSeg.Present`` = ``"true"``/``"false"``, ``WeakSeg.CompleteMask`` = ``"true"``/``"false"``
  (the segment is the complete mask of its class in this volume).
* Segments drawn on another grid (other spacing, origin, orientation, transform) are resampled onto
  the volume's grid with nearest-neighbour interpolation, as Slicer's labelmap export does; a segment
  that vanishes in the process is reported in the log.  Segments that must be converted (closed
  surfaces, say) are converted on a private copy: reading never modifies the user's nodes.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import slicer
import vtk

from WeakSegLib.data.dataset import DEFAULT_COLORS, ClassInfo
from WeakSegLib.mrml.nodes import (
    _array_from_image,
    _check_volume_node,
    _image_shape_and_offset,
    _node_ijk_to_ras,
    _register_segmentation_converter_rules,
    _vtk_matrix_from_array,
)

logger = logging.getLogger(__name__)

TAG_SIZE_RANGE_ML = "WeakSeg.SizeRangeMl"
TAG_PRESENT = "WeakSeg.Present"
TAG_COMPLETE = "WeakSeg.CompleteMask"
BACKGROUND_NAME = "Background"


# ---------------------------------------------------------------------------------------------------
# Classes and segment priors
# ---------------------------------------------------------------------------------------------------
def _segment_ids(segmentation_node) -> list[str]:
    segmentation = segmentation_node.GetSegmentation()
    return [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]


def iter_segments(segmentation_nodes: Iterable):
    """``(node, segment_id, segment)`` for every segment of every node, in order; ``None`` nodes are skipped."""
    for node in segmentation_nodes:
        if node is None:
            continue
        segmentation = node.GetSegmentation()
        for segment_id in _segment_ids(node):
            yield node, segment_id, segmentation.GetSegment(segment_id)


def _color_255(segment) -> tuple[int, int, int]:
    return tuple(int(round(min(max(c, 0.0), 1.0) * 255)) for c in segment.GetColor())  # type: ignore[return-value]


def _is_background(name: str) -> bool:
    return name.strip().lower() == BACKGROUND_NAME.lower()


def _class_key(name: str) -> str:
    return name.strip().lower()


def classes_from_segmentations(segmentation_nodes: Iterable) -> list[ClassInfo]:
    """Classes of several segmentations, matched by segment name (case-insensitive).

    Class 0 is the background (a segment named ``Background``, any case, or an implicit black
    one); the other names become classes 1..K in order of first appearance.  Segments that share a
    name share a class.
    """
    background: ClassInfo | None = None
    others: dict[str, ClassInfo] = {}
    for _node, segment_id, segment in iter_segments(segmentation_nodes):
        name = segment.GetName() or segment_id
        if _is_background(name):
            if background is None:
                background = ClassInfo(0, name.strip(), _color_255(segment))
        elif _class_key(name) not in others:
            others[_class_key(name)] = ClassInfo(len(others) + 1, name.strip(), _color_255(segment))
    return [background or ClassInfo(0, BACKGROUND_NAME, DEFAULT_COLORS[0])] + list(others.values())


def classes_from_segmentation(segmentation_node) -> list[ClassInfo]:
    """Classes of a segmentation: ``Background`` (any case) is class 0, the other segments are
    classes 1..K in segment order, colours from the segments (see :func:`classes_from_segmentations`)."""
    if segmentation_node is None:
        raise ValueError("No segmentation node given.")
    return classes_from_segmentations([segmentation_node])


def _class_id_by_name(classes: Sequence[ClassInfo]) -> dict[str, int]:
    return {_class_key(c.name): c.id for c in classes}


def _describe_classes(classes: Sequence[ClassInfo]) -> str:
    return ", ".join(f"{c.id}={c.name}" for c in classes)


def _resolve_segment_id(segmentation_node, segment: str) -> str:
    """A segment ID from an ID or a name."""
    segmentation = segmentation_node.GetSegmentation()
    if segmentation.GetSegment(segment) is not None:
        return segment
    by_name = segmentation.GetSegmentIdBySegmentName(segment)
    if by_name:
        return by_name
    names = [segmentation.GetSegment(s).GetName() for s in _segment_ids(segmentation_node)]
    raise KeyError(f"No segment '{segment}' in segmentation '{segmentation_node.GetName()}'; its segments are "
                   f"{names}.")


@dataclass(frozen=True)
class SegmentPriors:
    """What the user said about one segment's class in one volume (None = not said)."""

    size_range_ml: tuple[float, float] | None = None
    present: bool | None = None
    complete: bool | None = None


def _format_float(value: float) -> str:
    value = float(value)
    if math.isinf(value):
        return "inf"
    return repr(value)


def _parse_bool(text: str, what: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off"):
        return False
    raise ValueError(f"{what} must be 'true' or 'false', got '{text}'.")


def _parse_size_range(text: str, what: str) -> tuple[float, float]:
    parts = [p.strip() for p in text.replace(";", ",").split(",")]
    try:
        if len(parts) != 2:
            raise ValueError
        lo, hi = float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError(f"{what} must be 'min,max' in mL (e.g. '60,250'; 'inf' for no maximum), got '{text}'.") \
            from None
    _check_size_range((lo, hi), what)
    return lo, hi


def _check_size_range(size_range: Sequence[float], what: str) -> tuple[float, float]:
    if len(size_range) != 2:
        raise ValueError(f"{what} must be (min, max) in mL, got {size_range}.")
    lo, hi = float(size_range[0]), float(size_range[1])
    if math.isnan(lo) or math.isnan(hi) or math.isinf(lo) or lo < 0 or hi < lo:
        raise ValueError(f"{what} must satisfy 0 <= min <= max (max may be inf), got ({lo}, {hi}) mL.")
    return lo, hi


def _get_tag(segment, key: str) -> str | None:
    value = vtk.reference("")
    if segment.GetTag(key, value):
        return str(value.get())
    return None


def get_segment_priors(segmentation_node, segment: str) -> SegmentPriors:
    """Read the ``WeakSeg.*`` tags of a segment (given by ID or name)."""
    segment_id = _resolve_segment_id(segmentation_node, segment)
    seg = segmentation_node.GetSegmentation().GetSegment(segment_id)
    what = f"Tag of segment '{seg.GetName()}' in '{segmentation_node.GetName()}'"
    size_text, present_text, complete_text = (_get_tag(seg, k) for k in (TAG_SIZE_RANGE_ML, TAG_PRESENT,
                                                                          TAG_COMPLETE))
    return SegmentPriors(
        size_range_ml=_parse_size_range(size_text, f"{what} {TAG_SIZE_RANGE_ML}") if size_text else None,
        present=_parse_bool(present_text, f"{what} {TAG_PRESENT}") if present_text else None,
        complete=_parse_bool(complete_text, f"{what} {TAG_COMPLETE}") if complete_text else None,
    )


def set_segment_priors(segmentation_node, segment: str, size_range_ml: Sequence[float] | None = None,
                       present: bool | None = None, complete: bool | None = None) -> SegmentPriors:
    """Write priors as segment tags (saved with the ``.seg.nrrd``); ``None`` leaves a value unchanged.

    Use :func:`clear_segment_priors` to remove a value.  Returns the priors now stored.
    """
    segment_id = _resolve_segment_id(segmentation_node, segment)
    seg = segmentation_node.GetSegmentation().GetSegment(segment_id)
    what = f"Size range of segment '{seg.GetName()}'"
    if size_range_ml is not None:
        lo, hi = _check_size_range(size_range_ml, what)
        seg.SetTag(TAG_SIZE_RANGE_ML, f"{_format_float(lo)},{_format_float(hi)}")
    if present is not None:
        seg.SetTag(TAG_PRESENT, "true" if present else "false")
    if complete is not None:
        seg.SetTag(TAG_COMPLETE, "true" if complete else "false")
    return get_segment_priors(segmentation_node, segment_id)


def clear_segment_priors(segmentation_node, segment: str,
                         keys: Iterable[str] = ("size_range_ml", "present", "complete")) -> SegmentPriors:
    """Remove priors (``"size_range_ml"``, ``"present"``, ``"complete"``) from a segment's tags."""
    tag_of = {"size_range_ml": TAG_SIZE_RANGE_ML, "present": TAG_PRESENT, "complete": TAG_COMPLETE}
    segment_id = _resolve_segment_id(segmentation_node, segment)
    seg = segmentation_node.GetSegmentation().GetSegment(segment_id)
    for key in keys:
        if key not in tag_of:
            raise ValueError(f"Unknown prior '{key}'; use one of {sorted(tag_of)}.")
        seg.RemoveTag(tag_of[key])
    return get_segment_priors(segmentation_node, segment_id)


# ---------------------------------------------------------------------------------------------------
# Segments on the volume grid
# ---------------------------------------------------------------------------------------------------
def transform_between(source_node, target_node):
    """The transform from ``source_node``'s coordinates to ``target_node``'s (None: identity), following
    both nodes' parent transforms (linear or not)."""
    source_parent = source_node.GetParentTransformNode() if source_node is not None else None
    target_parent = target_node.GetParentTransformNode() if target_node is not None else None
    if source_parent is None and target_parent is None:
        return None
    if source_parent is not None and target_parent is not None and source_parent.GetID() == target_parent.GetID():
        return None
    transform = vtk.vtkGeneralTransform()
    slicer.vtkMRMLTransformNode.GetTransformBetweenNodes(source_parent, target_parent, transform)
    return transform


def _reference_image(volume_node):
    """Geometry-only oriented image of the volume (no voxels allocated)."""
    reference = slicer.vtkOrientedImageData()
    reference.SetExtent(volume_node.GetImageData().GetExtent())
    reference.SetImageToWorldMatrix(_vtk_matrix_from_array(_node_ijk_to_ras(volume_node)))
    return reference


def _binary_source(segmentation_node, reference):
    """The segmentation node to read binary labelmaps from: the user's, or a private converted copy."""
    binary = slicer.vtkSegmentationConverter.GetSegmentationBinaryLabelmapRepresentationName()
    segmentation = segmentation_node.GetSegmentation()
    if segmentation.GetNumberOfSegments() == 0 or segmentation.ContainsRepresentation(binary):
        return segmentation_node
    _register_segmentation_converter_rules()
    copy = slicer.vtkMRMLSegmentationNode()
    copy.GetSegmentation().DeepCopy(segmentation)
    copy.GetSegmentation().SetConversionParameter(
        slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName(),
        slicer.vtkSegmentationConverter.SerializeImageGeometry(reference))
    if not copy.GetSegmentation().CreateRepresentation(binary):
        raise ValueError(f"The segments of '{segmentation_node.GetName()}' could not be converted to a binary "
                         f"labelmap (source representation: {segmentation.GetSourceRepresentationName()}).")
    return copy


def _place_in_reference(image, reference_shape: tuple[int, int, int], reference_offset) -> np.ndarray:
    """A boolean (z, y, x) mask on the reference extent from an image on a sub-extent of it."""
    mask = np.zeros(reference_shape, dtype=bool)
    e = image.GetExtent()
    if e[0] > e[1] or e[2] > e[3] or e[4] > e[5] or image.GetPointData().GetScalars() is None:
        return mask
    data = _array_from_image(image)
    if data.ndim == 4:
        data = data[..., 0]
    start = np.array([e[4], e[2], e[0]]) - np.array(reference_offset[::-1])
    stop = start + np.array(data.shape)
    lo = np.maximum(start, 0)
    hi = np.minimum(stop, reference_shape)
    if np.any(hi <= lo):
        return mask
    src = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start))
    dst = tuple(slice(a, b) for a, b in zip(lo, hi))
    mask[dst] = data[src] > 0
    return mask


def segment_masks_on_volume(segmentation_node, volume_node, segment_ids: Sequence[str] | None = None
                            ) -> dict[str, np.ndarray]:
    """Boolean (z, y, x) masks of segments on the volume's voxel grid, in segment order.

    Segments on another grid are resampled (nearest neighbour); transforms between the two nodes
    are applied.  The segmentation node is not modified.
    """
    _check_volume_node(volume_node)
    reference = _reference_image(volume_node)
    shape, offset = _image_shape_and_offset(volume_node.GetImageData())
    ids = _segment_ids(segmentation_node) if segment_ids is None else list(segment_ids)
    source = _binary_source(segmentation_node, reference)
    transform = transform_between(segmentation_node, volume_node)
    masks: dict[str, np.ndarray] = {}
    for segment_id in ids:
        segment = segmentation_node.GetSegmentation().GetSegment(segment_id)
        if segment is None:
            raise KeyError(f"No segment with ID '{segment_id}' in '{segmentation_node.GetName()}'.")
        labelmap = slicer.vtkOrientedImageData()
        source.GetBinaryLabelmapRepresentation(segment_id, labelmap)
        e = labelmap.GetExtent()
        if e[0] > e[1] or e[2] > e[3] or e[4] > e[5]:
            masks[segment_id] = np.zeros(shape, dtype=bool)
            continue
        resampled = slicer.vtkOrientedImageData()
        ok = slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            labelmap, reference, resampled, False, False, transform, 0)
        if not ok:
            raise ValueError(f"Segment '{segment.GetName()}' of '{segmentation_node.GetName()}' could not be "
                             f"resampled onto the grid of '{volume_node.GetName()}'.")
        mask = _place_in_reference(resampled, shape, offset)
        if not mask.any() and np.any(_array_from_image(labelmap)):
            logger.warning("Segment '%s' of '%s' has painted voxels but none on the grid of '%s' (it lies outside "
                           "the volume, or is thinner than its voxels).", segment.GetName(),
                           segmentation_node.GetName(), volume_node.GetName())
        masks[segment_id] = mask
    return masks


