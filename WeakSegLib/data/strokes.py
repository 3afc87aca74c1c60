"""Scribble strokes in a 2D slice: a geodesic path along an object's medial axis, a ring of background.

Used by :func:`WeakSegLib.data.simulate.simulate_scribbles`; arrays are (y, x) masks, spacings in mm.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

# 8-neighbourhood offsets in a 2D slice, each undirected edge listed once.
_HALF_NEIGHBOURS_2D = ((0, 1), (1, -1), (1, 0), (1, 1))


def padded(mask: np.ndarray) -> np.ndarray:
    """``mask`` padded by one False voxel on every side (so the borders of a crop count as outside)."""
    return np.pad(mask, 1)


# ---------------------------------------------------------------------------------------- scribbles
def _geodesic_path(core: np.ndarray, spacing: tuple[float, float], rng: np.random.Generator) -> np.ndarray:
    """Longest geodesic path (8-connected, mm) in ``core``, found by a double sweep from a random pixel.

    Returns the path as (n, 2) pixel coordinates, in order.  Only the connected piece of ``core``
    holding the random start pixel is used.
    """
    coords = np.argwhere(core)
    n = len(coords)
    if n == 1:
        return coords
    index = np.full(core.shape, -1, np.int64)
    index[tuple(coords.T)] = np.arange(n)
    rows, cols, weights = [], [], []
    h, w = core.shape
    for dy, dx in _HALF_NEIGHBOURS_2D:
        # dy >= 0 for every listed offset; dx may be negative.
        a = index[0:h - dy, max(0, -dx):w - max(0, dx)]
        b = index[dy:h, max(0, dx):w + min(0, dx)]
        both = (a >= 0) & (b >= 0)
        rows.append(a[both])
        cols.append(b[both])
        weights.append(np.full(int(both.sum()), math.hypot(dy * spacing[0], dx * spacing[1])))
    graph = csr_matrix((np.concatenate(weights), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    start = int(rng.integers(n))
    dist = dijkstra(graph, directed=False, indices=start)
    end_a = int(np.argmax(np.where(np.isfinite(dist), dist, -1.0)))
    dist, pred = dijkstra(graph, directed=False, indices=end_a, return_predecessors=True)
    end_b = int(np.argmax(np.where(np.isfinite(dist), dist, -1.0)))
    path = [end_b]
    while path[-1] != end_a:
        path.append(int(pred[path[-1]]))
    return coords[np.asarray(path[::-1])]


def _truncate_path(path: np.ndarray, spacing: tuple[float, float], max_length_mm: float | None) -> np.ndarray:
    """The centred part of ``path`` no longer than ``max_length_mm``."""
    if max_length_mm is None or len(path) < 2:
        return path
    steps = np.hypot(*(np.diff(path, axis=0) * np.asarray(spacing)).T)
    arc = np.concatenate([[0.0], np.cumsum(steps)])
    if arc[-1] <= max_length_mm:
        return path
    centre = arc[-1] / 2.0
    keep = (arc >= centre - max_length_mm / 2.0) & (arc <= centre + max_length_mm / 2.0)
    return path[keep] if keep.any() else path[[len(path) // 2]]


def object_stroke(mask: np.ndarray, spacing: tuple[float, float], rng: np.random.Generator,
                   width_px: int, max_length_mm: float | None) -> np.ndarray:
    """A stroke along the medial ridge of one 2D object (a padded crop), inside the object."""
    dt = ndimage.distance_transform_edt(mask, sampling=spacing)
    dt_max = float(dt.max())
    pixel = min(spacing)
    # The eroded object: the half of the distance ridge farthest from the boundary.
    core = dt >= 0.5 * dt_max
    path = _truncate_path(_geodesic_path(core, spacing, rng), spacing, max_length_mm)
    stroke = np.zeros(mask.shape, bool)
    stroke[tuple(path.T)] = True
    radius = (width_px - 1) // 2  # even widths round down to the odd width below
    if radius >= 1:  # (binary_dilation with iterations=0 would dilate until nothing changes)
        widened = ndimage.binary_dilation(stroke, iterations=radius)
        # Widen only where the stroke stays at least two pixels away from the object boundary.
        stroke |= widened & (dt >= min(dt_max, 2.0 * pixel))
    return stroke & mask


def background_ring(reference_fg: np.ndarray, background: np.ndarray, spacing: tuple[float, float],
                     margin_mm: float, width_px: int, rng: np.random.Generator) -> np.ndarray:
    """An arc of a ring at ``margin_mm`` around ``reference_fg``, restricted to true background."""
    if not reference_fg.any():
        return np.zeros(reference_fg.shape, bool)
    dist = ndimage.distance_transform_edt(~reference_fg, sampling=spacing)
    ring = (dist >= margin_mm) & (dist < margin_mm + width_px * min(spacing))
    # Keep an arc of 50-100% of the full turn, as annotators rarely close the loop exactly.
    cy, cx = np.argwhere(reference_fg).mean(axis=0)
    yy, xx = np.nonzero(ring)
    angle = np.mod(np.arctan2((yy - cy) * spacing[0], (xx - cx) * spacing[1]) - rng.uniform(0, 2 * np.pi),
                   2 * np.pi)
    keep = angle <= rng.uniform(0.5, 1.0) * 2 * np.pi
    out = np.zeros(reference_fg.shape, bool)
    out[yy[keep], xx[keep]] = True
    return out & background
