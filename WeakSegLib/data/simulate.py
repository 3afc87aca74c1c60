"""Weak annotations simulated from a ground-truth label map, for benchmarks and tests.

Every simulator takes a ground-truth label :class:`~WeakSegLib.data.volume.Volume` (integers, 0 =
background, 1..K-1 = foreground classes) and ``num_classes`` (background included) and returns a
:class:`~WeakSegLib.data.annotation.WeakAnnotation` on the same geometry.  Guarantees:

* **never contradicting the ground truth**: every annotated voxel carries its true class, boxes
  contain their objects, tags and size ranges are true (checked before returning);
* **seeded and reproducible**: ``seed`` is an ``int`` or a :class:`numpy.random.Generator`; the
  same seed gives the same annotation, another seed (almost always) a different one;
* the result passes :class:`WeakAnnotation` validation.

Kinds (see :func:`simulate` for the dispatcher):

* :func:`simulate_scribbles` — strokes along the medial axis of each object, per 2D slice, plus
  background strokes around the foreground (a few percent of the voxels at most, like ACDC's
  real scribbles, about 1%);
* :func:`simulate_points` — balls in the interior of each object (and in the background);
* :func:`simulate_boxes` — boxes per connected component (3D or per slice), optionally loosened;
* :func:`simulate_tags` / :func:`simulate_size_ranges` — image-level present/absent tags and size
  ranges in mL;
* :func:`simulate_partial_labels` — complete masks for a random subset of the classes (SMILE,
  Petit et al. 2018);
* ``"full"`` — the ground truth itself (the fully supervised upper bound).
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable

import numpy as np
from scipy import ndimage

from WeakSegLib.data.annotation import BACKGROUND, UNKNOWN, AnnotationError, Box, WeakAnnotation
from WeakSegLib.data.strokes import background_ring, object_stroke, padded
from WeakSegLib.data.volume import Volume, check_same_geometry

logger = logging.getLogger(__name__)

Seed = int | np.random.Generator

KINDS = ("scribbles", "points", "boxes", "tags", "sizes", "tags+sizes", "partial", "full")

_CENTRE_ONLY = np.zeros((1, 3), int)


# ---------------------------------------------------------------------------------------- helpers
def _rng(seed: Seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, (bool, float)) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or a numpy.random.Generator, got {type(seed).__name__}.")
    return np.random.default_rng(int(seed))


def _check_gt(gt: Volume, num_classes: int) -> np.ndarray:
    """The ground-truth array as int16 (z, y, x), after checking its values against ``num_classes``."""
    if not isinstance(gt, Volume):
        raise TypeError(f"gt must be a WeakSegLib Volume (label array with its geometry), got "
                        f"{type(gt).__name__}. Wrap an array with Volume(array, geometry).")
    if gt.num_channels != 1:
        raise ValueError(f"The ground truth must be a single-channel label map, got {gt.num_channels} "
                         f"channels.")
    if int(num_classes) < 2:
        raise ValueError(f"num_classes counts background plus at least one class (>= 2), got {num_classes}.")
    arr = gt.array
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError("The ground truth must hold integer class ids; got non-integer values.")
    values = np.unique(arr)
    bad = [int(v) for v in values if not 0 <= v < num_classes]
    if bad:
        raise ValueError(f"The ground truth holds class id(s) {bad} outside 0..{num_classes - 1}. Pass the "
                         f"right num_classes (background included) or relabel the ground truth.")
    return arr.astype(np.int16)


def _check_fraction(value: float, name: str, low_open: bool = False) -> float:
    value = float(value)
    ok = (0.0 < value <= 1.0) if low_open else (0.0 <= value <= 1.0)
    if not ok:
        interval = "(0, 1]" if low_open else "[0, 1]"
        raise ValueError(f"{name} must lie in {interval}, got {value}.")
    return value


def _check_axis(axis: int) -> int:
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0 (z), 1 (y) or 2 (x) of the (z, y, x) array, got {axis}.")
    return int(axis)


def _assert_consistent(labels: np.ndarray, gt: np.ndarray) -> None:
    """Internal guard: no annotated voxel may contradict the ground truth."""
    known = labels != UNKNOWN
    wrong = int(np.count_nonzero(labels[known] != gt[known]))
    if wrong:  # a bug in a simulator, never a user error
        raise RuntimeError(f"Simulated labels contradict the ground truth on {wrong} voxel(s).")


def _choose_subset(items: list[int], fraction: float, rng: np.random.Generator) -> list[int]:
    """``round(fraction * n)`` items (at least one when ``items`` is not empty), drawn without replacement."""
    if not items:
        return []
    k = min(len(items), max(1, int(round(fraction * len(items)))))
    if k == len(items):
        return list(items)
    return sorted(int(i) for i in rng.choice(items, size=k, replace=False))


def simulate_scribbles(gt: Volume, num_classes: int, seed: Seed = 0, slice_fraction: float = 1.0,
                       axis: int = 0, background: bool = True, min_object_voxels: int = 10,
                       max_length_mm: float | None = None, width_px: int = 3,
                       background_margin_mm: float | None = None, background_width_px: int = 1
                       ) -> WeakAnnotation:
    """Scribbles drawn slice by slice along ``axis``, like an annotator in a 2D viewer.

    * **Which slices**: for each foreground class, ``round(slice_fraction * n)`` (at least one) of the
      ``n`` slices holding an object of that class are drawn at random; ``slice_fraction=1`` annotates
      every slice (as ACDC's scribbles do).
    * **Object strokes**: for each 2D connected component of at least ``min_object_voxels`` pixels
      (smaller ones are skipped), the object is eroded to the half of its distance ridge farthest
      from the boundary and the longest geodesic path in it (a double Dijkstra sweep from a random
      pixel) is drawn: a 1-pixel medial line, widened to ``width_px`` pixels (odd widths; an even
      one rounds down) only where it stays two pixels or more inside the object.  ``max_length_mm``
      keeps the centred part of the path.
    * **Background strokes** (``background=True``): on each annotated slice, an arc (50-100% of a
      turn) of a ring ``background_margin_mm`` (default: max(8 mm, 3 pixels)) around that slice's
      foreground, ``background_width_px`` pixels thick (as thin as ACDC's real background lines).
      Slices without foreground (the same ``slice_fraction`` of them) get the ring around the
      volume's foreground projected along ``axis`` (around a central ellipse of half the slice size
      when the volume has no foreground at all).

    Every stroke lies inside its true region, so the result never contradicts ``gt``.  With the
    defaults about 0.8% of the voxels of an ACDC volume are annotated (its real scribbles: 1.1%),
    2% of the default phantom; smaller fields of view give larger fractions.
    """
    labels_gt = _check_gt(gt, num_classes)
    rng = _rng(seed)
    slice_fraction = _check_fraction(slice_fraction, "slice_fraction", low_open=True)
    axis = _check_axis(axis)
    if int(width_px) < 1 or int(background_width_px) < 1:
        raise ValueError(f"width_px and background_width_px must be >= 1, got {width_px} and "
                         f"{background_width_px}.")
    if max_length_mm is not None and max_length_mm <= 0:
        raise ValueError(f"max_length_mm must be positive (or None for no limit), got {max_length_mm}.")
    width_px = int(width_px)
    spacing_zyx = gt.geometry.spacing_zyx
    spacing = tuple(s for i, s in enumerate(spacing_zyx) if i != axis)
    margin = max(8.0, 3.0 * max(spacing)) if background_margin_mm is None else float(background_margin_mm)
    if margin <= 0:
        raise ValueError(f"background_margin_mm must be positive, got {background_margin_mm}.")

    moved = np.moveaxis(labels_gt, axis, 0)
    out = np.full(moved.shape, UNKNOWN, np.int16)
    n_slices = moved.shape[0]
    # Slices chosen per class (only slices where the class has an object big enough to scribble).
    chosen: dict[int, list[int]] = {}
    component_cache: dict[tuple[int, int], tuple[np.ndarray, list]] = {}
    for c in range(1, num_classes):
        candidates = []
        for s in range(n_slices):
            mask = moved[s] == c
            if np.count_nonzero(mask) < min_object_voxels:
                continue
            lab, n = ndimage.label(mask)
            sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
            if np.any(sizes >= min_object_voxels):
                component_cache[(c, s)] = (lab, [i + 1 for i in range(n) if sizes[i] >= min_object_voxels])
                candidates.append(s)
        chosen[c] = _choose_subset(candidates, slice_fraction, rng)
    for c in range(1, num_classes):
        for s in chosen[c]:
            lab, ids = component_cache[(c, s)]
            objects = ndimage.find_objects(lab)
            for i in ids:
                sl = objects[i - 1]
                crop = padded(lab[sl] == i)
                stroke = object_stroke(crop, spacing, rng, width_px, max_length_mm)[1:-1, 1:-1]
                region = out[s][sl]
                region[stroke] = c
    if background:
        fg_slices = [s for s in range(n_slices) if np.any(moved[s] > 0)]
        empty = sorted(set(range(n_slices)) - set(fg_slices))
        annotated = sorted({s for ss in chosen.values() for s in ss})
        projection = np.any(moved > 0, axis=0)
        if not projection.any():  # no foreground at all: ring around a central ellipse
            h, w = projection.shape
            yy, xx = np.ogrid[:h, :w]
            projection = (((yy - (h - 1) / 2) / max(1.0, h / 4)) ** 2
                          + ((xx - (w - 1) / 2) / max(1.0, w / 4)) ** 2) <= 1.0
        for s in annotated + _choose_subset(empty, slice_fraction, rng):
            fg = moved[s] > 0
            reference = fg if fg.any() else projection
            ring = background_ring(reference, moved[s] == BACKGROUND, spacing, margin,
                                    int(background_width_px), rng)
            out[s][ring] = BACKGROUND
    labels = np.ascontiguousarray(np.moveaxis(out, 0, axis))
    _assert_consistent(labels, labels_gt)
    annotation = WeakAnnotation(gt.geometry, num_classes, labels, allow_empty=True)
    logger.debug("Simulated scribbles: %.3f%% of the voxels annotated.",
                 100 * annotation.annotated_fraction())
    return _finish(annotation, "scribbles")


def _finish(annotation: WeakAnnotation, kind: str) -> WeakAnnotation:
    """Re-validate without ``allow_empty``: a simulated annotation must hold information."""
    annotation.allow_empty = False
    try:
        annotation.validate()
    except AnnotationError as exc:
        raise AnnotationError(f"The simulated {kind} hold no information for this volume (is the ground "
                              f"truth empty, or are all objects smaller than the minimum size?): {exc}"
                              ) from None
    return annotation


# ---------------------------------------------------------------------------------------- points
def _ball_offsets(radius_mm: float, spacing_zyx: tuple[float, float, float]) -> np.ndarray:
    """Integer (z, y, x) offsets of the voxels whose centres lie within ``radius_mm`` of the centre."""
    spacing = np.asarray(spacing_zyx, float)
    r = np.floor(max(radius_mm, 0.0) / spacing + 1e-9).astype(int)
    grid = np.stack(np.meshgrid(*[np.arange(-k, k + 1) for k in r], indexing="ij"), -1).reshape(-1, 3)
    inside = np.sqrt(((grid * spacing) ** 2).sum(-1)) <= radius_mm + 1e-9
    return grid[inside]


def _paint_ball(labels: np.ndarray, gt: np.ndarray, centre: np.ndarray, offsets: np.ndarray, class_id: int
                ) -> bool:
    """Paint the ball if every voxel of it (inside the image) has class ``class_id`` in ``gt``."""
    voxels = centre + offsets
    inside = np.all((voxels >= 0) & (voxels < np.asarray(gt.shape)), axis=1)
    voxels = voxels[inside]
    idx = tuple(voxels.T)
    if np.any(gt[idx] != class_id):
        return False
    labels[idx] = class_id
    return True


def simulate_points(gt: Volume, num_classes: int, n_per_object: int = 1, radius_mm: float = 0.0,
                    seed: Seed = 0, background_points: int = 1, per_slice: bool = False,
                    background_per_slice: bool = False) -> WeakAnnotation:
    """Clicked points, rasterised as balls of ``radius_mm`` (voxel centres within the radius).

    For each 3D connected component of each foreground class (with ``per_slice``: each 2D component
    of each z slice, as clicked on the slices of a 2D dataset), ``n_per_object`` distinct centres are
    drawn in its interior: voxels at least half the component's maximal distance-to-boundary deep
    (the "max distance transform region") whose whole ball lies inside the component.  An object too
    thin for the ball gets one point at its deepest voxel with the radius shrunk to fit (logged).
    ``background_points`` balls are drawn in the background at least ``radius_mm`` plus two voxels
    (largest spacing) away from any foreground voxel: per volume, or with ``background_per_slice`` on
    each z slice that holds foreground (in-plane distance, as a user clicking the structures of a slice
    also clicks its background).  Points never contradict ``gt``.
    """
    labels_gt = _check_gt(gt, num_classes)
    rng = _rng(seed)
    if int(n_per_object) < 1:
        raise ValueError(f"n_per_object must be >= 1, got {n_per_object}.")
    if radius_mm < 0 or int(background_points) < 0:
        raise ValueError(f"radius_mm and background_points must be >= 0, got {radius_mm} and "
                         f"{background_points}.")
    spacing = gt.geometry.spacing_zyx
    offsets = _ball_offsets(radius_mm, spacing)
    labels = np.full(labels_gt.shape, UNKNOWN, np.int16)
    in_plane = np.zeros((3, 3, 3), bool)
    in_plane[1] = ndimage.generate_binary_structure(2, 1)
    for c in range(1, num_classes):
        lab, n = ndimage.label(labels_gt == c, structure=in_plane if per_slice else None)
        for i, sl in enumerate(ndimage.find_objects(lab), start=1):
            crop = padded(lab[sl] == i)
            dt = ndimage.distance_transform_edt(crop, sampling=spacing)[1:-1, 1:-1, 1:-1]
            dt_max = float(dt.max())
            corner = np.array([s.start for s in sl])
            candidates = np.argwhere((dt > radius_mm) & (dt >= 0.5 * dt_max))
            if len(candidates) == 0:  # only when radius_mm >= dt_max: shrink the ball to fit
                deepest = np.argwhere(dt == dt_max)
                deepest = deepest[int(rng.integers(len(deepest)))]
                shrunk = max(0.0, dt_max - 1e-6)
                logger.debug("Class %d object %d is too thin for a %.1f mm ball; radius shrunk to %.2f mm.",
                             c, i, radius_mm, shrunk)
                _paint_ball(labels, labels_gt, corner + deepest, _ball_offsets(shrunk, spacing), c)
                continue
            picks = rng.choice(len(candidates), size=min(int(n_per_object), len(candidates)), replace=False)
            for p in picks:
                if not _paint_ball(labels, labels_gt, corner + candidates[p], offsets, c):
                    _paint_ball(labels, labels_gt, corner + candidates[p], _CENTRE_ONLY, c)
    if background_points and background_per_slice:
        for z in np.flatnonzero((labels_gt != BACKGROUND).reshape(labels_gt.shape[0], -1).any(1)):
            _click_background(labels, labels_gt, rng, background_points, radius_mm, offsets, spacing, z)
    elif background_points:
        _click_background(labels, labels_gt, rng, background_points, radius_mm, offsets, spacing, None)
    _assert_consistent(labels, labels_gt)
    return _finish(WeakAnnotation(gt.geometry, num_classes, labels, allow_empty=True), "points")


def _click_background(labels: np.ndarray, labels_gt: np.ndarray, rng: np.random.Generator, count: int,
                      radius_mm: float, offsets: np.ndarray, spacing, z: int | None) -> None:
    """``count`` background balls away from the foreground: anywhere (``z`` None) or on slice ``z``."""
    if z is None:
        bg, sampling, margin = labels_gt == BACKGROUND, spacing, radius_mm + 2.0 * max(spacing)
    else:
        bg, sampling, margin = labels_gt[z] == BACKGROUND, spacing[1:], radius_mm + 2.0 * max(spacing[1:])
    distance = np.full(bg.shape, np.inf) if bg.all() else ndimage.distance_transform_edt(bg, sampling=sampling)
    candidates = np.argwhere(distance > margin)
    if len(candidates) == 0:
        candidates = np.argwhere(bg)
    if z is not None:
        candidates = np.concatenate([np.full((len(candidates), 1), z), candidates], axis=1)
    for p in rng.choice(len(candidates), size=min(int(count), len(candidates)), replace=False):
        if not _paint_ball(labels, labels_gt, candidates[p], offsets, BACKGROUND):
            _paint_ball(labels, labels_gt, candidates[p], _CENTRE_ONLY, BACKGROUND)


# ---------------------------------------------------------------------------------------- boxes
def simulate_boxes(gt: Volume, num_classes: int, jitter_mm: float = 0.0, per_slice: bool = False,
                   axis: int = 0, seed: Seed = 0) -> WeakAnnotation:
    """Boxes around each connected component of each foreground class; the annotation holds boxes only.

    3D boxes by default (one per 3D component); with ``per_slice=True`` one box per 2D component of
    each slice along ``axis``, one voxel thick on that axis (``Box.is_per_slice`` recognises slices
    along z, ``axis=0``).  With ``jitter_mm=0`` the boxes are tight; otherwise every face moves
    *outwards* by a uniform random 0..``jitter_mm`` mm (rounded to voxels, clipped to the image), so
    a loose box still contains its whole object, which the box losses assume.
    """
    labels_gt = _check_gt(gt, num_classes)
    rng = _rng(seed)
    axis = _check_axis(axis)
    if jitter_mm < 0:
        raise ValueError(f"jitter_mm must be >= 0, got {jitter_mm}.")
    shape = np.asarray(labels_gt.shape)
    spacing = np.asarray(gt.geometry.spacing_zyx)

    def jittered(start: np.ndarray, stop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if jitter_mm > 0:
            grow = np.round(rng.uniform(0.0, jitter_mm, size=(2, 3)) / spacing).astype(int)
            if per_slice:
                grow[:, axis] = 0
            start, stop = start - grow[0], stop + grow[1]
        return np.maximum(start, 0), np.minimum(stop, shape)

    boxes: list[Box] = []
    for c in range(1, num_classes):
        mask = labels_gt == c
        if not mask.any():
            continue
        if not per_slice:
            lab, _ = ndimage.label(mask)
            for sl in ndimage.find_objects(lab):
                start, stop = jittered(np.array([s.start for s in sl]), np.array([s.stop for s in sl]))
                boxes.append(Box(c, tuple(start), tuple(stop)))
            continue
        for s in range(shape[axis]):
            plane = np.take(mask, s, axis=axis)
            if not plane.any():
                continue
            lab, _ = ndimage.label(plane)
            for sl in ndimage.find_objects(lab):
                start2 = [x.start for x in sl]
                stop2 = [x.stop for x in sl]
                start2.insert(axis, s)
                stop2.insert(axis, s + 1)
                start, stop = jittered(np.array(start2), np.array(stop2))
                boxes.append(Box(c, tuple(start), tuple(stop)))
    return _finish(WeakAnnotation(gt.geometry, num_classes, boxes=boxes, allow_empty=True), "boxes")


# ---------------------------------------------------------------------------------------- tags, sizes
def simulate_tags(gt: Volume, num_classes: int, per_slice: bool = False) -> WeakAnnotation:
    """Present/absent tags of every foreground class in the volume; with ``per_slice`` also per z slice."""
    labels_gt = _check_gt(gt, num_classes)
    present = np.zeros(num_classes, bool)
    present[np.unique(labels_gt)] = True
    tags = {c: bool(present[c]) for c in range(1, num_classes)}
    slice_tags = {}
    if per_slice:
        for c in range(1, num_classes):
            per = np.any(labels_gt == c, axis=(1, 2))
            slice_tags[c] = {s: bool(p) for s, p in enumerate(per)}
    return _finish(WeakAnnotation(gt.geometry, num_classes, tags=tags, slice_tags=slice_tags), "tags")


def simulate_size_ranges(gt: Volume, num_classes: int, margin: float = 0.1) -> WeakAnnotation:
    """Size ranges (true size x (1 -/+ ``margin``), in mL) for the classes present; absent ones tagged False.

    The lower bound is clipped at 0 when ``margin`` >= 1.
    """
    labels_gt = _check_gt(gt, num_classes)
    if not margin >= 0:
        raise ValueError(f"margin is a fraction of the true size and must be >= 0, got {margin}.")
    counts = np.bincount(labels_gt.ravel().astype(np.int64), minlength=num_classes)
    voxel_ml = gt.geometry.voxel_volume_ml
    sizes, tags = {}, {}
    for c in range(1, num_classes):
        if counts[c]:
            size = counts[c] * voxel_ml
            sizes[c] = (max(0.0, size * (1.0 - margin)), size * (1.0 + margin))
        else:
            tags[c] = False
    return _finish(WeakAnnotation(gt.geometry, num_classes, tags=tags, size_ranges_ml=sizes), "sizes")


# ---------------------------------------------------------------------------------------- partial labels
def simulate_partial_labels(gt: Volume, num_classes: int, drop_rate: float = 0.5, seed: Seed = 0
                            ) -> WeakAnnotation:
    """Partial labels as in SMILE (Petit et al. 2018): some classes fully annotated, the others missing.

    Each foreground class is dropped independently with probability ``drop_rate`` (one uniform draw
    per class, classes 1..K-1 in order).  Then:

    * kept classes are listed in ``complete_classes`` and their full mask is in ``labels``;
    * voxels of dropped classes are ``UNKNOWN`` (-1);
    * background voxels are known (0) **only when every class is kept** (then the annotation equals
      the ground truth); otherwise they are ``UNKNOWN`` too, since an unannotated voxel could belong
      to a dropped class.  That a voxel is *not* of a kept class is carried by ``complete_classes``.

    Never empty: when no kept class is present in the volume, one present class (drawn with the
    same generator) is kept as well; a volume without any foreground keeps every class and so is
    annotated as all background.
    """
    labels_gt = _check_gt(gt, num_classes)
    rng = _rng(seed)
    drop_rate = _check_fraction(drop_rate, "drop_rate")
    classes = np.arange(1, num_classes)
    kept = set(int(c) for c in classes[rng.random(len(classes)) >= drop_rate])
    present = sorted(int(c) for c in np.unique(labels_gt) if c != BACKGROUND)
    if not present:
        kept = set(int(c) for c in classes)
    elif not kept & set(present):
        rescued = int(rng.choice(present))
        logger.debug("Partial labels: every present class was dropped; keeping class %d.", rescued)
        kept.add(rescued)
    labels = np.full(labels_gt.shape, UNKNOWN, np.int16)
    for c in kept:
        labels[labels_gt == c] = c
    if kept == set(int(c) for c in classes):
        labels[labels_gt == BACKGROUND] = BACKGROUND
    _assert_consistent(labels, labels_gt)
    return _finish(WeakAnnotation(gt.geometry, num_classes, labels, complete_classes=frozenset(kept),
                                  allow_empty=True), "partial labels")


def simulate_full(gt: Volume, num_classes: int) -> WeakAnnotation:
    """The ground truth as a complete annotation (the fully supervised upper bound)."""
    labels_gt = _check_gt(gt, num_classes)
    return WeakAnnotation.from_ground_truth(labels_gt, gt.geometry, num_classes)


# ---------------------------------------------------------------------------------------- combining
def _merge_dicts(name: str, dicts: list[dict]) -> dict:
    merged: dict = {}
    for d in dicts:
        for k, v in d.items():
            if k in merged and merged[k] != v:
                raise AnnotationError(f"Cannot combine annotations: {name} for class {k} differ "
                                      f"({merged[k]} vs {v}).")
            merged[k] = v
    return merged


def combine(*annotations: WeakAnnotation) -> WeakAnnotation:
    """Merge several annotations of one volume (same geometry and ``num_classes``) into one.

    Voxel labels are merged where known (a voxel labelled differently by two annotations raises
    :class:`AnnotationError`); complete classes are united; boxes concatenated (exact duplicates
    once); tags, slice tags, size and centroid ranges merged, differing values for one class raise.
    """
    if not annotations:
        raise ValueError("combine() needs at least one annotation.")
    first = annotations[0]
    for i, a in enumerate(annotations[1:], start=2):
        if not isinstance(a, WeakAnnotation):
            raise TypeError(f"combine() takes WeakAnnotations, argument {i} is a {type(a).__name__}.")
        check_same_geometry(first.geometry, a.geometry, "annotation 1", f"annotation {i}")
        if a.num_classes != first.num_classes:
            raise AnnotationError(f"Cannot combine annotations with {first.num_classes} and {a.num_classes} "
                                  f"classes (annotation 1 and {i}).")
    labels = None
    for i, a in enumerate(annotations, start=1):
        if a.labels is None:
            continue
        if labels is None:
            labels = a.labels.copy()
            continue
        both = (labels != UNKNOWN) & (a.labels != UNKNOWN)
        clash = both & (labels != a.labels)
        if clash.any():
            where = tuple(int(v) for v in np.argwhere(clash)[0])
            raise AnnotationError(f"Cannot combine annotations: {int(clash.sum())} voxel(s) are labelled "
                                  f"differently, e.g. (z, y, x)={where}: {int(labels[where])} in an earlier "
                                  f"annotation, {int(a.labels[where])} in annotation {i}.")
        labels = np.where(labels == UNKNOWN, a.labels, labels)
    boxes: list[Box] = []
    for a in annotations:
        boxes.extend(b for b in a.boxes if b not in boxes)
    slice_tags: dict[int, dict[int, bool]] = {}
    for a in annotations:
        for c, per in a.slice_tags.items():
            slice_tags[c] = _merge_dicts(f"slice tags of class {c} (slice: present)",
                                         [slice_tags.get(c, {}), per])
    return WeakAnnotation(
        geometry=first.geometry, num_classes=first.num_classes, labels=labels,
        complete_classes=frozenset().union(*(a.complete_classes for a in annotations)),
        boxes=boxes,
        tags=_merge_dicts("tags", [a.tags for a in annotations]),
        slice_tags=slice_tags,
        size_ranges_ml=_merge_dicts("size ranges (mL)", [a.size_ranges_ml for a in annotations]),
        centroid_ranges_mm=_merge_dicts("centroid ranges (mm)", [a.centroid_ranges_mm for a in annotations]),
        allow_empty=all(a.allow_empty for a in annotations),
    )


def annotated_fraction(annotation: WeakAnnotation) -> float:
    """Fraction of the voxels that carry a label (0 to 1); 0 for an annotation without voxel labels."""
    return annotation.annotated_fraction()


# ---------------------------------------------------------------------------------------- dispatcher
def _tags_and_sizes(gt: Volume, num_classes: int, per_slice: bool = False, margin: float = 0.1
                    ) -> WeakAnnotation:
    return combine(simulate_tags(gt, num_classes, per_slice=per_slice),
                   simulate_size_ranges(gt, num_classes, margin=margin))


_SIMULATORS: dict[str, Callable[..., WeakAnnotation]] = {
    "scribbles": simulate_scribbles,
    "points": simulate_points,
    "boxes": simulate_boxes,
    "tags": simulate_tags,
    "sizes": simulate_size_ranges,
    "tags+sizes": _tags_and_sizes,
    "partial": simulate_partial_labels,
    "full": simulate_full,
}


def simulate(gt: Volume, num_classes: int, kind: str, seed: Seed = 0, **options) -> WeakAnnotation:
    """Simulate a weak annotation of ``kind`` (one of :data:`KINDS`); ``options`` go to that simulator.

    ``seed`` is passed to the random kinds (scribbles, points, boxes, partial) and ignored by the
    deterministic ones (tags, sizes, tags+sizes, full).
    """
    if kind not in _SIMULATORS:
        raise ValueError(f"Unknown annotation kind '{kind}'; choose one of {', '.join(KINDS)}.")
    func = _SIMULATORS[kind]
    params = inspect.signature(func).parameters
    allowed = [p for p in params if p not in ("gt", "num_classes", "seed")]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"Option(s) {unknown} do not apply to kind '{kind}'; its options are "
                         f"{allowed or 'none'}.")
    if "seed" in params:
        options["seed"] = seed
    return func(gt, num_classes, **options)
