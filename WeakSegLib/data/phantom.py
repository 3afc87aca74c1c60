"""A deterministic synthetic 3D phantom: the project's own data for the demo, tests and quick benchmarks.

Classes (:data:`PHANTOM_CLASSES`): 0 background (air and a "body" of soft tissue), 1 ``Outer`` (a
thick ellipsoidal shell), 2 ``Inner`` (the cavity the shell encloses, like a ventricle inside
its myocardium), 3 ``Lesion`` (a small dark sphere in the body, away from the shell).  Each class
has its own intensity, and every contrast between neighbours is several times the noise:

==========  ==========  =====================================
region      intensity   neighbours
==========  ==========  =====================================
air         0.02        body
body        0.35        air, Outer, Lesion
Outer       0.62        body, Inner
Inner       0.92        Outer
Lesion      0.10        body
==========  ==========  =====================================

(each +/- 0.03 per case), blurred by a little partial-volume smoothing, multiplied by a smooth
bias field (within about +/-20%) and corrupted by Rician noise (sigma 0.04).  The grid is
anisotropic (default spacing 1.2 x 1.2 x 3 mm, x y z) with a non-trivial origin.  Shapes,
orientations and positions are drawn from ``seed``: the same seed gives the same case.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from WeakSegLib.data.dataset import Case, ClassInfo, Dataset, write_manifest
from WeakSegLib.data.volume import Geometry, Volume, write_volume

logger = logging.getLogger(__name__)

PHANTOM_CLASSES = [
    ClassInfo(0, "Background", (0, 0, 0)),
    ClassInfo(1, "Outer", (216, 101, 79)),
    ClassInfo(2, "Inner", (241, 214, 145)),
    ClassInfo(3, "Lesion", (111, 184, 210)),
]

_INTENSITY = {"air": 0.02, "body": 0.35, "outer": 0.62, "inner": 0.92, "lesion": 0.10}
_NOISE_SIGMA = 0.04
_SHELL_MM = (6.0, 8.5)
_LESION_RADIUS_MM = (4.5, 7.0)


def _check_shape_spacing(shape: Sequence[int], spacing: Sequence[float]) -> tuple[tuple[int, ...], tuple]:
    shape = tuple(int(s) for s in shape)
    spacing = tuple(float(s) for s in spacing)
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be 3 sizes (z, y, x), each >= 8, got {shape}.")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive values (x, y, z) in mm, got {spacing}.")
    return shape, spacing


def make_phantom(seed: int = 0, shape: Sequence[int] = (24, 96, 96),
                 spacing: Sequence[float] = (1.2, 1.2, 3.0), case_id: str | None = None) -> Case:
    """One synthetic case: ``Case(id, image (float32), annotation=None, ground_truth (int16))``.

    ``shape`` is (z, y, x) in voxels, ``spacing`` (x, y, z) in mm (SimpleITK order).  The objects
    scale with the field of view, so other shapes and spacings work too.  Deterministic in ``seed``.
    """
    shape, spacing = _check_shape_spacing(shape, spacing)
    rng = np.random.default_rng(seed)
    nz, ny, nx = shape
    sx, sy, sz = spacing
    ext = np.array([nx * sx, ny * sy, nz * sz])  # field of view (x, y, z) mm
    # Physical coordinates (mm) relative to the volume centre, as broadcastable axes.
    z = ((np.arange(nz) - (nz - 1) / 2.0) * sz)[:, None, None]
    y = ((np.arange(ny) - (ny - 1) / 2.0) * sy)[None, :, None]
    x = ((np.arange(nx) - (nx - 1) / 2.0) * sx)[None, None, :]

    # Body: an elliptic cylinder along z.
    body_axes = ext[:2] * np.array([0.43, 0.37]) * rng.uniform(0.93, 1.0, 2)
    body = (x / body_axes[0]) ** 2 + (y / body_axes[1]) ** 2 <= 1.0

    # Outer shell and its Inner cavity: a rotated ellipsoid, thick in every direction.
    angle = rng.uniform(0.0, np.pi)
    c, s = np.cos(angle), np.sin(angle)
    axes = ext * np.array([0.24, 0.21, 0.30]) * rng.uniform(0.85, 1.12, 3)
    axes[:2] = np.minimum(axes[:2], 0.8 * body_axes.min())
    axes[2] = min(axes[2], 0.5 * ext[2] - 1.5 * sz - 0.06 * ext[2])
    centre = rng.uniform(-1.0, 1.0, 3) * np.array([0.06, 0.06, 0.04]) * ext
    xr = c * (x - centre[0]) + s * (y - centre[1])
    yr = -s * (x - centre[0]) + c * (y - centre[1])
    zr = z - centre[2]
    scale = min(ext[0], ext[1]) / 115.2  # mm sizes below are for the default 96 x 1.2 mm field of view
    thickness = rng.uniform(*_SHELL_MM) * scale
    outer_r = (xr / axes[0]) ** 2 + (yr / axes[1]) ** 2 + (zr / axes[2]) ** 2
    inner_axes = np.maximum(axes - thickness, 0.3 * axes)
    inner_r = (xr / inner_axes[0]) ** 2 + (yr / inner_axes[1]) ** 2 + (zr / inner_axes[2]) ** 2

    # Lesion: a sphere in the body, clear of the shell and of the body's edge.
    radius = rng.uniform(*_LESION_RADIUS_MM) * scale
    gap = radius + 4.0 * scale
    lesion_centre = None
    for _ in range(500):
        p = rng.uniform(-1.0, 1.0, 3) * np.array([body_axes[0] - gap, body_axes[1] - gap,
                                                  0.5 * ext[2] - radius - 1.5 * sz])
        q = np.array([c * (p[0] - centre[0]) + s * (p[1] - centre[1]),
                      -s * (p[0] - centre[0]) + c * (p[1] - centre[1]), p[2] - centre[2]])
        in_body = (p[0] / (body_axes[0] - gap)) ** 2 + (p[1] / (body_axes[1] - gap)) ** 2 <= 1.0
        clear = np.sum((q / (axes + gap)) ** 2) > 1.0
        if in_body and clear:
            lesion_centre = p
            break
    if lesion_centre is None:  # a field of view too small for a separate lesion: put it in a corner
        lesion_centre = np.array([0.5 * body_axes[0], -0.5 * body_axes[1], 0.0])
        logger.warning("Phantom %s: no room for the lesion away from the shell; placed at %s mm.",
                       seed, lesion_centre.round(1).tolist())
    lesion = ((x - lesion_centre[0]) ** 2 + (y - lesion_centre[1]) ** 2
              + (z - lesion_centre[2]) ** 2) <= radius ** 2

    labels = np.zeros(shape, np.int16)
    labels[np.broadcast_to(outer_r <= 1.0, shape)] = 1
    labels[np.broadcast_to(inner_r <= 1.0, shape)] = 2
    labels[lesion & body & (labels == 0)] = 3

    level = {k: v + rng.uniform(-0.03, 0.03) for k, v in _INTENSITY.items()}
    image = np.where(np.broadcast_to(body, shape), level["body"], level["air"]).astype(np.float32)
    for class_id, key in ((1, "outer"), (2, "inner"), (3, "lesion")):
        image[labels == class_id] = level[key]
    # Partial-volume blur (about 0.6 mm in every direction, in voxels per axis).
    image = ndimage.gaussian_filter(image, sigma=(0.6 / sz, 0.6 / sy, 0.6 / sx), truncate=2.5)
    # Smooth multiplicative bias field: a random low-order polynomial, exponentiated.
    xn, yn, zn = x / (0.5 * ext[0]), y / (0.5 * ext[1]), z / (0.5 * ext[2])
    coef = rng.uniform(-1.0, 1.0, 6) * np.array([0.10, 0.10, 0.06, 0.05, 0.04, 0.04])
    log_bias = coef[0] * xn + coef[1] * yn + coef[2] * zn + coef[3] * xn * yn + coef[4] * xn ** 2 \
        + coef[5] * yn ** 2
    image = image * np.exp(log_bias)
    # Rician noise: magnitude of a complex signal with Gaussian noise on both parts.
    noise = rng.standard_normal((2, *shape), dtype=np.float32) * np.float32(_NOISE_SIGMA)
    image = np.sqrt((image + noise[0]) ** 2 + noise[1] ** 2).astype(np.float32)

    origin = (-0.5 * ext[0] + rng.uniform(-20.0, 20.0), -0.5 * ext[1] + rng.uniform(-20.0, 20.0),
              rng.uniform(-80.0, 40.0))
    geometry = Geometry(shape, spacing, tuple(round(o, 3) for o in origin))
    cid = case_id if case_id is not None else f"phantom_{seed}"
    return Case(cid, Volume(image, geometry), None, Volume(labels, geometry))


def _case_seeds(n_cases: int, seed: int) -> list[int]:
    return [int(s) for s in np.random.default_rng(seed).integers(0, 2**31 - 1, size=n_cases)]


def make_phantom_dataset(n_cases: int = 4, seed: int = 0, shape: Sequence[int] = (24, 96, 96),
                         spacing: Sequence[float] = (1.2, 1.2, 3.0)) -> Dataset:
    """``n_cases`` phantoms (ids ``phantom_000``, ...) with shapes and positions drawn from ``seed``."""
    if int(n_cases) < 1:
        raise ValueError(f"n_cases must be >= 1, got {n_cases}.")
    cases = [make_phantom(s, shape, spacing, case_id=f"phantom_{i:03d}")
             for i, s in enumerate(_case_seeds(int(n_cases), seed))]
    return Dataset(list(PHANTOM_CLASSES), cases, ["image"], "MR", {}, "phantom")


def write_phantom_dataset(folder: str | os.PathLike, n_cases: int = 4, seed: int = 0, kind: str = "scribbles",
                          shape: Sequence[int] = (24, 96, 96), spacing: Sequence[float] = (1.2, 1.2, 3.0),
                          **simulate_options) -> Path:
    """Write a phantom dataset folder loadable by :func:`~WeakSegLib.data.dataset.load_dataset`.

    Per case: ``<id>.nii.gz`` (image), ``<id>_gt.nii.gz`` (ground truth), ``<id>_<kind>.nii.gz`` (the
    simulated voxel labels, -1 = unannotated) and ``<id>_<kind>.json`` (its sidecar: boxes, tags,
    sizes, complete classes), with annotations of ``kind`` simulated by
    :func:`WeakSegLib.data.simulate.simulate` (seeded per case).  Returns the path of ``dataset.json``.
    """
    from WeakSegLib.data.simulate import simulate

    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"'{folder}' exists and is not a folder; choose a folder for the phantom dataset.")
    folder.mkdir(parents=True, exist_ok=True)
    dataset = make_phantom_dataset(n_cases, seed, shape, spacing)
    slug = kind.replace("+", "_")
    entries = []
    for case, case_seed in zip(dataset.cases, _case_seeds(int(n_cases), seed), strict=True):
        annotation = simulate(case.ground_truth, dataset.num_classes, kind, seed=case_seed,
                              **simulate_options)
        write_volume(case.image, folder / f"{case.id}.nii.gz")
        write_volume(case.ground_truth, folder / f"{case.id}_gt.nii.gz")
        annotation.save(folder / f"{case.id}_{slug}.nii.gz", folder / f"{case.id}_{slug}.json")
        entries.append({"id": case.id, "image": f"{case.id}.nii.gz", "annotation": f"{case.id}_{slug}.nii.gz",
                        "sidecar": f"{case.id}_{slug}.json", "ground_truth": f"{case.id}_gt.nii.gz"})
    manifest = {**dataset.manifest(), "description": f"WeakSeg synthetic phantom, seed {seed}, "
                f"simulated '{kind}' annotations", "unannotated_value": -1, "cases": entries}
    path = write_manifest(manifest, folder)
    logger.info("Wrote a phantom dataset of %d cases to %s.", len(entries), folder)
    return path
