"""Weak annotations of one volume, validated once, on construction.

Class ids: 0 is background, 1..K are the foreground classes.  Voxel labels use
:data:`UNKNOWN` (-1) for "not annotated"; files may declare another value (ACDC uses 4)
which is converted on reading.

Every part is optional:

* ``labels``: voxel labels (z, y, x) — scribbles, rasterised points, or complete masks;
* ``complete_classes``: classes whose mask in ``labels`` is complete in this volume (partial
  labels, as in SMILE); when every foreground class is complete, the volume is fully annotated;
* ``boxes``: :class:`Box` es (3D, or per slice = one slice thick), tight around the object;
* ``tags``: class present (True) / absent (False) in the volume; ``slice_tags`` the same per
  slice along the first array axis (z);
* ``size_ranges_ml``: (min, max) size of a class in mL;
* ``centroid_ranges_mm``: (low (x, y, z), high (x, y, z)) LPS box in which the class centroid lies.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from WeakSegLib.data.volume import Geometry, Volume, check_same_geometry, read_label_map
from WeakSegLib.utils import describe_value, is_integer, is_number, read_json_object

logger = logging.getLogger(__name__)

UNKNOWN = -1
BACKGROUND = 0


class AnnotationError(ValueError):
    """An annotation is inconsistent; the message says what is wrong and how to fix it."""


@dataclass(frozen=True)
class Box:
    """A box around class ``class_id`` in voxel indices (z, y, x), half-open ``[start, stop)``."""

    class_id: int
    start: tuple[int, int, int]
    stop: tuple[int, int, int]

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_id", int(self.class_id))
        object.__setattr__(self, "start", tuple(int(v) for v in self.start))
        object.__setattr__(self, "stop", tuple(int(v) for v in self.stop))
        if len(self.start) != 3 or len(self.stop) != 3:
            raise AnnotationError(f"A box needs start and stop with 3 indices (z, y, x), got {self}.")
        if any(b <= a for a, b in zip(self.start, self.stop)):
            raise AnnotationError(f"Box for class {self.class_id} is empty: start {self.start} must be "
                                  f"strictly below stop {self.stop} on every axis (half-open indices).")

    def slices(self) -> tuple[slice, slice, slice]:
        return tuple(slice(a, b) for a, b in zip(self.start, self.stop))  # type: ignore[return-value]

    @property
    def is_per_slice(self) -> bool:
        return self.stop[0] - self.start[0] == 1

    @classmethod
    def from_physical(cls, class_id: int, corner_a_lps: Sequence[float], corner_b_lps: Sequence[float],
                      geometry: Geometry) -> Box:
        """Box from two opposite LPS corners (mm); voxels whose centres lie inside are included."""
        corners = np.array([[a, b, c] for a in (corner_a_lps[0], corner_b_lps[0])
                            for b in (corner_a_lps[1], corner_b_lps[1])
                            for c in (corner_a_lps[2], corner_b_lps[2])], dtype=float)
        idx = geometry.physical_to_index(corners)
        lo = np.ceil(idx.min(axis=0) - 1e-6).astype(int)
        hi = np.floor(idx.max(axis=0) + 1e-6).astype(int) + 1
        return cls(class_id, tuple(lo), tuple(hi))

    def to_dict(self) -> dict:
        return {"class": self.class_id, "start_zyx": list(self.start), "stop_zyx": list(self.stop)}


def _to_int_map(mapping: Mapping | None) -> dict:
    return {int(k): v for k, v in (mapping or {}).items()}


@dataclass
class WeakAnnotation:
    """Weak annotation of one volume (see the module docstring for each part)."""

    geometry: Geometry
    num_classes: int
    labels: np.ndarray | None = None
    complete_classes: frozenset[int] = field(default_factory=frozenset)
    boxes: list[Box] = field(default_factory=list)
    tags: dict[int, bool] = field(default_factory=dict)
    slice_tags: dict[int, dict[int, bool]] = field(default_factory=dict)
    size_ranges_ml: dict[int, tuple[float, float]] = field(default_factory=dict)
    centroid_ranges_mm: dict[int, tuple[tuple[float, float, float], tuple[float, float, float]]] = field(
        default_factory=dict)
    allow_empty: bool = False

    def __post_init__(self) -> None:
        if int(self.num_classes) < 2:
            raise AnnotationError(f"num_classes counts background plus at least one class (>= 2), "
                                  f"got {self.num_classes}.")
        self.num_classes = int(self.num_classes)
        self.complete_classes = frozenset(int(c) for c in self.complete_classes)
        self.boxes = list(self.boxes)
        self.tags = {int(k): bool(v) for k, v in self.tags.items()}
        self.slice_tags = {int(c): {int(s): bool(p) for s, p in d.items()} for c, d in self.slice_tags.items()}
        self.size_ranges_ml = {int(k): (float(v[0]), float(v[1])) for k, v in self.size_ranges_ml.items()}
        self.centroid_ranges_mm = {
            int(k): (tuple(float(x) for x in v[0]), tuple(float(x) for x in v[1]))
            for k, v in self.centroid_ranges_mm.items()}
        if self.labels is not None:
            labels = np.asarray(self.labels)
            if not np.issubdtype(labels.dtype, np.integer):
                if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
                    raise AnnotationError("Label maps must hold integer class ids (0 = background, -1 = "
                                          "unannotated); got non-integer values. Is it an image or a probability "
                                          "map?")
            if labels.size and (labels.min() < np.iinfo(np.int16).min or labels.max() > np.iinfo(np.int16).max):
                raise AnnotationError(f"Unknown class id(s) {sorted({int(labels.min()), int(labels.max())})} in the "
                                      f"voxel labels; valid ids are 0..{int(self.num_classes) - 1} and {UNKNOWN} "
                                      f"(unannotated).")
            self.labels = labels.astype(np.int16, copy=True)
        self.validate()

    # ------------------------------------------------------------------ validation
    def _check_class(self, c: int, what: str) -> None:
        if not 0 <= c < self.num_classes:
            raise AnnotationError(
                f"{what} refers to class id {c}, but the dataset has classes 0..{self.num_classes - 1} "
                f"(0 = background). Fix the class id or add the class to the dataset's class list.")

    def validate(self) -> None:
        g = self.geometry
        if self.labels is not None:
            if tuple(self.labels.shape) != g.shape:
                raise AnnotationError(f"Label array shape {self.labels.shape} differs from the annotation "
                                      f"geometry shape {g.shape} (z, y, x).")
            values = np.unique(self.labels)
            bad = [int(v) for v in values if v != UNKNOWN and not 0 <= v < self.num_classes]
            if bad:
                raise AnnotationError(
                    f"Unknown class id(s) {bad} in the voxel labels; valid ids are 0..{self.num_classes - 1} "
                    f"and {UNKNOWN} (unannotated). If your files mark unannotated voxels with another value "
                    f"(ACDC uses 4), declare it with unannotated_value=... .")
        for c in self.complete_classes:
            self._check_class(c, "complete_classes")
        for box in self.boxes:
            self._check_class(box.class_id, f"A box ({box})")
            if box.class_id == BACKGROUND:
                raise AnnotationError("Boxes are drawn around foreground classes, not background (class 0).")
            if any(a < 0 for a in box.start) or any(b > n for b, n in zip(box.stop, g.shape)):
                raise AnnotationError(
                    f"Box for class {box.class_id} with start {box.start} / stop {box.stop} (z, y, x) lies "
                    f"outside the image of shape {g.shape}. Move or shrink the box so it fits in the image.")
        for c in self.tags:
            self._check_class(c, "A tag")
        for c, per_slice in self.slice_tags.items():
            self._check_class(c, "A slice tag")
            for s in per_slice:
                if not 0 <= s < g.shape[0]:
                    raise AnnotationError(f"Slice tag for class {c} names slice {s}, but the volume has "
                                          f"slices 0..{g.shape[0] - 1}.")
        for c, (lo, hi) in self.size_ranges_ml.items():
            self._check_class(c, "A size range")
            if not (np.isfinite(lo) and (np.isfinite(hi) or hi == float("inf"))):
                raise AnnotationError(f"Size range for class {c} must be finite numbers in mL, got ({lo}, {hi}).")
            if lo < 0 or hi < 0:
                raise AnnotationError(f"Size range for class {c} is negative ({lo}, {hi}) mL; sizes are >= 0.")
            if lo > hi:
                raise AnnotationError(f"Size range for class {c} has min {lo} mL > max {hi} mL; swap them.")
            image_ml = float(np.prod(g.shape)) * g.voxel_volume_ml
            if lo > image_ml * (1 + 1e-6):
                raise AnnotationError(
                    f"Size range for class {c} starts at {lo:g} mL, more than the whole image holds ({image_ml:.4g} "
                    f"mL = {np.prod(g.shape)} voxels of {g.voxel_volume_ml * 1000:.4g} mm^3). Sizes are in mL (1 mL "
                    f"= 1000 mm^3): check the unit of the range and the spacing of the image.")
        for c, (lo, hi) in self.centroid_ranges_mm.items():
            self._check_class(c, "A centroid range")
            if len(lo) != 3 or len(hi) != 3 or any(a > b for a, b in zip(lo, hi)):
                raise AnnotationError(f"Centroid range for class {c} must be (low xyz, high xyz) with low <= "
                                      f"high on each axis, got {lo} / {hi}.")
            corners = np.array([[i, j, k] for i in (-0.5, g.shape[0] - 0.5) for j in (-0.5, g.shape[1] - 0.5)
                                for k in (-0.5, g.shape[2] - 0.5)])
            points = g.index_to_physical(corners)
            extent_lo, extent_hi = points.min(axis=0), points.max(axis=0)
            if any(h < a or l_ > b for l_, h, a, b in zip(lo, hi, extent_lo, extent_hi)):
                raise AnnotationError(
                    f"Centroid range for class {c} ({lo} .. {hi} mm, LPS x y z) lies outside the image, which spans "
                    f"{tuple(np.round(extent_lo, 1))} .. {tuple(np.round(extent_hi, 1))} mm. Give the range in the "
                    f"image's physical (LPS) coordinates.")
        # Consistency between parts: a class tagged absent cannot be drawn.
        drawn = self.drawn_classes()
        for c, present in self.tags.items():
            if present:
                continue
            if c in drawn:
                raise AnnotationError(
                    f"Class {c} is tagged absent but has annotated voxels (scribbles, points or mask). "
                    f"Either remove its voxels or tag it present.")
            if any(b.class_id == c for b in self.boxes):
                raise AnnotationError(f"Class {c} is tagged absent but has a box. Remove the box or the tag.")
            lo = self.size_ranges_ml.get(c, (0.0, 0.0))[0]
            if lo > 0:
                raise AnnotationError(f"Class {c} is tagged absent but its size range starts at {lo} mL > 0.")
        if self.labels is not None:
            for c, per_slice in self.slice_tags.items():
                for s, present in per_slice.items():
                    if not present and np.any(self.labels[s] == c):
                        raise AnnotationError(f"Class {c} is tagged absent on slice {s} but is annotated there.")
        if not self.allow_empty and not self.has_information():
            raise AnnotationError(
                "The annotation holds no information: no annotated voxel, box, tag or size range. Draw at "
                "least a few scribbles (or give boxes/tags/sizes), or pass the volume as unlabelled data.")

    # ------------------------------------------------------------------ queries
    def has_information(self) -> bool:
        return bool(self.num_annotated_voxels() or self.complete_classes or self.boxes or self.tags
                    or self.slice_tags or self.size_ranges_ml or self.centroid_ranges_mm)

    def num_annotated_voxels(self) -> int:
        return 0 if self.labels is None else int(np.count_nonzero(self.labels != UNKNOWN))

    def annotated_fraction(self) -> float:
        return self.num_annotated_voxels() / float(np.prod(self.geometry.shape))

    def drawn_classes(self) -> set[int]:
        if self.labels is None:
            return set()
        return {int(v) for v in np.unique(self.labels) if v != UNKNOWN}

    @property
    def is_complete(self) -> bool:
        """True when every foreground class mask is complete (a full ground-truth-like annotation)."""
        return self.labels is not None and set(range(1, self.num_classes)) <= set(self.complete_classes)

    def present_classes(self) -> set[int]:
        """Classes known to be present: tagged present, drawn, boxed or with a positive minimum size."""
        present = {c for c, p in self.tags.items() if p}
        present |= self.drawn_classes() - {BACKGROUND}
        present |= {b.class_id for b in self.boxes}
        present |= {c for c, (lo, _) in self.size_ranges_ml.items() if lo > 0}
        return present

    def size_range_voxels(self, class_id: int) -> tuple[float, float] | None:
        rng = self.size_ranges_ml.get(class_id)
        if rng is None:
            return None
        v = self.geometry.voxel_volume_ml
        return (rng[0] / v, rng[1] / v)

    def label_volume(self) -> Volume:
        """Voxel labels as an int16 Volume (UNKNOWN where unannotated)."""
        labels = self.labels if self.labels is not None else np.full(self.geometry.shape, UNKNOWN, np.int16)
        return Volume(labels, self.geometry)

    def check_matches(self, image: Volume) -> None:
        check_same_geometry(image.geometry, self.geometry, "image", "annotation")

    # ------------------------------------------------------------------ construction helpers
    @classmethod
    def from_label_array(cls, labels: np.ndarray, geometry: Geometry, num_classes: int,
                         unannotated_value: int | None = UNKNOWN, **parts) -> WeakAnnotation:
        labels = np.asarray(labels)
        if unannotated_value is not None and unannotated_value != UNKNOWN:
            labels = np.where(labels == unannotated_value, UNKNOWN, labels)
        return cls(geometry=geometry, num_classes=num_classes, labels=labels, **parts)

    @classmethod
    def from_label_map(cls, path: str | os.PathLike, num_classes: int, unannotated_value: int | None = UNKNOWN,
                       **parts) -> WeakAnnotation:
        """Read a label-map file; ``unannotated_value`` marks voxels nobody annotated (ACDC: 4)."""
        try:
            vol = read_label_map(path, "annotation")
        except ValueError as exc:
            raise AnnotationError(str(exc)) from None
        return cls.from_label_array(vol.array, vol.geometry, num_classes, unannotated_value, **parts)

    @classmethod
    def from_ground_truth(cls, gt: np.ndarray, geometry: Geometry, num_classes: int) -> WeakAnnotation:
        """A complete annotation (every class mask known): the fully supervised case."""
        return cls(geometry=geometry, num_classes=num_classes, labels=np.asarray(gt).astype(np.int16),
                   complete_classes=frozenset(range(1, num_classes)))

    def with_sidecar(self, sidecar: str | os.PathLike | Mapping) -> WeakAnnotation:
        """A new annotation adding the parts of a JSON sidecar (see :func:`parse_sidecar`)."""
        parts = parse_sidecar(sidecar, self.geometry, self.num_classes)
        labels = None if self.labels is None else self.labels.copy()
        points = parts.pop("points", [])
        if points:
            labels = rasterise_points(points, self.geometry, labels)
        return WeakAnnotation(
            geometry=self.geometry, num_classes=self.num_classes, labels=labels,
            complete_classes=self.complete_classes | frozenset(parts.get("complete_classes", ())),
            boxes=self.boxes + parts.get("boxes", []),
            tags={**self.tags, **parts.get("tags", {})},
            slice_tags={**self.slice_tags, **parts.get("slice_tags", {})},
            size_ranges_ml={**self.size_ranges_ml, **parts.get("size_ranges_ml", {})},
            centroid_ranges_mm={**self.centroid_ranges_mm, **parts.get("centroid_ranges_mm", {})},
            allow_empty=self.allow_empty,
        )

    @classmethod
    def from_sidecar(cls, sidecar: str | os.PathLike | Mapping, geometry: Geometry, num_classes: int,
                     labels: np.ndarray | None = None) -> WeakAnnotation:
        base = cls(geometry=geometry, num_classes=num_classes, labels=labels, allow_empty=True)
        out = base.with_sidecar(sidecar)
        out.allow_empty = False
        out.validate()
        return out

    # ------------------------------------------------------------------ serialisation
    def sidecar_dict(self) -> dict:
        """The non-voxel parts as a JSON-able sidecar (boxes as LPS corners, mm)."""
        g = self.geometry
        boxes = []
        for b in self.boxes:
            lo = g.index_to_physical(np.array(b.start, float))
            hi = g.index_to_physical(np.array(b.stop, float) - 1.0)
            boxes.append({"class": b.class_id, "corner_a_lps": lo.round(6).tolist(),
                          "corner_b_lps": hi.round(6).tolist()})
        return {
            "complete_classes": sorted(self.complete_classes),
            "boxes": boxes,
            "tags": {str(c): p for c, p in self.tags.items()},
            "slice_tags": {str(c): {str(s): p for s, p in d.items()} for c, d in self.slice_tags.items()},
            "size_ranges_ml": {str(c): list(r) for c, r in self.size_ranges_ml.items()},
            "centroid_ranges_mm": {str(c): [list(r[0]), list(r[1])] for c, r in self.centroid_ranges_mm.items()},
        }

    def save(self, labels_path: str | os.PathLike, sidecar_path: str | os.PathLike | None = None) -> None:
        """Write labels (UNKNOWN kept as -1) and, if given, the JSON sidecar."""
        from WeakSegLib.data.volume import write_volume
        from WeakSegLib.utils import atomic_write_json

        write_volume(self.label_volume(), labels_path)
        if sidecar_path is not None:
            atomic_write_json(sidecar_path, self.sidecar_dict())


def rasterise_points(points: Iterable[tuple[int, Sequence[float], float]], geometry: Geometry,
                     labels: np.ndarray | None = None) -> np.ndarray:
    """Paint balls of radius r (mm) around LPS points: ``[(class_id, (x, y, z) mm, radius_mm), ...]``.

    Voxels whose centre is within the radius get the class; a radius of 0 marks the nearest voxel.
    Returns a new int16 label array (``labels`` is not modified).
    """
    out = np.full(geometry.shape, UNKNOWN, np.int16) if labels is None else np.array(labels, np.int16)
    spacing = np.asarray(geometry.spacing_zyx)
    for class_id, point, radius in points:
        centre = geometry.physical_to_index(np.asarray(point, float))
        if np.any(centre < -0.5) or np.any(centre > np.asarray(geometry.shape) - 0.5):
            raise AnnotationError(f"Point {tuple(point)} (LPS mm) for class {class_id} lies outside the image "
                                  f"({geometry.describe()}).")
        r_vox = np.ceil(radius / spacing).astype(int)
        c_int = np.round(centre).astype(int)
        lo = np.maximum(c_int - r_vox, 0)
        hi = np.minimum(c_int + r_vox + 1, geometry.shape)
        grid = np.stack(np.meshgrid(*[np.arange(a, b) for a, b in zip(lo, hi)], indexing="ij"), -1)
        dist = np.sqrt((((grid - centre) * spacing) ** 2).sum(-1))
        ball = dist <= max(radius, 0.0)
        if radius <= 0 or not ball.any():
            ball = np.zeros(ball.shape, bool)
            ball[tuple(np.clip(c_int - lo, 0, np.asarray(ball.shape) - 1))] = True
        region = out[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]]
        region[ball] = class_id
    return out


def _load_json(source: str | os.PathLike | Mapping) -> tuple[dict, str]:
    """(the sidecar's content, its name for messages)."""
    if isinstance(source, Mapping):
        return dict(source), "The annotation sidecar"
    name = f"Annotation sidecar '{source}'"
    try:
        return read_json_object(source, name), name
    except ValueError as exc:
        raise AnnotationError(str(exc)) from None


def _class_id(key, where: str) -> int:
    """A class id from a sidecar key ("1") or value (1)."""
    if is_integer(key):
        return int(key)
    if isinstance(key, str) and key.strip().lstrip("-").isdigit():
        return int(key)
    raise AnnotationError(f"{where} must be a class id (an integer such as 1), got {describe_value(key)}.")


def _mapping(data: dict, key: str, name: str) -> Mapping:
    value = data.get(key, {})
    if not isinstance(value, Mapping):
        raise AnnotationError(f"{name}: '{key}' must be an object {{\"<class id>\": ...}}, got "
                              f"{describe_value(value)}.")
    return value


def _list(data: Mapping, key: str, name: str, default=()) -> list:
    value = data.get(key, list(default))
    if not isinstance(value, list):
        raise AnnotationError(f"{name}: '{key}' must be a list, got {describe_value(value)}.")
    return value


def _bool(value, where: str) -> bool:
    if not isinstance(value, bool):
        raise AnnotationError(f"{where} must be true or false, got {describe_value(value)}.")
    return value


def _numbers(value, n: int, where: str) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != n or not all(is_number(v) for v in value):
        raise AnnotationError(f"{where} must be a list of {n} finite numbers, got {describe_value(value)}"
                              + (f" {list(value)}" if isinstance(value, (list, tuple)) else "") + ".")
    return tuple(float(v) for v in value)


def parse_sidecar(source: str | os.PathLike | Mapping, geometry: Geometry, num_classes: int) -> dict:
    """Parse a JSON sidecar with physical (LPS mm) coordinates into annotation parts.

    Format (every key optional)::

        {"tags": {"1": true, "2": false},
         "slice_tags": {"1": {"3": false}},
         "size_ranges_ml": {"1": [60, 250]},
         "complete_classes": [2],
         "boxes": [{"class": 1, "corner_a_lps": [x, y, z], "corner_b_lps": [x, y, z]}],
         "points": [{"class": 1, "lps": [x, y, z], "radius_mm": 2.0}],
         "centroid_ranges_mm": {"1": [[x0, y0, z0], [x1, y1, z1]]}}

    Every value is type-checked: an error names the file, the key and what was expected.
    """
    data, name = _load_json(source)
    known = {"tags", "slice_tags", "size_ranges_ml", "complete_classes", "boxes", "points", "centroid_ranges_mm"}
    unknown = set(data) - known
    if unknown:
        raise AnnotationError(f"{name}: unknown key(s) {sorted(unknown)}; known keys are {sorted(known)}.")
    parts: dict = {}
    parts["tags"] = {_class_id(k, f"{name}: a key of 'tags'"): _bool(v, f"{name}: tags['{k}']")
                     for k, v in _mapping(data, "tags", name).items()}
    slice_tags = {}
    for c, per_slice in _mapping(data, "slice_tags", name).items():
        where = f"{name}: slice_tags['{c}']"
        if not isinstance(per_slice, Mapping):
            raise AnnotationError(f"{where} must be an object {{\"<slice>\": true|false}}, got "
                                  f"{describe_value(per_slice)}.")
        slice_tags[_class_id(c, f"{name}: a key of 'slice_tags'")] = {
            _class_id(z, f"{where}: a slice index"): _bool(v, f"{where}['{z}']") for z, v in per_slice.items()}
    parts["slice_tags"] = slice_tags
    parts["size_ranges_ml"] = {_class_id(k, f"{name}: a key of 'size_ranges_ml'"):
                               _numbers(v, 2, f"{name}: size_ranges_ml['{k}'] ([min, max] in mL)")
                               for k, v in _mapping(data, "size_ranges_ml", name).items()}
    parts["complete_classes"] = [_class_id(c, f"{name}: an entry of 'complete_classes'")
                                 for c in _list(data, "complete_classes", name)]
    centroids = {}
    for k, v in _mapping(data, "centroid_ranges_mm", name).items():
        where = f"{name}: centroid_ranges_mm['{k}'] ([[x0, y0, z0], [x1, y1, z1]] in mm)"
        if not isinstance(v, list) or len(v) != 2:
            raise AnnotationError(f"{where} must be a list of 2 points, got {describe_value(v)}.")
        centroids[_class_id(k, f"{name}: a key of 'centroid_ranges_mm'")] = (_numbers(v[0], 3, where),
                                                                           _numbers(v[1], 3, where))
    parts["centroid_ranges_mm"] = centroids
    boxes = []
    for i, b in enumerate(_list(data, "boxes", name)):
        where = f"{name}: boxes[{i}]"
        if not isinstance(b, Mapping) or not {"class", "corner_a_lps", "corner_b_lps"} <= set(b):
            raise AnnotationError(f"{where} must be an object with 'class', 'corner_a_lps' and 'corner_b_lps', "
                                  f"got {describe_value(b)}" + (f" with keys {sorted(b)}" if isinstance(b, Mapping)
                                                                else "") + ".")
        boxes.append(Box.from_physical(_class_id(b["class"], f"{where}.class"),
                                       _numbers(b["corner_a_lps"], 3, f"{where}.corner_a_lps"),
                                       _numbers(b["corner_b_lps"], 3, f"{where}.corner_b_lps"), geometry))
    parts["boxes"] = boxes
    points = []
    for i, pt in enumerate(_list(data, "points", name)):
        where = f"{name}: points[{i}]"
        if not isinstance(pt, Mapping) or not {"class", "lps"} <= set(pt):
            raise AnnotationError(f"{where} must be an object with 'class' and 'lps' (and optionally "
                                  f"'radius_mm'), got {describe_value(pt)}.")
        radius = pt.get("radius_mm", 0.0)
        if not is_number(radius) or radius < 0:
            raise AnnotationError(f"{where}.radius_mm must be a number >= 0, got {describe_value(radius)}.")
        points.append((_class_id(pt["class"], f"{where}.class"), _numbers(pt["lps"], 3, f"{where}.lps"),
                       float(radius)))
    parts["points"] = points
    for c, _, _ in parts["points"]:
        if not 0 <= c < num_classes:
            raise AnnotationError(f"{name}: a point refers to class id {c}; valid ids are 0..{num_classes - 1}.")
    return parts
