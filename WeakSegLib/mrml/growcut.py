"""Slicer's Grow-from-seeds on numpy arrays: the baseline ``weakseg bench`` compares against."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def grow_from_seeds(image: np.ndarray, seeds: np.ndarray, spacing_zyx: Sequence[float] = (1.0, 1.0, 1.0),
                    mask: np.ndarray | None = None, distance_penalty: float = 0.0, pad: bool = True
                    ) -> np.ndarray:
    """Segment ``image`` from ``seeds`` with Slicer's Grow-from-seeds (fast GrowCut, Zhu et al. IMIC 2014).

    ``image``: (z, y, x) intensities (a single channel: pass one channel of a multi-channel case).
    ``seeds``: (z, y, x) integer labelmap, **0 = unlabelled** and 1..N = seed labels (shift class ids by
    one when background is class 0 and must be seeded).  ``spacing_zyx``: voxel spacing in mm, set on
    the ``vtkImageData`` as Slicer does (so an anisotropic grid such as ACDC's 1.4 x 1.4 x 10 mm is
    handled correctly by the distance penalty).  ``mask``: optional (z, y, x) bool, True where the
    result may be computed (Slicer's "editable area"); voxels outside stay 0.  ``distance_penalty``:
    Slicer's "Seed locality" (0 = default: pure intensity-difference geodesics; larger values keep
    each seed's influence more local).

    Returns a (z, y, x) array of the seeds' dtype with every reachable voxel labelled 1..N (0 where
    no seed can reach, e.g. outside ``mask``).  Like Slicer's effect it uses the 26-neighbourhood and
    the cost ``|I(p) - I(q)|`` (+ ``distance_penalty`` x distance in mm) along paths from the seeds.

    ``vtkImageGrowCutSegment`` never grows *from* voxels on the image border (it assumes a margin).
    Slicer works on an extent grown around the seeds; here the volume is padded by one voxel
    (replicated intensities, no seeds) and cropped back, so seeds on the first or last slice grow too.
    """
    import vtk
    from vtk.util import numpy_support

    try:
        from slicer import vtkImageGrowCutSegment
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("Grow-from-seeds needs Slicer's segmentation logic: run inside 3D Slicer or "
                          "'pip install slicer-core'.") from exc

    image = np.asarray(image)
    seeds = np.asarray(seeds)
    if image.ndim != 3 or seeds.shape != image.shape:
        raise ValueError(f"image and seeds must be (z, y, x) arrays of one shape, got {image.shape} and "
                         f"{seeds.shape}.")
    if not np.issubdtype(seeds.dtype, np.integer):
        raise ValueError(f"seeds must be an integer labelmap (0 = unlabelled), got dtype {seeds.dtype}.")
    if seeds.min() < 0:
        raise ValueError("seeds must be >= 0 (0 = unlabelled, 1..N = seed labels); shift negative labels.")
    spacing = tuple(float(s) for s in spacing_zyx)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing_zyx must be 3 positive values (z, y, x) in mm, got {spacing_zyx}.")
    if mask is not None and np.asarray(mask).shape != image.shape:
        raise ValueError(f"mask shape {np.asarray(mask).shape} differs from the image shape {image.shape}.")
    if not np.any(seeds):
        return np.zeros(image.shape, seeds.dtype)

    label_dtype = np.int16 if seeds.max() < 2**15 else np.int32
    intensity = np.ascontiguousarray(image, dtype=np.float32)
    labels = np.ascontiguousarray(seeds, dtype=label_dtype)
    keep = None if mask is None else np.ascontiguousarray(np.asarray(mask, bool))
    if pad:
        intensity = np.pad(intensity, 1, mode="edge")
        labels = np.pad(labels, 1)
        keep = None if keep is None else np.pad(keep, 1)

    def to_vtk(array: np.ndarray) -> vtk.vtkImageData:
        data = vtk.vtkImageData()
        nz, ny, nx = array.shape
        data.SetDimensions(nx, ny, nz)
        data.SetSpacing(spacing[2], spacing[1], spacing[0])
        data.SetOrigin(0.0, 0.0, 0.0)
        scalars = numpy_support.numpy_to_vtk(array.ravel(), deep=True)
        data.GetPointData().SetScalars(scalars)
        return data

    grow = vtkImageGrowCutSegment()
    grow.SetIntensityVolume(to_vtk(intensity))
    grow.SetSeedLabelVolume(to_vtk(labels))
    if keep is not None:
        # Slicer's mask volume marks the voxels the effect may NOT change with a non-zero value.
        grow.SetMaskVolume(to_vtk((~keep).astype(np.uint8)))
    grow.SetDistancePenalty(float(distance_penalty))
    grow.Update()
    output = grow.GetOutput()
    if output is None or output.GetPointData().GetScalars() is None:
        raise RuntimeError("vtkImageGrowCutSegment produced no output (image too small or geometry "
                           "mismatch).")
    result = numpy_support.vtk_to_numpy(output.GetPointData().GetScalars()).reshape(labels.shape)
    if pad:
        result = result[1:-1, 1:-1, 1:-1]
    result = np.array(result, dtype=seeds.dtype)
    if mask is not None:
        result[~np.asarray(mask, bool)] = 0
    return result
