"""What the module's tables show: the annotated (volume, segmentation) pairs of the scene, each case's
status, and the per-segment priors table with its edits (stored as segment tags)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from WeakSegLib.data.annotation import AnnotationError
from WeakSegLib.data.dataset import ClassInfo
from WeakSegLib.mrml import (
    ATTR_RESULT,
    SegmentPriors,
    annotation_from_nodes,
    clear_segment_priors,
    get_segment_priors,
    markups_for_segmentation,
    reference_volume,
    set_segment_priors,
)
from WeakSegLib.mrml.nodes import _scene_for
from WeakSegLib.mrml.segments import _color_255, iter_segments

logger = logging.getLogger(__name__)


def annotated_pairs(scene=None) -> list[tuple[object, object]]:
    """``(volume, segmentation)`` for every segmentation in the scene that references a volume and is
    not a WeakSeg result (results carry the attribute ``WeakSeg.Result``)."""
    scene = _scene_for(scene)
    pairs = []
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
        if node.GetAttribute(ATTR_RESULT) or node.GetHideFromEditors():
            continue
        volume = reference_volume(node)
        if volume is not None and node.GetSegmentation().GetNumberOfSegments() > 0:
            pairs.append((volume, node))
    return pairs


def case_status(volume_node, segmentation_node, classes: Sequence[ClassInfo] | None = None) -> str:
    """One line for the cases table: what the annotation holds, or what is wrong with it."""
    if volume_node is None:
        return "Choose a volume."
    if segmentation_node is None:
        return "No annotation: will only be segmented."
    try:
        rois, point_lists = markups_for_segmentation(segmentation_node)
        annotation = annotation_from_nodes(segmentation_node, volume_node, classes, rois, point_lists,
                                           allow_empty=True)
    except (AnnotationError, ValueError, KeyError, TypeError) as exc:
        return f"Error: {exc}"
    if not annotation.has_information():
        return "Empty: paint scribbles or add boxes, points, sizes or tags."
    parts = [f"{annotation.annotated_fraction() * 100:.2g}% voxels annotated"]
    if annotation.boxes:
        parts.append(f"{len(annotation.boxes)} box(es)")
    if annotation.tags:
        parts.append(f"{len(annotation.tags)} tag(s)")
    if annotation.size_ranges_ml:
        parts.append(f"{len(annotation.size_ranges_ml)} size range(s)")
    if annotation.complete_classes:
        parts.append(f"{len(annotation.complete_classes)} complete mask(s)")
    return "Ready: " + ", ".join(parts)


@dataclass
class PriorRow:
    """One row of the priors table: a segment of one segmentation and its priors."""

    segmentation_node: object
    segment_id: str
    name: str
    color: tuple[int, int, int]
    priors: SegmentPriors


def prior_rows(segmentation_nodes: Iterable) -> list[PriorRow]:
    """Rows for the priors table, one per segment of each segmentation (background included)."""
    rows = []
    for node, segment_id, segment in iter_segments(segmentation_nodes):
        try:
            priors = get_segment_priors(node, segment_id)
        except ValueError as exc:
            logger.warning("%s", exc)
            priors = SegmentPriors()
        rows.append(PriorRow(node, segment_id, segment.GetName(), _color_255(segment), priors))
    return rows


PRESENCE_CHOICES = ("not set", "present", "absent")


def apply_prior_edit(segmentation_node, segment: str, field: str, value) -> SegmentPriors:
    """Apply one edit of the priors table and return the stored priors.

    ``field``: ``"min_ml"`` / ``"max_ml"`` (text; empty clears the size range, a missing bound
    becomes 0 / inf), ``"presence"`` (one of :data:`PRESENCE_CHOICES`) or ``"complete"`` (bool).
    Raises ValueError with a readable message on bad input; nothing is changed then.
    """
    current = get_segment_priors(segmentation_node, segment)
    if field in ("min_ml", "max_ml"):
        text = str(value).strip().lower().replace("ml", "").strip()
        lo, hi = current.size_range_ml or (None, None)
        if text in ("", "-", "none"):
            number = None
        else:
            try:
                number = float(text)
            except ValueError:
                raise ValueError(f"'{value}' is not a size in mL (e.g. 12.5).") from None
        if field == "min_ml":
            lo = number
        else:
            hi = number
        if not lo and (hi is None or math.isinf(hi)):  # (0, inf) says nothing: remove the tag
            return clear_segment_priors(segmentation_node, segment, ["size_range_ml"])
        return set_segment_priors(segmentation_node, segment, size_range_ml=(lo or 0.0, float("inf") if hi is None
                                                                             else hi))
    if field == "presence":
        if value not in PRESENCE_CHOICES:
            raise ValueError(f"presence must be one of {PRESENCE_CHOICES}, got '{value}'.")
        if value == "not set":
            return clear_segment_priors(segmentation_node, segment, ["present"])
        return set_segment_priors(segmentation_node, segment, present=value == "present")
    if field == "complete":
        if not value:
            return clear_segment_priors(segmentation_node, segment, ["complete"])
        return set_segment_priors(segmentation_node, segment, complete=True)
    raise ValueError(f"Unknown prior field '{field}'.")
