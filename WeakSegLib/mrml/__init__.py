"""The bridge between 3D Slicer's MRML nodes and WeakSegLib's core objects.

This is the only part of WeakSegLib that imports ``slicer`` and ``vtk``; ``WeakSegLib/__init__`` never
imports it, so the core stays usable without Slicer.  It needs no Qt: it runs inside Slicer and
against the ``slicer-core`` wheel (a real MRML library in plain Python).  The public names of its
modules are re-exported here, flat::

    from WeakSegLib import mrml
    scene = mrml.setup_scene()                 # outside Slicer only
    node = mrml.volume_to_node(volume, "CT")
    annotation = mrml.annotation_from_nodes(segmentation_node, node)

Modules
    :mod:`~WeakSegLib.mrml.nodes`        scene set-up outside Slicer, IJKToRAS <-> Geometry (RAS <-> LPS,
                                         once), volume and probability nodes;
    :mod:`~WeakSegLib.mrml.segments`     classes from segment names, segment priors (tags), segment
                                         masks on a volume's grid;
    :mod:`~WeakSegLib.mrml.markups`      markups ROIs -> boxes, point lists -> points;
    :mod:`~WeakSegLib.mrml.annotations`  annotation and dataset from nodes;
    :mod:`~WeakSegLib.mrml.results`      label volumes <-> segmentation nodes, predictions, previews;
    :mod:`~WeakSegLib.mrml.growcut`      Slicer's Grow from seeds on arrays (a benchmark baseline).

Coordinates
    Geometries are the volume node's *own* coordinates (as written to a file).  Parent transforms of
    other nodes (segmentation, ROI, point list) are honoured by mapping those nodes into the volume's
    frame; a result segmentation is put under the reference volume's parent transform.

Outside Slicer, call :func:`setup_scene` once: it creates ``slicer.mrmlScene`` and registers the
Volumes and Segmentations logics so that ``slicer.util`` helpers work with ``slicer-core``.
"""

from WeakSegLib.mrml.annotations import (
    CaseNodes,
    annotation_from_nodes,
    case_id_for,
    dataset_from_nodes,
    reference_volume,
)
from WeakSegLib.mrml.growcut import grow_from_seeds
from WeakSegLib.mrml.markups import (
    ATTR_RADIUS_MM,
    ATTR_SEGMENT,
    ATTR_SEGMENTATION,
    box_from_roi,
    link_markups,
    linked_segmentation,
    markups_class,
    markups_for_segment,
    markups_for_segmentation,
    points_from_point_list,
)
from WeakSegLib.mrml.nodes import (
    LPS_FROM_RAS,
    geometry_from_ijk_to_ras,
    geometry_from_node,
    ijk_to_ras_from_geometry,
    probabilities_to_node,
    setup_scene,
    volume_from_node,
    volume_to_node,
)
from WeakSegLib.mrml.results import (
    ATTR_RESULT,
    RESULT_NAME_SUFFIX,
    TERMINOLOGY_TAG,
    existing_result,
    labels_from_segmentation_node,
    labels_to_oriented_image,
    load_predictions,
    load_probabilities,
    place_in_study,
    preview_labelmap,
    result_name,
    segment_terminologies,
    segmentation_node_from_labels,
    show_in_3d,
    whole_volume_geometry,
)
from WeakSegLib.mrml.segments import (
    BACKGROUND_NAME,
    TAG_COMPLETE,
    TAG_PRESENT,
    TAG_SIZE_RANGE_ML,
    SegmentPriors,
    classes_from_segmentation,
    classes_from_segmentations,
    clear_segment_priors,
    get_segment_priors,
    segment_masks_on_volume,
    set_segment_priors,
    transform_between,
)

__all__ = [
    "ATTR_RADIUS_MM", "ATTR_RESULT", "ATTR_SEGMENT", "ATTR_SEGMENTATION", "BACKGROUND_NAME", "LPS_FROM_RAS",
    "RESULT_NAME_SUFFIX", "TAG_COMPLETE", "TAG_PRESENT", "TAG_SIZE_RANGE_ML", "TERMINOLOGY_TAG", "CaseNodes",
    "SegmentPriors", "annotation_from_nodes", "box_from_roi", "case_id_for", "classes_from_segmentation",
    "classes_from_segmentations", "clear_segment_priors", "dataset_from_nodes", "existing_result",
    "geometry_from_ijk_to_ras", "geometry_from_node", "get_segment_priors", "grow_from_seeds",
    "ijk_to_ras_from_geometry", "labels_from_segmentation_node", "labels_to_oriented_image", "link_markups",
    "linked_segmentation", "load_predictions", "load_probabilities", "markups_class", "markups_for_segment",
    "markups_for_segmentation", "place_in_study", "points_from_point_list", "preview_labelmap",
    "probabilities_to_node", "reference_volume", "result_name", "segment_masks_on_volume", "segment_terminologies",
    "segmentation_node_from_labels", "set_segment_priors", "setup_scene", "show_in_3d", "transform_between",
    "volume_from_node", "volume_to_node", "whole_volume_geometry",
]
