"""Volumes: an image array that never travels without its geometry.

Axis conventions (as SimpleITK and Slicer):

* ``Volume.array`` is indexed ``(z, y, x)`` for a scalar image and ``(z, y, x, channel)`` for a
  multi-channel case (several co-registered images such as FLAIR + T1c).
* ``Geometry.spacing`` and ``Geometry.origin`` are given in SimpleITK order ``(x, y, z)`` and in
  millimetres; ``Geometry.direction`` is the 3x3 direction cosine matrix flattened row-major, as
  ``SimpleITK.Image.GetDirection()`` returns it.  Physical coordinates are LPS, as in DICOM/ITK.
  The MRML bridge (``WeakSegLib.mrml``) is the only place that converts to Slicer's RAS.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

logger = logging.getLogger(__name__)

SUPPORTED_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".nhdr", ".mha", ".mhd")

# Geometry equality tolerances: spacing/origin in mm, direction cosines (unitless).
_ATOL_MM = 1e-3
_ATOL_DIRECTION = 1e-4


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of a volume: shape (z, y, x) plus spacing/origin (x, y, z, mm) and direction (LPS)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        spacing = tuple(float(s) for s in self.spacing)
        origin = tuple(float(s) for s in self.origin)
        direction = tuple(float(s) for s in np.asarray(self.direction, dtype=float).ravel())
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"Geometry.shape must be 3 positive sizes (z, y, x), got {self.shape}.")
        if len(spacing) != 3 or not all(np.isfinite(spacing)) or min(spacing) <= 0:
            raise ValueError(
                f"Geometry.spacing must be 3 positive finite values (x, y, z) in mm, got {self.spacing}."
            )
        if len(origin) != 3 or not all(np.isfinite(origin)):
            raise ValueError(f"Geometry.origin must be 3 finite values (x, y, z) in mm, got {self.origin}.")
        if len(direction) != 9:
            raise ValueError(f"Geometry.direction must hold 9 values (3x3 row-major), got {len(direction)}.")
        matrix = np.asarray(direction).reshape(3, 3)
        if not np.allclose(matrix @ matrix.T, np.eye(3), atol=1e-4):
            raise ValueError(
                f"Geometry.direction must be orthonormal (a rotation, possibly with a flip), got {direction}."
            )
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "spacing", spacing)
        object.__setattr__(self, "origin", origin)
        object.__setattr__(self, "direction", direction)

    # ------------------------------------------------------------------ derived quantities
    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        """Spacing in array axis order (z, y, x)."""
        return (self.spacing[2], self.spacing[1], self.spacing[0])

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in millilitres (1 mL = 1000 mm^3)."""
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def anisotropy(self) -> float:
        """Largest spacing divided by smallest spacing."""
        return max(self.spacing) / min(self.spacing)

    def index_to_physical(self, index_zyx: np.ndarray) -> np.ndarray:
        """Continuous voxel indices (..., 3) in (z, y, x) order -> LPS points (..., 3) (x, y, z) in mm."""
        ijk = np.asarray(index_zyx, dtype=float)[..., ::-1]
        return ijk * np.asarray(self.spacing) @ self.direction_matrix.T + np.asarray(self.origin)

    def physical_to_index(self, points_lps: np.ndarray) -> np.ndarray:
        """LPS points (..., 3) in mm -> continuous voxel indices (..., 3) in (z, y, x) order."""
        rel = np.asarray(points_lps, dtype=float) - np.asarray(self.origin)
        ijk = rel @ self.direction_matrix / np.asarray(self.spacing)
        return ijk[..., ::-1]

    def isclose(self, other: Geometry, atol_mm: float = _ATOL_MM) -> bool:
        return (
            self.shape == other.shape
            and np.allclose(self.spacing, other.spacing, atol=atol_mm)
            and np.allclose(self.origin, other.origin, atol=atol_mm)
            and np.allclose(self.direction, other.direction, atol=_ATOL_DIRECTION)
        )

    def describe(self) -> str:
        fmt = lambda v: "(" + ", ".join(f"{x:.6g}" for x in v) + ")"  # noqa: E731
        return (
            f"shape (z,y,x)={self.shape}, spacing (x,y,z)={fmt(self.spacing)} mm, "
            f"origin={fmt(self.origin)} mm, direction={fmt(self.direction)}"
        )

    def to_dict(self) -> dict:
        return {
            "shape": list(self.shape),
            "spacing": list(self.spacing),
            "origin": list(self.origin),
            "direction": list(self.direction),
        }

    @classmethod
    def from_dict(cls, data: dict) -> Geometry:
        return cls(tuple(data["shape"]), tuple(data["spacing"]), tuple(data["origin"]), tuple(data["direction"]))

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Geometry:
        size = image.GetSize()  # (x, y, z)
        if image.GetDimension() == 2:
            size = (*size, 1)
            spacing = (*image.GetSpacing(), 1.0)
            origin = (*image.GetOrigin(), 0.0)
            d = image.GetDirection()
            direction = (d[0], d[1], 0.0, d[2], d[3], 0.0, 0.0, 0.0, 1.0)
            return cls((size[2], size[1], size[0]), spacing, origin, direction)
        if image.GetDimension() != 3:
            raise ValueError(f"Only 2D and 3D images are supported, got a {image.GetDimension()}D image.")
        return cls((size[2], size[1], size[0]), image.GetSpacing(), image.GetOrigin(), image.GetDirection())

    def apply_to(self, image: sitk.Image) -> sitk.Image:
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(self.direction)
        return image


class GeometryMismatchError(ValueError):
    """Two volumes that must share a voxel grid do not."""


def check_same_geometry(a: Geometry, b: Geometry, what_a: str = "image", what_b: str = "annotation") -> None:
    """Raise :class:`GeometryMismatchError` naming both geometries when ``a`` and ``b`` differ."""
    if not a.isclose(b):
        raise GeometryMismatchError(
            f"The {what_b} does not lie on the {what_a}'s voxel grid.\n"
            f"  {what_a}: {a.describe()}\n  {what_b}: {b.describe()}\n"
            f"Resample the {what_b} onto the {what_a} (e.g. WeakSegLib.data.volume.resample_to(..., "
            f"interpolator='nearest') or Slicer's 'Resample Image (BRAINS)') before using them together."
        )


@dataclass
class Volume:
    """An image array (z, y, x[, channel]) with its geometry.

    ``channel_names`` names the channels of a multi-channel case (e.g. ``["FLAIR", "T1c"]``).
    """

    array: np.ndarray
    geometry: Geometry = field(default=None)  # type: ignore[assignment]
    channel_names: list[str] | None = None

    def __post_init__(self) -> None:
        self.array = np.asarray(self.array)
        if self.array.ndim not in (3, 4):
            raise ValueError(
                f"A Volume array must be (z, y, x) or (z, y, x, channel), got shape {self.array.shape}."
            )
        if self.geometry is None:
            self.geometry = Geometry(self.array.shape[:3])
        elif tuple(self.array.shape[:3]) != self.geometry.shape:
            raise ValueError(
                f"Array shape {self.array.shape[:3]} (z, y, x) does not match geometry shape "
                f"{self.geometry.shape}."
            )
        if self.channel_names is not None and len(self.channel_names) != self.num_channels:
            raise ValueError(
                f"{len(self.channel_names)} channel names given for {self.num_channels} channels: "
                f"{self.channel_names}."
            )

    @property
    def num_channels(self) -> int:
        return 1 if self.array.ndim == 3 else int(self.array.shape[3])

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.geometry.shape

    @property
    def spacing(self) -> tuple[float, float, float]:
        return self.geometry.spacing

    def channels_first(self) -> np.ndarray:
        """Array as (channel, z, y, x), float32 (a scalar image gets one channel)."""
        arr = self.array if self.array.ndim == 4 else self.array[..., None]
        return np.ascontiguousarray(np.moveaxis(arr, -1, 0), dtype=np.float32)

    def check_finite(self, name: str = "image") -> None:
        if np.issubdtype(self.array.dtype, np.floating) and not np.isfinite(self.array).all():
            bad = int((~np.isfinite(self.array)).sum())
            raise ValueError(
                f"The {name} holds {bad} NaN/Inf voxel(s). Replace them (e.g. numpy.nan_to_num or "
                f"SimpleITK's Threshold filter) before training or prediction."
            )

    def with_array(self, array: np.ndarray, channel_names: list[str] | None = None) -> Volume:
        """A new Volume on the same grid holding ``array``."""
        return Volume(array, self.geometry, channel_names)

    # ------------------------------------------------------------------ SimpleITK conversion
    def to_sitk(self) -> sitk.Image:
        image = sitk.GetImageFromArray(self.array, isVector=self.array.ndim == 4)
        return self.geometry.apply_to(image)

    @classmethod
    def from_sitk(cls, image: sitk.Image, channel_names: list[str] | None = None) -> Volume:
        geometry = Geometry.from_sitk(image)
        array = sitk.GetArrayFromImage(image)
        if image.GetDimension() == 2:
            array = array[None]
        if image.GetNumberOfComponentsPerPixel() == 1 and array.ndim == 4:
            array = array[..., 0]
        return cls(array, geometry, channel_names)


def _check_extension(path: Path) -> None:
    name = path.name.lower()
    if not name.endswith(SUPPORTED_EXTENSIONS):
        raise ValueError(
            f"Unsupported file type for '{path}'. Use one of {', '.join(SUPPORTED_EXTENSIONS)} "
            f"(NIfTI, NRRD or MetaImage)."
        )


def read_volume(path: str | os.PathLike | Sequence[str | os.PathLike],
                channel_names: list[str] | None = None) -> Volume:
    """Read a NIfTI/NRRD/MHA file with SimpleITK, geometry preserved exactly.

    ``path`` may be a list of files: co-registered images of one case, stacked as channels
    (they must share one voxel grid).
    """
    if isinstance(path, (list, tuple)):
        volumes = [read_volume(p) for p in path]
        if not volumes:
            raise ValueError("read_volume got an empty list of paths.")
        for p, v in zip(path[1:], volumes[1:]):
            check_same_geometry(volumes[0].geometry, v.geometry, f"channel '{path[0]}'", f"channel '{p}'")
        arrays = [v.array if v.array.ndim == 4 else v.array[..., None] for v in volumes]
        names = channel_names or [Path(p).name.split(".")[0] for p in path]
        return Volume(np.concatenate(arrays, axis=-1), volumes[0].geometry, names)
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Image file '{path}' does not exist. Check the path (relative paths are "
                                f"resolved from '{Path.cwd()}').")
    _check_extension(path)
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise ValueError(f"Could not read '{path}' as an image: {first}") from None
    return Volume.from_sitk(image, channel_names)


def write_volume(volume: Volume, path: str | os.PathLike, compress: bool = True,
                 overwrite: bool = True) -> Path:
    """Write a volume (NIfTI/NRRD/MHA chosen by extension), atomically (temp file + rename)."""
    path = Path(path)
    _check_extension(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"'{path}' exists; pass overwrite=True or choose another output path.")
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes[-2:]) if path.name.lower().endswith(".nii.gz") else path.suffix
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{suffix}")
    try:
        sitk.WriteImage(volume.to_sitk(), str(tmp), compress)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def resample_to(volume: Volume, target: Geometry, interpolator: str = "linear", default_value: float = 0.0
                ) -> Volume:
    """Resample ``volume`` onto ``target``'s grid ('linear', 'nearest' or 'bspline')."""
    interpolators = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}
    if interpolator not in interpolators:
        raise ValueError(f"interpolator must be one of {sorted(interpolators)}, got '{interpolator}'.")
    reference = target.apply_to(sitk.Image([target.shape[2], target.shape[1], target.shape[0]], sitk.sitkUInt8))
    image = volume.to_sitk()
    out = sitk.Resample(image, reference, sitk.Transform(), interpolators[interpolator], default_value,
                        image.GetPixelID())
    return Volume.from_sitk(out, volume.channel_names)


def resample_to_spacing(volume: Volume, spacing_xyz: Sequence[float], interpolator: str = "linear") -> Volume:
    """Resample onto a grid with the same origin/direction/extent and the given spacing (x, y, z)."""
    g = volume.geometry
    size_xyz = [max(1, int(round(n * s / t))) for n, s, t in zip(g.shape[::-1], g.spacing, spacing_xyz)]
    target = Geometry((size_xyz[2], size_xyz[1], size_xyz[0]), tuple(spacing_xyz), g.origin, g.direction)
    return resample_to(volume, target, interpolator)
