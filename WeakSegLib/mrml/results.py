"""Results back into MRML: label volumes as NEW segmentation nodes, segmentations as label volumes,
and the preview labelmap of the Segment Editor effect.

Results are named ``"<volume name> WeakSeg"`` and carry the attribute ``WeakSeg.Result`` (so they are
never mistaken for annotations); background gets no segment.  A result segmentation is put under the
reference volume's parent transform, so it overlays the volume wherever the volume is shown.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import slicer
import vtk

from WeakSegLib.data.annotation import UNKNOWN
from WeakSegLib.data.dataset import ClassInfo
from WeakSegLib.data.volume import Volume, read_volume
from WeakSegLib.jobs.protocol import PREDICTIONS_DIR, VOLUME_SUFFIX
from WeakSegLib.mrml.nodes import (
    _array_from_image,
    _image_from_array,
    _image_shape_and_offset,
    _scene_for,
    _vtk_matrix_from_array,
    geometry_from_node,
    ijk_to_ras_from_geometry,
)
from WeakSegLib.mrml.segments import (
    _class_id_by_name,
    _class_key,
    _describe_classes,
    classes_from_segmentation,
    segment_masks_on_volume,
)

logger = logging.getLogger(__name__)

ATTR_RESULT = "WeakSeg.Result"
RESULT_NAME_SUFFIX = " WeakSeg"


def _oriented_image(mask: np.ndarray, ijk_to_ras: np.ndarray):
    image = slicer.vtkOrientedImageData()
    image.ShallowCopy(_image_from_array(mask.astype(np.uint8)))
    image.SetImageToWorldMatrix(_vtk_matrix_from_array(ijk_to_ras))
    return image


def segmentation_node_from_labels(labels: Volume, classes: Sequence[ClassInfo], reference_volume_node=None,
                                  name: str = "WeakSeg result", scene=None):
    """A NEW segmentation node with one segment per foreground class (names and colours from
    ``classes``; the background gets no segment; empty classes give empty segments).

    ``labels`` is a (z, y, x) class-id volume (-1 = unknown is allowed and left out).  With a
    ``reference_volume_node`` the segmentation references it (its editing geometry) and is placed
    under the volume's parent transform.  Display nodes are created, so it shows in the views.
    """
    array = np.asarray(labels.array)
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    if array.ndim != 3:
        raise ValueError(f"Labels must be a (z, y, x) volume, got shape {array.shape}.")
    known = {c.id for c in classes} | {UNKNOWN}
    found = {int(v) for v in np.unique(array)}
    if not found <= known:
        raise ValueError(f"Labels hold class ids {sorted(found - known)} that are not in the classes "
                         f"({_describe_classes(classes)}).")
    scene = _scene_for(scene, reference_volume_node)
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    node.CreateDefaultDisplayNodes()
    if reference_volume_node is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
        parent = reference_volume_node.GetParentTransformNode()
        if parent is not None:
            node.SetAndObserveTransformNodeID(parent.GetID())
    ijk_to_ras = ijk_to_ras_from_geometry(labels.geometry)
    for class_info in classes:
        if class_info.id == 0:
            continue
        color = [c / 255.0 for c in class_info.color]
        node.AddSegmentFromBinaryLabelmapRepresentation(_oriented_image(array == class_info.id, ijk_to_ras),
                                                        class_info.name, color)
    node.GetSegmentation().CollapseBinaryLabelmaps(False)
    return node


def labels_from_segmentation_node(segmentation_node, volume_node, classes: Sequence[ClassInfo] | None = None
                                  ) -> Volume:
    """A class-id label volume (0 = background/unpainted) of a segmentation on a volume's grid
    (later segments win).  Handy for evaluation (Dice) and for tests."""
    classes = list(classes) if classes is not None else classes_from_segmentation(segmentation_node)
    by_name = _class_id_by_name(classes)
    geometry = geometry_from_node(volume_node)
    out = np.zeros(geometry.shape, dtype=np.int16)
    segmentation = segmentation_node.GetSegmentation()
    for segment_id, mask in segment_masks_on_volume(segmentation_node, volume_node).items():
        name = segmentation.GetSegment(segment_id).GetName()
        if _class_key(name) not in by_name:
            raise ValueError(f"Segment '{name}' is not one of the classes ({_describe_classes(classes)}).")
        out[mask] = by_name[_class_key(name)]
    return Volume(out, geometry)


def labels_to_oriented_image(labels: Volume):
    """A class-id label volume as a ``vtkOrientedImageData`` (RAS geometry), values as int16."""
    array = np.asarray(labels.array)
    if array.ndim == 4 and array.shape[3] == 1:
        array = array[..., 0]
    image = slicer.vtkOrientedImageData()
    image.ShallowCopy(_image_from_array(array.astype(np.int16)))
    image.SetImageToWorldMatrix(_vtk_matrix_from_array(ijk_to_ras_from_geometry(labels.geometry)))
    return image


def preview_labelmap(labels: Volume, classes: Sequence[ClassInfo], segment_names: Sequence[str], reference_image,
                     transform=None):
    """What an auto-complete Segment Editor effect shows: the predicted ``labels`` resampled onto the
    geometry of ``reference_image`` (a ``vtkOrientedImageData``; nearest neighbour), with value
    ``i + 1`` where the prediction is the class of ``segment_names[i]`` (matched by name) and 0
    elsewhere.  ``transform`` maps the labels' frame to the reference's (None: the same frame).
    """
    by_name = _class_id_by_name(classes)
    lookup = np.zeros(max([c.id for c in classes] + [0]) + 2, dtype=np.int16)  # last slot: unknown (-1)
    for index, name in enumerate(segment_names):
        class_id = by_name.get(_class_key(name))
        if class_id is not None:
            lookup[class_id] = index + 1
    source = labels_to_oriented_image(labels)
    resampled = slicer.vtkOrientedImageData()
    geometry_only = slicer.vtkOrientedImageData()
    geometry_only.SetExtent(reference_image.GetExtent())
    matrix = vtk.vtkMatrix4x4()
    reference_image.GetImageToWorldMatrix(matrix)
    geometry_only.SetImageToWorldMatrix(matrix)
    if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            source, geometry_only, resampled, False, True, transform, 0):
        raise ValueError("The prediction could not be resampled onto the segmentation's geometry.")
    shape, offset = _image_shape_and_offset(geometry_only)
    values = np.zeros(shape, dtype=np.int16)
    e = resampled.GetExtent()
    if e[0] <= e[1] and e[2] <= e[3] and e[4] <= e[5]:
        data = _array_from_image(resampled).astype(np.int64)
        start = np.array([e[4], e[2], e[0]]) - np.array(offset[::-1])
        lo, hi = np.maximum(start, 0), np.minimum(start + np.array(data.shape), shape)
        if np.all(hi > lo):
            src = tuple(slice(a - b, c - b) for a, b, c in zip(lo, start, hi))
            values[tuple(slice(a, c) for a, c in zip(lo, hi))] = lookup[np.clip(data[src], -1, len(lookup) - 2)]
    output = slicer.vtkOrientedImageData()
    output.ShallowCopy(_image_from_array(values))
    output.SetExtent(geometry_only.GetExtent())
    output.SetImageToWorldMatrix(matrix)
    return output


def result_name(volume_node) -> str:
    """Name of the segmentation WeakSeg creates for a volume: ``"<volume name> WeakSeg"``."""
    return f"{volume_node.GetName()}{RESULT_NAME_SUFFIX}"


def load_predictions(job_dir: str | os.PathLike, volume_nodes: Mapping[str, object], classes: Sequence[ClassInfo],
                     predictions: Mapping[str, str] | None = None, scene=None) -> dict[str, object]:
    """Load ``job_dir/predictions/<case_id>.nii.gz`` as new segmentation nodes ``"<volume> WeakSeg"``.

    ``predictions`` is the worker's ``done`` message map (case id -> path relative to ``job_dir``);
    without it every ``predictions/*.nii.gz`` whose case id is in ``volume_nodes`` is loaded.
    Returns case id -> segmentation node.
    """
    job_dir = Path(job_dir)
    if predictions is None:
        predictions = {}
        for path in sorted((job_dir / PREDICTIONS_DIR).glob(f"*{VOLUME_SUFFIX}")):
            predictions[path.name[: -len(VOLUME_SUFFIX)]] = str(path.relative_to(job_dir))
    nodes = {}
    for case_id, relative in predictions.items():
        volume_node = volume_nodes.get(case_id)
        if volume_node is None:
            logger.warning("Prediction for unknown case '%s' is ignored.", case_id)
            continue
        labels = read_volume(job_dir / relative)
        node = segmentation_node_from_labels(labels, classes, volume_node, result_name(volume_node),
                                             scene=_scene_for(scene, volume_node))
        node.SetAttribute(ATTR_RESULT, "true")
        nodes[case_id] = node
    return nodes


