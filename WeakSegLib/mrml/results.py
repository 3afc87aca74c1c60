"""Results back into MRML: label volumes as segmentation nodes, segmentations as label volumes, and
the preview labelmap of the Segment Editor effect.

Results are named ``"<volume name> WeakSeg"`` and carry the attribute ``WeakSeg.Result`` (so they are
never mistaken for annotations); background gets no segment.  A result segmentation

* references its volume (reference image geometry) and sits under the volume's parent transform;
* is placed in the volume's study in the subject hierarchy (the Data module), so that DICOM SEG
  export finds the referenced series;
* carries over the segments' terminology (``TerminologyEntry`` tag, SNOMED codes) from the annotation;
* is updated in place when WeakSeg runs again on the same volume (or into a chosen node), instead of
  adding a new node every time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
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
    _get_tag,
    classes_from_segmentation,
    iter_segments,
    segment_masks_on_volume,
)

logger = logging.getLogger(__name__)

ATTR_RESULT = "WeakSeg.Result"
RESULT_NAME_SUFFIX = " WeakSeg"
TERMINOLOGY_TAG = "TerminologyEntry"   # vtkSegment::GetTerminologyEntryTagName()
PROBABILITY_SUFFIX = " probability"


def _oriented_image(mask: np.ndarray, ijk_to_ras: np.ndarray):
    image = slicer.vtkOrientedImageData()
    image.ShallowCopy(_image_from_array(mask.astype(np.uint8)))
    image.SetImageToWorldMatrix(_vtk_matrix_from_array(ijk_to_ras))
    return image


def segmentation_node_from_labels(labels: Volume, classes: Sequence[ClassInfo], reference_volume_node=None,
                                  name: str = "WeakSeg result", scene=None, target_node=None,
                                  terminologies: Mapping[str, str] | None = None):
    """A segmentation node with one segment per foreground class (names and colours from ``classes``;
    the background gets no segment; empty classes give empty segments).

    ``labels`` is a (z, y, x) class-id volume (-1 = unknown is allowed and left out).  With a
    ``reference_volume_node`` the segmentation references it (its editing geometry) and is placed
    under the volume's parent transform.  ``target_node``: an existing segmentation node to fill
    (its segments are replaced, its name kept) instead of a new one.  ``terminologies``: class name
    (any case) -> ``TerminologyEntry`` tag value to give the class's segment.  Display nodes are
    created, so it shows in the views.
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
    scene = _scene_for(scene, reference_volume_node, target_node)
    if target_node is not None:
        node = target_node
        node.GetSegmentation().RemoveAllSegments()
    else:
        node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    if reference_volume_node is not None:
        node.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume_node)
        parent = reference_volume_node.GetParentTransformNode()
        if parent is not None:
            node.SetAndObserveTransformNodeID(parent.GetID())
    ijk_to_ras = ijk_to_ras_from_geometry(labels.geometry)
    terminologies = {_class_key(k): v for k, v in (terminologies or {}).items() if v}
    for class_info in classes:
        if class_info.id == 0:
            continue
        color = [c / 255.0 for c in class_info.color]
        segment_id = node.AddSegmentFromBinaryLabelmapRepresentation(
            _oriented_image(array == class_info.id, ijk_to_ras), class_info.name, color)
        entry = terminologies.get(_class_key(class_info.name))
        if entry and segment_id:
            node.GetSegmentation().GetSegment(segment_id).SetTag(TERMINOLOGY_TAG, entry)
    node.GetSegmentation().CollapseBinaryLabelmaps(False)
    return node


def segment_terminologies(segmentation_nodes: Iterable) -> dict[str, str]:
    """Class name (lower case) -> the ``TerminologyEntry`` of the first annotation segment of that name
    that has one (what Slicer's terminology selector stores)."""
    out: dict[str, str] = {}
    for _node, _segment_id, segment in iter_segments(segmentation_nodes):
        value = _get_tag(segment, TERMINOLOGY_TAG)
        if value and _class_key(segment.GetName()) not in out:
            out[_class_key(segment.GetName())] = value
    return out


def place_in_study(node, volume_node) -> None:
    """Put ``node`` next to ``volume_node`` in the subject hierarchy (same study/patient folder), as
    Slicer's DICOM SEG export expects."""
    scene = volume_node.GetScene()
    if scene is None or node.GetScene() is not scene:
        return
    hierarchy = slicer.vtkMRMLSubjectHierarchyNode.GetSubjectHierarchyNode(scene)
    if hierarchy is None:
        return
    volume_item = hierarchy.GetItemByDataNode(volume_node)
    if not volume_item:
        return
    parent = hierarchy.GetItemParent(volume_item)
    node_item = hierarchy.GetItemByDataNode(node)
    if not node_item:  # Slicer's subject hierarchy plugins add an item for every node; plain MRML does not
        hierarchy.CreateItem(parent, node)
    elif hierarchy.GetItemParent(node_item) != parent:
        hierarchy.SetItemParent(node_item, parent)


def existing_result(volume_node, scene=None):
    """The WeakSeg result segmentation of ``volume_node`` already in the scene (the last one), or None."""
    scene = _scene_for(scene, volume_node)
    found = None
    for i in range(scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode")):
        node = scene.GetNthNodeByClass(i, "vtkMRMLSegmentationNode")
        if node.GetAttribute(ATTR_RESULT) != "true":
            continue
        reference = node.GetNodeReference(node.GetReferenceImageGeometryReferenceRole())
        if reference is not None and reference.GetID() == volume_node.GetID():
            found = node
    return found


def show_in_3d(segmentation_node, show: bool = True) -> None:
    """Show (closed surfaces are made) or hide a segmentation in the 3D views."""
    if show:
        segmentation_node.CreateClosedSurfaceRepresentation()
    else:
        segmentation_node.RemoveClosedSurfaceRepresentation()
    display = segmentation_node.GetDisplayNode()
    if display is not None:
        display.SetVisibility3D(bool(show))


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


def whole_volume_geometry(source_image):
    """A geometry-only ``vtkOrientedImageData`` with the extent and image-to-world matrix of
    ``source_image`` (the Segment Editor's source volume): the preview and Apply of the effect cover
    the whole volume, however small the region of the scribbles (Slicer's auto-complete base grows
    that region by at least 3 voxels only)."""
    geometry = slicer.vtkOrientedImageData()
    geometry.SetExtent(source_image.GetExtent())
    matrix = vtk.vtkMatrix4x4()
    source_image.GetImageToWorldMatrix(matrix)
    geometry.SetImageToWorldMatrix(matrix)
    return geometry


def result_name(volume_node) -> str:
    """Name of the segmentation WeakSeg creates for a volume: ``"<volume name> WeakSeg"``."""
    return f"{volume_node.GetName()}{RESULT_NAME_SUFFIX}"


def _in_scene(node) -> bool:
    scene = node.GetScene() if node is not None else None
    return scene is not None and scene.IsNodePresent(node)


def load_predictions(job_dir: str | os.PathLike, volume_nodes: Mapping[str, object], classes: Sequence[ClassInfo],
                     predictions: Mapping[str, str] | None = None, scene=None,
                     targets: Mapping[str, object] | None = None, reuse: bool = True,
                     terminologies: Mapping[str, str] | None = None) -> dict[str, object]:
    """Load ``job_dir/predictions/<case_id>.nii.gz`` as segmentation nodes ``"<volume> WeakSeg"``.

    ``predictions`` is the worker's ``done`` message map (case id -> path relative to ``job_dir``);
    without it every ``predictions/*.nii.gz`` whose case id is in ``volume_nodes`` is loaded.
    Each result goes into ``targets[case_id]`` when given, else (``reuse``) into the volume's earlier
    WeakSeg result, else into a new node; it is placed in the volume's study and its segments get the
    ``terminologies`` (see :func:`segmentation_node_from_labels`).  A volume no longer in a scene
    (scene closed, node deleted) is skipped with a warning.  Returns case id -> segmentation node.
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
        if not _in_scene(volume_node):
            logger.warning("The volume of case '%s' is no longer in the scene; its result is not loaded.", case_id)
            continue
        labels = read_volume(job_dir / relative)
        target = (targets or {}).get(case_id)
        if target is not None and not _in_scene(target):
            target = None
        if target is None and reuse:
            target = existing_result(volume_node)
        node = segmentation_node_from_labels(labels, classes, volume_node, result_name(volume_node),
                                             scene=volume_node.GetScene(), target_node=target,
                                             terminologies=terminologies)
        node.SetAttribute(ATTR_RESULT, "true")
        place_in_study(node, volume_node)
        nodes[case_id] = node
    return nodes


def load_probabilities(paths: Mapping[str, str | os.PathLike], volume_nodes: Mapping[str, object],
                       classes: Sequence[ClassInfo]) -> dict[str, list]:
    """The worker's probability files (case id -> (z, y, x, class) volume) as one float volume node per
    foreground class, ``"<volume> <class> probability"``, placed in the volume's study.  Returns case id
    -> nodes."""
    from WeakSegLib.mrml.nodes import probabilities_to_node

    out: dict[str, list] = {}
    for case_id, path in paths.items():
        volume_node = volume_nodes.get(case_id)
        if volume_node is None or not _in_scene(volume_node):
            continue
        probabilities = read_volume(path)
        nodes = []
        for class_info in classes:
            if class_info.id == 0:
                continue
            node = probabilities_to_node(probabilities, class_info.id,
                                         f"{volume_node.GetName()} {class_info.name}{PROBABILITY_SUFFIX}",
                                         volume_node.GetScene())
            parent = volume_node.GetParentTransformNode()
            if parent is not None:
                node.SetAndObserveTransformNodeID(parent.GetID())
            place_in_study(node, volume_node)
            nodes.append(node)
        out[case_id] = nodes
    return out


