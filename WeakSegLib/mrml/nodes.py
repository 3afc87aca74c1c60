"""MRML scene set-up outside Slicer, voxel grids (IJKToRAS <-> :class:`Geometry`) and volume nodes.

Slicer works in RAS, SimpleITK/ITK/DICOM (and so :class:`~WeakSegLib.data.volume.Geometry`) in LPS.
The conversion happens here, once: ``LPS = diag(-1, -1, 1) @ RAS``, applied to the volume node's
``IJKToRAS`` matrix, which gives spacing, origin and direction exactly, oblique and anisotropic grids
included.  Geometries are the volume node's *own* coordinates (as written to a file).  Arrays are
(z, y, x) [, channel], as in SimpleITK.
"""

from __future__ import annotations

import types
from collections.abc import Sequence

import numpy as np
import slicer
import vtk
from vtk.util import numpy_support

from WeakSegLib.data.volume import Geometry, Volume

#: RAS <-> LPS (its own inverse).
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0])

_SCALAR_NODE_CLASSES = ("vtkMRMLScalarVolumeNode", "vtkMRMLLabelMapVolumeNode")
_STANDALONE: dict = {}  # keeps the logics created by setup_scene alive


# ---------------------------------------------------------------------------------------------------
# Scene set-up outside Slicer
# ---------------------------------------------------------------------------------------------------
def _register_segmentation_converter_rules() -> None:
    """Register the standard segmentation conversion rules if nobody has (Slicer's module does)."""
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    if len(factory.GetConverterRules()) > 0:
        return
    for rule_class in ("vtkBinaryLabelmapToClosedSurfaceConversionRule",
                       "vtkClosedSurfaceToBinaryLabelmapConversionRule",
                       "vtkClosedSurfaceToFractionalLabelmapConversionRule",
                       "vtkFractionalLabelmapToClosedSurfaceConversionRule"):
        rule = getattr(slicer, rule_class, None)
        if rule is not None:
            factory.RegisterConverterRule(rule())


def setup_scene(scene=None):
    """Make ``slicer.mrmlScene`` and the logics ``slicer.util`` needs exist; return the scene.

    Inside the Slicer application this returns ``slicer.mrmlScene`` and changes nothing.  With the
    ``slicer-core`` wheel (plain Python, no Qt) it creates a ``vtkMRMLScene`` (or uses ``scene``),
    sets ``slicer.mrmlScene``, registers the Colors, Volumes and Segmentations logics (so that
    ``slicer.modules.volumes.logic()`` / ``slicer.modules.segmentations.logic()`` and with them
    ``slicer.util.arrayFromSegmentBinaryLabelmap`` etc. work) and the segmentation conversion
    rules.  Calling it again returns the same scene.  Example (a notebook, a test)::

        from WeakSegLib import mrml
        scene = mrml.setup_scene()
        node = mrml.volume_to_node(volume, "CT")
    """
    if hasattr(slicer, "app") and getattr(slicer, "mrmlScene", None) is not None:
        return slicer.mrmlScene
    _register_segmentation_converter_rules()
    if scene is None:
        scene = _STANDALONE.get("scene") or getattr(slicer, "mrmlScene", None) or slicer.vtkMRMLScene()
    if _STANDALONE.get("scene") is scene:
        slicer.mrmlScene = scene
        return scene
    app_logic = slicer.vtkSlicerApplicationLogic()
    app_logic.SetMRMLScene(scene)
    logics = {}

    def register(name, logic):
        logic.SetMRMLScene(scene)
        logic.SetMRMLApplicationLogic(app_logic)
        app_logic.SetModuleLogic(name, logic)
        logics[name.lower()] = logic
        return logic

    color_logic = register("Colors", slicer.vtkMRMLColorLogic())
    color_logic.AddDefaultColorNodes()
    register("Volumes", slicer.vtkSlicerVolumesLogic())
    register("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic())
    modules = getattr(slicer, "modules", None) or types.SimpleNamespace()
    for name, logic in logics.items():
        setattr(modules, name, types.SimpleNamespace(logic=(lambda lg=logic: lg)))
    slicer.modules = modules
    slicer.mrmlScene = scene
    _STANDALONE.update(scene=scene, app_logic=app_logic, logics=logics)
    return scene


def _scene_for(scene=None, *nodes):
    if scene is not None:
        return scene
    for node in nodes:
        if node is not None and node.GetScene() is not None:
            return node.GetScene()
    scene = getattr(slicer, "mrmlScene", None)
    if scene is None:
        raise ValueError("No MRML scene: pass scene=..., or call WeakSegLib.mrml.setup_scene() first "
                         "when running outside Slicer.")
    return scene


# ---------------------------------------------------------------------------------------------------
# Geometry: IJKToRAS <-> Geometry (LPS)
# ---------------------------------------------------------------------------------------------------
def _array_from_vtk_matrix(matrix) -> np.ndarray:
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)], dtype=float)


def _vtk_matrix_from_array(array: np.ndarray):
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, float(array[r, c]))
    return matrix


def ijk_to_ras_from_geometry(geometry: Geometry, ijk_offset: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """The 4x4 ``IJKToRAS`` matrix of a geometry (IJK = voxel index (x, y, z), RAS in mm)."""
    lps = geometry.direction_matrix @ np.diag(geometry.spacing)
    matrix = np.eye(4)
    matrix[:3, :3] = LPS_FROM_RAS @ lps
    matrix[:3, 3] = LPS_FROM_RAS @ np.asarray(geometry.origin) - matrix[:3, :3] @ np.asarray(ijk_offset, float)
    return matrix


def geometry_from_ijk_to_ras(ijk_to_ras: np.ndarray, shape_zyx: Sequence[int],
                             ijk_offset: Sequence[int] = (0, 0, 0)) -> Geometry:
    """A :class:`Geometry` (LPS) from a 4x4 ``IJKToRAS`` matrix and the array shape (z, y, x).

    ``ijk_offset`` is the IJK index of the first voxel (the start of a VTK extent).
    """
    matrix = np.asarray(ijk_to_ras, dtype=float)
    lps = LPS_FROM_RAS @ matrix[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    if np.any(spacing <= 0) or not np.all(np.isfinite(spacing)):
        raise ValueError(f"Invalid IJKToRAS matrix (zero or non-finite spacing): {matrix.tolist()}.")
    direction = lps / spacing
    origin_ras = matrix[:3, :3] @ np.asarray(ijk_offset, float) + matrix[:3, 3]
    origin = LPS_FROM_RAS @ origin_ras
    return Geometry(tuple(int(s) for s in shape_zyx), tuple(spacing), tuple(origin), tuple(direction.ravel()))


def _image_shape_and_offset(image) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    e = image.GetExtent()
    shape = (e[5] - e[4] + 1, e[3] - e[2] + 1, e[1] - e[0] + 1)
    return shape, (e[0], e[2], e[4])


def _node_ijk_to_ras(volume_node) -> np.ndarray:
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    return _array_from_vtk_matrix(matrix)


def _check_volume_node(volume_node, what: str = "volume") -> None:
    if volume_node is None:
        raise ValueError(f"No {what} node given.")
    if not volume_node.IsA("vtkMRMLVolumeNode"):
        raise TypeError(f"The {what} must be a volume node, got a {volume_node.GetClassName()} "
                        f"('{volume_node.GetName()}').")
    if volume_node.GetImageData() is None:
        raise ValueError(f"The {what} node '{volume_node.GetName()}' holds no image data (load or create "
                         f"the image first).")


def geometry_from_node(volume_node) -> Geometry:
    """The voxel grid of a volume node as a :class:`Geometry` (LPS, the node's own coordinates)."""
    _check_volume_node(volume_node)
    shape, offset = _image_shape_and_offset(volume_node.GetImageData())
    if min(shape) < 1:
        raise ValueError(f"The volume node '{volume_node.GetName()}' has an empty image.")
    return geometry_from_ijk_to_ras(_node_ijk_to_ras(volume_node), shape, offset)


# ---------------------------------------------------------------------------------------------------
# Volumes
# ---------------------------------------------------------------------------------------------------
def _array_from_image(image) -> np.ndarray:
    shape, _ = _image_shape_and_offset(image)
    scalars = image.GetPointData().GetScalars()
    if scalars is None:
        raise ValueError("The image has no scalars.")
    components = image.GetNumberOfScalarComponents()
    array = numpy_support.vtk_to_numpy(scalars)
    return array.reshape(shape + ((components,) if components > 1 else ()))


def volume_from_node(volume_node) -> Volume:
    """A copy of a volume node's voxels with their exact geometry (LPS): a :class:`Volume`.

    Scalar and label map volumes give (z, y, x) arrays; vector volumes (several components, e.g.
    co-registered sequences or RGB) give (z, y, x, channel).  Tensor volumes are refused.
    """
    _check_volume_node(volume_node)
    if volume_node.IsA("vtkMRMLDiffusionTensorVolumeNode"):
        raise TypeError(f"'{volume_node.GetName()}' is a tensor volume; WeakSeg segments scalar or vector "
                        f"(multi-channel) volumes.")
    geometry = geometry_from_node(volume_node)
    array = np.array(_array_from_image(volume_node.GetImageData()), copy=True)
    return Volume(array, geometry)


def _image_from_array(array: np.ndarray):
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8)
    components = 1 if array.ndim == 3 else int(array.shape[3])
    image = vtk.vtkImageData()
    image.SetDimensions(int(array.shape[2]), int(array.shape[1]), int(array.shape[0]))
    flat = np.ascontiguousarray(array).reshape(-1, components) if components > 1 else np.ascontiguousarray(
        array).ravel()
    vtk_array = numpy_support.numpy_to_vtk(flat, deep=True)
    vtk_array.SetNumberOfComponents(components)
    image.GetPointData().SetScalars(vtk_array)
    return image


def volume_to_node(volume: Volume, name: str, scene=None, node_class: str = "vtkMRMLScalarVolumeNode",
                   create_display: bool = True):
    """A new volume node in ``scene`` (default ``slicer.mrmlScene``) holding ``volume`` (copied).

    ``node_class`` is ``"vtkMRMLScalarVolumeNode"`` or ``"vtkMRMLLabelMapVolumeNode"``; a
    multi-channel volume becomes a ``vtkMRMLVectorVolumeNode``.  The node's ``IJKToRAS`` is set
    from the geometry, so ``volume_from_node(volume_to_node(v))`` gives ``v`` back.
    """
    scene = _scene_for(scene)
    array = np.asarray(volume.array)
    if node_class not in (*_SCALAR_NODE_CLASSES, "vtkMRMLVectorVolumeNode"):
        raise ValueError(f"node_class must be one of {_SCALAR_NODE_CLASSES} or vtkMRMLVectorVolumeNode, "
                         f"got '{node_class}'.")
    if array.ndim == 4:
        if array.shape[3] == 1:
            array = array[..., 0]
        elif node_class == "vtkMRMLLabelMapVolumeNode":
            raise ValueError(f"A label map has one channel; '{name}' has {array.shape[3]}.")
        else:
            node_class = "vtkMRMLVectorVolumeNode"
    if node_class == "vtkMRMLLabelMapVolumeNode" and not np.issubdtype(array.dtype, np.integer):
        if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
            raise ValueError(f"A label map holds integer labels; '{name}' has non-integer values.")
        array = array.astype(np.int16)
    node = scene.AddNewNodeByClass(node_class, name)
    node.SetAndObserveImageData(_image_from_array(array))
    node.SetIJKToRASMatrix(_vtk_matrix_from_array(ijk_to_ras_from_geometry(volume.geometry)))
    if create_display:
        node.CreateDefaultDisplayNodes()
    return node


def probabilities_to_node(probabilities: Volume, class_index: int, name: str, scene=None):
    """The probability map of one class (channel ``class_index`` of a (z, y, x, C) volume) as a new
    float32 scalar volume node."""
    array = np.asarray(probabilities.array)
    if array.ndim != 4:
        raise ValueError(f"Probabilities must be a (z, y, x, class) volume, got shape {array.shape}.")
    if not 0 <= int(class_index) < array.shape[3]:
        raise ValueError(f"class_index {class_index} is out of range: the probabilities have "
                         f"{array.shape[3]} classes (0..{array.shape[3] - 1}).")
    channel = np.ascontiguousarray(array[..., int(class_index)], dtype=np.float32)
    return volume_to_node(Volume(channel, probabilities.geometry), name, scene)

