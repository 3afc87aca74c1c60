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

import gzip
import logging
import os
import re
import struct
import zlib
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
# A largest voxel spacing below this (mm) is almost surely metres written as millimetres.
METRES_SPACING_MM = 0.05

# WeakSeg reports what ITK's readers change or refuse in its own words (one line each); ITK's multi-line
# C++ warnings on stderr would only repeat them.
sitk.ProcessObject.SetGlobalWarningDisplay(False)


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

    def first_channel(self) -> np.ndarray:
        """The (z, y, x) array of the first channel (the whole array of a scalar image)."""
        return self.array if self.array.ndim == 3 else self.array[..., 0]

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
    (they must share one voxel grid).  A damaged file is refused, never read with zeros in place of the
    missing voxels (:func:`check_nifti_file`); a spacing the reader had to change, or one that looks like
    metres, is reported as a warning.
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
    if path.is_dir():
        raise ValueError(f"'{path}' is a folder; give an image file ({', '.join(SUPPORTED_EXTENSIONS)}).")
    _check_extension(path)
    if path.stat().st_size == 0:
        raise ValueError(f"'{path}' is empty (0 bytes); copy or export the image again.")
    header_spacing = check_nifti_file(path) if path.name.lower().endswith((".nii", ".nii.gz")) else None
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        raise ValueError(f"Could not read '{path}' as an image ({_itk_reason(exc)}): the file is damaged or "
                         f"not in the format its extension says. Copy or export it again.") from None
    volume = Volume.from_sitk(image, channel_names)
    _report_spacing(path, header_spacing, volume.geometry.spacing)
    return volume


def _itk_reason(exc: Exception) -> str:
    """The informative last line of an ITK reader error, without ITK's source locations and prefixes."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    if not lines:
        return type(exc).__name__
    reason = re.sub(r"^(\[\w+\]\s*|sitk::ERROR:\s*|ITK ERROR:\s*\w+\(0x[0-9a-f]+\):\s*)", "", lines[-1])
    if "MetaImageIO" in str(exc) and "No such file" in reason:
        reason = "the voxel data is incomplete"
    return reason[:200]


def _report_spacing(path: Path, header_spacing: tuple[float, ...] | None, spacing: tuple[float, ...]) -> None:
    fmt = ", ".join(f"{v:.6g}" for v in spacing)
    if header_spacing is not None and any(not np.isfinite(v) or v <= 0 for v in header_spacing):
        given = ", ".join(f"{v:.6g}" for v in header_spacing)
        logger.warning("'%s': the NIfTI header gives a voxel spacing of (%s); the reader used (%s) mm instead. "
                       "Check the voxel size before trusting sizes in mL and distances in mm.", path, given, fmt)
    if max(spacing) < METRES_SPACING_MM:
        logger.warning("'%s' has a voxel spacing of (%s) mm, which looks like metres: WeakSeg reads spacings "
                       "in millimetres (sizes in mL and distances in mm would be off by 1000x). Rescale the "
                       "spacing if so.", path, fmt)


def _nifti_header(head: bytes) -> tuple[str, int, int, int, list[int], list[float]] | None:
    """(byte order, datatype, bits per voxel, voxel offset, dims, pixdim) of a NIfTI-1/2 header, or None."""
    for order in ("<", ">"):
        if len(head) >= 348 and struct.unpack_from(order + "i", head, 0)[0] == 348:
            dims = list(struct.unpack_from(order + "8h", head, 40))
            datatype, bitpix = struct.unpack_from(order + "hh", head, 70)
            pixdim = list(struct.unpack_from(order + "8f", head, 76))
            offset = int(struct.unpack_from(order + "f", head, 108)[0])
            return order, datatype, bitpix, offset, dims, pixdim
        if len(head) >= 540 and struct.unpack_from(order + "i", head, 0)[0] == 540:
            datatype, bitpix = struct.unpack_from(order + "hh", head, 12)
            dims = list(struct.unpack_from(order + "8q", head, 16))
            pixdim = list(struct.unpack_from(order + "8d", head, 104))
            offset = int(struct.unpack_from(order + "q", head, 168)[0])
            return order, datatype, bitpix, offset, dims, pixdim
    return None


_NIFTI_FLOATS = {16: "f4", 64: "f8"}      # NIfTI datatype codes of float32 / float64 voxels


def _file_chunks(path: Path, compressed: bool):
    """The (decompressed) bytes of a file in chunks; ValueError when a gzip stream is cut short."""
    with open(path, "rb") as raw:
        if not compressed:
            while chunk := raw.read(1 << 20):
                yield chunk
            return
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        while chunk := raw.read(1 << 20):
            yield decompressor.decompress(chunk)
            while decompressor.eof and decompressor.unused_data:      # concatenated gzip members
                rest = decompressor.unused_data
                decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
                yield decompressor.decompress(rest)
        if not decompressor.eof:
            raise ValueError(f"'{path}' is truncated: its gzip stream ends before the end of the data (an "
                             f"interrupted copy or download?). Copy or export the file again.")


def check_nifti_file(path: str | os.PathLike) -> tuple[float, ...] | None:
    """Refuse a truncated or damaged NIfTI file (``.nii`` or ``.nii.gz``), and one with NaN voxels: the size
    of the voxel data its header describes is compared with the bytes the file holds (ITK's reader would
    fill the missing voxels with zeros, and it turns NaNs into zeros too), and a ``.nii.gz`` must be a
    complete gzip stream.  Returns the header's spatial spacing (pixdim 1..3) so that the caller can report
    what the reader changed; None when the header is not NIfTI (ITK's reader then decides)."""
    path = Path(path)
    head, total, nans = b"", 0, 0
    header = None
    dtype, carry, payload_start = None, b"", 0
    try:
        for data in _file_chunks(path, path.name.lower().endswith(".gz")):
            if header is None and len(head) < 540:
                head += data[: 540 - len(head)]
                if len(head) >= 348:
                    header = _nifti_header(head if len(head) >= 540 else head + b"\0" * (540 - len(head)))
                    if header is not None and header[1] in _NIFTI_FLOATS:
                        dtype = np.dtype(header[0] + _NIFTI_FLOATS[header[1]])
                        payload_start = max(header[3], 348)
            if dtype is not None:
                lo = max(payload_start - total, 0)
                if lo < len(data):
                    buf = carry + data[lo:]
                    usable = len(buf) - len(buf) % dtype.itemsize
                    nans += int(np.count_nonzero(~np.isfinite(np.frombuffer(buf[:usable], dtype))))
                    carry = buf[usable:]
            total += len(data)
    except (zlib.error, gzip.BadGzipFile, EOFError) as exc:
        raise ValueError(f"'{path}' is damaged: it is not a valid gzip file ({exc}). Copy or export it "
                         f"again.") from None
    if header is None:
        header = _nifti_header(head)
    if header is None:
        return None
    _, _, bitpix, offset, dims, pixdim = header
    ndim = dims[0]
    if not 1 <= ndim <= 7 or any(d < 1 for d in dims[1:ndim + 1]) or bitpix <= 0:
        raise ValueError(f"'{path}' has a damaged NIfTI header (dimensions {dims[1:max(1, min(ndim, 7)) + 1]}, "
                         f"{bitpix} bits per voxel). Export the image again.")
    expected = max(offset, 348) + int(np.prod(dims[1:ndim + 1], dtype=np.int64)) * bitpix // 8
    if total < expected:
        raise ValueError(f"'{path}' is truncated: its header describes {expected} bytes of voxels and header, "
                         f"the file holds {total} (an interrupted copy or download?). Copy or export the file "
                         f"again.")
    if nans:
        raise ValueError(f"'{path}' holds {nans} NaN/Inf voxel(s), which NIfTI readers silently turn into 0. "
                         f"Replace them (e.g. numpy.nan_to_num) and save the image again.")
    return tuple(float(v) for v in pixdim[1:min(ndim, 3) + 1])


def read_label_map(path: str | os.PathLike, what: str = "label map") -> Volume:
    """A label map: one channel of integer class ids (returned as int32).  A file with non-integer values
    (an image, a probability map, a resampled label map) is refused, never rounded."""
    volume = read_volume(path)
    if volume.num_channels != 1:
        raise ValueError(f"The {what} '{path}' has {volume.num_channels} channels; a label map has one.")
    array = volume.array
    if not np.issubdtype(array.dtype, np.integer):
        finite = np.isfinite(array)
        if not finite.all():
            raise ValueError(f"The {what} '{path}' holds {int((~finite).sum())} NaN/Inf voxel(s); a label map "
                             f"holds class ids 0, 1, 2, ...")
        fractional = array != np.round(array)
        if fractional.any():
            example = float(array[fractional].flat[0])
            raise ValueError(f"The {what} '{path}' holds non-integer values (e.g. {example:.6g}) in "
                             f"{int(fractional.sum())} voxel(s); a label map holds class ids 0, 1, 2, ... Is it "
                             f"an image, a probability map or a label map resampled with linear interpolation?")
    if array.size and (array.min() < np.iinfo(np.int32).min or array.max() > np.iinfo(np.int32).max):
        raise ValueError(f"The {what} '{path}' holds values out of the range of class ids ({array.min()} .. "
                         f"{array.max()}).")
    return volume.with_array(array.astype(np.int32))


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
