"""WeakSegLib.mrml.nodes against the real MRML library: voxel grids (IJKToRAS <-> Geometry, RAS <->
LPS) and volume nodes, through real NRRD files."""

from __future__ import annotations

import numpy as np
import pytest
from mrml_scene import oblique_geometry, scene_removing_added_nodes, slicer, vtk

from WeakSegLib import mrml
from WeakSegLib.data.volume import Volume, read_volume, write_volume
from WeakSegLib.mrml.nodes import _array_from_vtk_matrix


@pytest.fixture
def scene():
    yield from scene_removing_added_nodes()


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
    m = _array_from_vtk_matrix(matrix)
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

