"""What a user drew in Slicer as core objects: a :class:`WeakAnnotation` per volume and a
:class:`Dataset` of several volumes.

Painted voxels are scribbles; where segments overlap, the *later* segment in the segment list wins;
points are painted last and win over segments.  Boxes come from markups ROIs, priors from segment
tags (see :mod:`WeakSegLib.mrml.segments` and :mod:`WeakSegLib.mrml.markups`).  Nothing is modified.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from WeakSegLib.data.annotation import UNKNOWN, AnnotationError, WeakAnnotation, rasterise_points
from WeakSegLib.data.dataset import Case, ClassInfo, Dataset
from WeakSegLib.mrml.markups import box_from_roi, markups_class, markups_for_segmentation, points_from_point_list
from WeakSegLib.mrml.nodes import _check_volume_node, geometry_from_node, volume_from_node
from WeakSegLib.mrml.segments import (
    _class_id_by_name,
    _class_key,
    _describe_classes,
    _segment_ids,
    classes_from_segmentation,
    classes_from_segmentations,
    get_segment_priors,
    segment_masks_on_volume,
)


def annotation_from_nodes(segmentation_node, volume_node, classes: Sequence[ClassInfo] | None = None,
                          roi_nodes: Iterable = (), point_list_nodes: Iterable = (),
                          allow_empty: bool = False) -> WeakAnnotation:
    """The :class:`WeakAnnotation` a user drew in Slicer for one volume.

    * ``segmentation_node``: segments = classes (matched to ``classes`` by name, case-insensitive;
      default :func:`classes_from_segmentation`); painted voxels are scribbles, the later segment
      winning where segments overlap; segment tags give size ranges, present/absent tags and
      complete masks (see the module docstring).  May be None when only markups are given.
    * ``roi_nodes``: markups ROIs -> boxes (:func:`box_from_roi`);
    * ``point_list_nodes``: markups point lists -> points painted last (:func:`points_from_point_list`).

    Nothing is modified.  Errors say which segment, node and class is at fault.
    """
    geometry = geometry_from_node(volume_node)
    if classes is None:
        if segmentation_node is None:
            raise ValueError("Give classes=... when no segmentation node is given.")
        classes = classes_from_segmentation(segmentation_node)
    classes = list(classes)
    if len(classes) < 2:
        raise AnnotationError(f"At least one class besides the background is needed; got {_describe_classes(classes)}. "
                              f"Add a segment for the structure to segment.")
    by_name = _class_id_by_name(classes)
    labels = np.full(geometry.shape, UNKNOWN, dtype=np.int16)
    tags: dict[int, bool] = {}
    sizes: dict[int, tuple[float, float]] = {}
    complete: set[int] = set()
    context = f"volume '{volume_node.GetName()}'"
    if segmentation_node is not None:
        context = f"segmentation '{segmentation_node.GetName()}' on {context}"
        segmentation = segmentation_node.GetSegmentation()
        segment_class = {}
        for segment_id in _segment_ids(segmentation_node):
            name = segmentation.GetSegment(segment_id).GetName() or segment_id
            if _class_key(name) not in by_name:
                raise AnnotationError(f"Segment '{name}' of '{segmentation_node.GetName()}' is not one of the classes "
                                      f"({_describe_classes(classes)}). Rename it to one of them.")
            segment_class[segment_id] = by_name[_class_key(name)]
        masks = segment_masks_on_volume(segmentation_node, volume_node, list(segment_class))
        for segment_id, class_id in segment_class.items():
            labels[masks[segment_id]] = class_id  # later segments win
            priors = get_segment_priors(segmentation_node, segment_id)
            if priors.present is not None:
                tags[class_id] = priors.present
            if priors.size_range_ml is not None:
                sizes[class_id] = priors.size_range_ml
            if priors.complete:
                complete.add(class_id)
    boxes = []
    for roi in roi_nodes:
        box = box_from_roi(roi, markups_class(roi, classes, segmentation_node), volume_node, geometry)
        if box is not None:
            boxes.append(box)
    points = []
    for point_list in point_list_nodes:
        points += points_from_point_list(point_list, markups_class(point_list, classes, segmentation_node), volume_node)
    try:
        if points:
            labels = rasterise_points(points, geometry, labels)
        return WeakAnnotation(geometry=geometry, num_classes=len(classes), labels=labels,
                              complete_classes=frozenset(complete), boxes=boxes, tags=tags, size_ranges_ml=sizes,
                              allow_empty=allow_empty)
    except AnnotationError as exc:
        raise AnnotationError(f"In {context} (classes {_describe_classes(classes)}): {exc}") from None



def reference_volume(segmentation_node):
    """The volume a segmentation was drawn on (its reference image geometry node), or None."""
    role = segmentation_node.GetReferenceImageGeometryReferenceRole()
    node = segmentation_node.GetNodeReference(role)
    return node if node is not None and node.IsA("vtkMRMLScalarVolumeNode") else None



def case_id_for(name: str, used: set[str] | None = None) -> str:
    """A file-name-safe, unique case id from a node name (``used`` is updated)."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "_", name.strip()).strip("._") or "case"
    case_id, n = base, 1
    while used is not None and case_id in used:
        n += 1
        case_id = f"{base}_{n}"
    if used is not None:
        used.add(case_id)
    return case_id


@dataclass
class CaseNodes:
    """The nodes of one case in Slicer: a volume, optionally its annotation segmentation and markups.

    ``roi_nodes`` / ``point_list_nodes`` None means: find them (:func:`markups_for_segmentation`).
    """

    volume_node: object
    segmentation_node: object = None
    roi_nodes: Sequence | None = None
    point_list_nodes: Sequence | None = None


def dataset_from_nodes(cases: Sequence[CaseNodes | tuple], classes: Sequence[ClassInfo] | None = None,
                       name: str = "Slicer") -> tuple[Dataset, dict[str, object]]:
    """A :class:`Dataset` from Slicer nodes and the map case id -> volume node.

    ``cases`` holds :class:`CaseNodes` (or ``(volume_node, segmentation_node)`` pairs).  Classes are
    the union of the segmentations' segment names (:func:`classes_from_segmentations`) unless
    given.  A volume without a segmentation (or with an empty one) becomes an unlabelled case (to
    predict, or for semi-supervised terms).
    """
    items = [c if isinstance(c, CaseNodes) else CaseNodes(*c) for c in cases]
    if not items:
        raise ValueError("No volumes given: select at least one volume with its annotation segmentation.")
    if classes is None:
        classes = classes_from_segmentations(c.segmentation_node for c in items)
    classes = list(classes)
    used: set[str] = set()
    dataset_cases, volumes = [], {}
    for item in items:
        volume_node = item.volume_node
        _check_volume_node(volume_node)
        case_id = case_id_for(volume_node.GetName(), used)
        annotation = None
        if item.segmentation_node is not None or item.roi_nodes or item.point_list_nodes:
            rois, point_lists = item.roi_nodes, item.point_list_nodes
            if item.segmentation_node is not None and (rois is None or point_lists is None):
                found_rois, found_points = markups_for_segmentation(item.segmentation_node)
                rois = found_rois if rois is None else rois
                point_lists = found_points if point_lists is None else point_lists
            annotation = annotation_from_nodes(item.segmentation_node, volume_node, classes, rois or (),
                                               point_lists or (), allow_empty=True)
            if not annotation.has_information():
                annotation = None
        image = volume_from_node(volume_node)
        if not np.issubdtype(image.array.dtype, np.floating):
            image = image.with_array(image.array.astype(np.float32))
        dataset_cases.append(Case(case_id, image, annotation))
        volumes[case_id] = volume_node
    channels = ["image"]
    return Dataset(classes, dataset_cases, channels, name=name), volumes


