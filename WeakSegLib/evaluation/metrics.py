"""Segmentation metrics: Dice, HD95 and average surface distance (mm, spacing-aware), volume errors.

Array functions (:func:`dice`, :func:`hd95`, :func:`average_surface_distance`,
:func:`volume_error_ml`) take integer label arrays ``(z, y, x)`` (or Volumes) and return
``{class_id: value}``.  :func:`evaluate` compares two label :class:`~WeakSegLib.data.volume.Volume` s on
one grid and returns a per-class report; :func:`summarise` pools reports over cases.  Paired
comparisons of two methods are in :mod:`WeakSegLib.evaluation.statistics`, tables and JSON in
:mod:`WeakSegLib.evaluation.reports`.

Conventions:

* **Surfaces** are the voxels of a mask with at least one 6-neighbour outside it (voxels on the
  image border count as surface).  Distances are between voxel centres, in mm, using the spacing
  (``scipy.ndimage.distance_transform_edt(..., sampling=spacing_zyx)``).
* **HD95** is the larger of the two directed 95th percentiles (prediction surface to ground-truth
  surface and back), as MONAI's ``compute_hausdorff_distance(percentile=95)`` and medpy's ``hd95``.
  **ASD** is the symmetric average surface distance: the mean of the distances of both directions
  pooled (MONAI's ``symmetric=True``).
* **Empty masks**: both empty -> Dice 1.0, HD95 0.0, ASD 0.0 (a correct "absent"); one empty ->
  Dice 0.0, HD95 and ASD ``NaN`` (undefined), which
  :func:`~WeakSegLib.evaluation.reports.to_jsonable` writes as ``null``.
  Means skip NaN values and report how many were skipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage

from WeakSegLib.data.volume import Volume, check_same_geometry

METRIC_KEYS = ("dice", "hd95_mm", "asd_mm", "volume_pred_ml", "volume_gt_ml", "volume_error_ml")
_SURFACE_STRUCTURE = ndimage.generate_binary_structure(3, 1)


# ---------------------------------------------------------------------------------------- helpers
def _as_label_array(x, name: str) -> np.ndarray:
    arr = x.array if isinstance(x, Volume) else np.asarray(x)
    if arr.ndim != 3:
        raise ValueError(f"The {name} must be a (z, y, x) label array, got shape {arr.shape}.")
    if not np.issubdtype(arr.dtype, np.integer):
        if arr.dtype == bool:
            return arr.astype(np.int16)
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"The {name} must hold integer class ids (a label map, not probabilities).")
        arr = arr.astype(np.int64)
    return arr


def _pair(pred, gt) -> tuple[np.ndarray, np.ndarray]:
    p, g = _as_label_array(pred, "prediction"), _as_label_array(gt, "ground truth")
    if p.shape != g.shape:
        raise ValueError(f"Prediction shape {p.shape} differs from ground-truth shape {g.shape} (z, y, x).")
    return p, g


def _labels(pred: np.ndarray, gt: np.ndarray, labels: Iterable[int] | None) -> list[int]:
    if labels is None:
        return sorted(int(v) for v in np.union1d(np.unique(pred), np.unique(gt)) if v != 0)
    return [int(v) for v in labels]


def _spacing(spacing_zyx: Sequence[float]) -> tuple[float, float, float]:
    spacing = tuple(float(s) for s in spacing_zyx)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing_zyx must be 3 positive values (z, y, x) in mm, got {spacing_zyx}.")
    return spacing  # type: ignore[return-value]


def _surface(mask: np.ndarray) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, _SURFACE_STRUCTURE, border_value=0)


def _surface_distances(a: np.ndarray, b: np.ndarray, spacing: tuple[float, float, float]
                       ) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each surface voxel of ``a`` to the surface of ``b``, and back; both non-empty."""
    # Both surfaces lie in the joint bounding box, so distances computed on that crop are exact. The
    # crop is padded by one (empty) voxel where the image allows; where it reaches the image border,
    # erosion with border_value=0 makes border voxels surface, as on the whole image.
    both = a | b
    lo = np.maximum(np.argwhere(both).min(axis=0) - 1, 0)
    hi = np.minimum(np.argwhere(both).max(axis=0) + 2, a.shape)
    crop = tuple(slice(int(x), int(y)) for x, y in zip(lo, hi, strict=True))
    sa, sb = _surface(a[crop]), _surface(b[crop])
    dist_to_b = ndimage.distance_transform_edt(~sb, sampling=spacing)
    dist_to_a = ndimage.distance_transform_edt(~sa, sampling=spacing)
    return dist_to_b[sa], dist_to_a[sb]


def _surface_metrics(pred: np.ndarray, gt: np.ndarray, spacing: tuple[float, float, float], c: int
                     ) -> tuple[float, float]:
    """(HD95, ASD) of class ``c`` in mm: (0, 0) when both masks are empty, (NaN, NaN) when one is."""
    p, g = pred == c, gt == c
    has_p, has_g = bool(p.any()), bool(g.any())
    if not has_p and not has_g:
        return 0.0, 0.0
    if has_p != has_g:
        return math.nan, math.nan
    d_pg, d_gp = _surface_distances(p, g, spacing)
    hd = float(max(np.percentile(d_pg, 95), np.percentile(d_gp, 95)))
    return hd, float(np.concatenate([d_pg, d_gp]).mean())


# ---------------------------------------------------------------------------------------- array metrics
def dice(pred, gt, labels: Iterable[int] | None = None) -> dict[int, float]:
    """Dice per class: ``2|P∩G| / (|P|+|G|)``; 1.0 when both are empty.

    ``labels`` defaults to every non-zero class present in either map.
    """
    p, g = _pair(pred, gt)
    out = {}
    for c in _labels(p, g, labels):
        pc, gc = p == c, g == c
        denom = int(pc.sum()) + int(gc.sum())
        out[c] = 1.0 if denom == 0 else 2.0 * int(np.count_nonzero(pc & gc)) / denom
    return out


def hd95(pred, gt, spacing_zyx: Sequence[float], labels: Iterable[int] | None = None) -> dict[int, float]:
    """95th-percentile symmetric Hausdorff distance per class, in mm (see the module docstring).

    0.0 when both masks are empty, ``NaN`` when exactly one is.
    """
    p, g = _pair(pred, gt)
    spacing = _spacing(spacing_zyx)
    return {c: _surface_metrics(p, g, spacing, c)[0] for c in _labels(p, g, labels)}


def average_surface_distance(pred, gt, spacing_zyx: Sequence[float], labels: Iterable[int] | None = None
                             ) -> dict[int, float]:
    """Symmetric average surface distance per class, in mm; 0.0 both empty, ``NaN`` one empty."""
    p, g = _pair(pred, gt)
    spacing = _spacing(spacing_zyx)
    return {c: _surface_metrics(p, g, spacing, c)[1] for c in _labels(p, g, labels)}


def volume_error_ml(pred, gt, voxel_volume_ml: float, labels: Iterable[int] | None = None
                    ) -> dict[int, float]:
    """Signed volume error per class in mL: predicted volume minus ground-truth volume."""
    p, g = _pair(pred, gt)
    if not voxel_volume_ml > 0:
        raise ValueError(f"voxel_volume_ml must be positive, got {voxel_volume_ml}.")
    return {c: (int(np.count_nonzero(p == c)) - int(np.count_nonzero(g == c))) * voxel_volume_ml
            for c in _labels(p, g, labels)}


# ---------------------------------------------------------------------------------------- reports
def _nanmean(values: Sequence[float]) -> tuple[float, int]:
    finite = [v for v in values if not math.isnan(v)]
    return (float(np.mean(finite)) if finite else math.nan), len(values) - len(finite)


def evaluate(pred: Volume, gt: Volume, class_names: Sequence[str] | None = None) -> dict:
    """Per-class metrics of a predicted label Volume against the ground truth on the same grid.

    ``class_names`` lists the names by class id, background first (as ``Dataset.class_names``);
    every foreground class it names is reported, present or not.  Without it, the non-zero classes
    present in either map are reported as ``class_<id>``.  Returns::

        {"classes": {name: {"id", "dice", "hd95_mm", "asd_mm", "volume_pred_ml", "volume_gt_ml",
                            "volume_error_ml"}},
         "mean": {same metric keys: mean over the foreground classes, NaN skipped},
         "skipped": {metric: number of NaN values left out of the mean}}

    HD95/ASD are ``NaN`` where exactly one of the two masks is empty (use
    :func:`~WeakSegLib.evaluation.reports.to_jsonable` for JSON).  A geometry mismatch raises
    :class:`~WeakSegLib.data.volume.GeometryMismatchError` naming both.
    """
    if not isinstance(pred, Volume) or not isinstance(gt, Volume):
        raise TypeError("evaluate() takes two WeakSegLib Volumes (prediction, ground truth); use dice() or "
                        "hd95() for bare arrays.")
    check_same_geometry(gt.geometry, pred.geometry, "ground truth", "prediction")
    p, g = _pair(pred, gt)
    if class_names is not None:
        class_names = list(class_names)
        if len(class_names) < 2:
            raise ValueError(f"class_names lists background first and at least one class, got {class_names}.")
        labels = list(range(1, len(class_names)))
        extra = sorted(set(int(v) for v in np.union1d(np.unique(p), np.unique(g))) - set(labels) - {0})
        if extra:
            raise ValueError(f"The label maps hold class id(s) {extra} but only {len(class_names)} class "
                             f"names were given ({class_names}).")
        names = {c: class_names[c] for c in labels}
    else:
        labels = _labels(p, g, None)
        names = {c: f"class_{c}" for c in labels}
    spacing = gt.geometry.spacing_zyx
    voxel_ml = gt.geometry.voxel_volume_ml
    d = dice(p, g, labels)
    classes = {}
    for c in labels:
        n_pred, n_gt = int(np.count_nonzero(p == c)), int(np.count_nonzero(g == c))
        hd, asd = _surface_metrics(p, g, spacing, c)
        classes[names[c]] = {
            "id": c,
            "dice": d[c],
            "hd95_mm": hd,
            "asd_mm": asd,
            "volume_pred_ml": n_pred * voxel_ml,
            "volume_gt_ml": n_gt * voxel_ml,
            "volume_error_ml": (n_pred - n_gt) * voxel_ml,
        }
    mean, skipped = {}, {}
    for key in METRIC_KEYS:
        mean[key], skipped[key] = _nanmean([m[key] for m in classes.values()])
    return {"classes": classes, "mean": mean, "skipped": skipped}


def summarise(reports: Sequence[dict]) -> dict:
    """Mean and standard deviation (sample, ddof=1; 0 for one case) of each metric over cases.

    Returns ``{"classes": {name: {metric: {"mean", "sd", "n", "skipped"}}}, "mean": {...}}`` where
    ``"mean"`` summarises the per-case foreground means, ``n`` counts the values used and
    ``skipped`` the NaN values left out (e.g. HD95 where a class was missed entirely).
    """
    reports = list(reports)
    if not reports:
        raise ValueError("summarise() needs at least one report from evaluate().")

    def stats(values: list[float]) -> dict:
        finite = np.asarray([v for v in values if v is not None and not math.isnan(v)], float)
        n = len(finite)
        return {"mean": float(finite.mean()) if n else math.nan,
                "sd": float(finite.std(ddof=1)) if n > 1 else (0.0 if n == 1 else math.nan),
                "n": n, "skipped": len(values) - n}

    names: list[str] = []
    for r in reports:
        names.extend(n for n in r["classes"] if n not in names)
    classes = {name: {key: stats([r["classes"][name][key] for r in reports if name in r["classes"]])
                      for key in METRIC_KEYS} for name in names}
    mean = {key: stats([r["mean"][key] for r in reports]) for key in METRIC_KEYS}
    return {"classes": classes, "mean": mean, "n_cases": len(reports)}

