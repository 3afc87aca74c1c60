"""The volume being annotated without a trained model: a classifier fit on the strokes, then geodesic competition.

What the Segment Editor effect and ``weakseg predict --strokes`` do when there is no model (the first
use on a new kind of image), in a few seconds:

1. **Features** of every voxel (:func:`stroke_features`): intensity, Gaussian smoothing, gradient
   magnitude, Laplacian of Gaussian and (per slice) Hessian eigenvalues at 1.5, 3 and 6 mm, and the
   voxel's position relative to the centre of the foreground strokes (per slice for thick-slice
   volumes, with the slice's relative height).
2. **A pixel classifier fit on the painted voxels** (:func:`fit_stroke_classifier`: a two-layer
   perceptron, class-balanced cross-entropy) gives every voxel per-class probabilities.  Alone it is
   poor far from the strokes (it has seen only painted voxels), so it is not used as the answer:
3. **Geodesic competition** (:func:`geodesic_competition`; GeoS, Criminisi et al., ECCV 2008): every
   voxel takes the class of the stroke it reaches most cheaply along paths whose cost is the change
   of intensity plus ``probability_weight`` times the change of the classifier's probabilities
   (plus a small cost per mm).  Grow from seeds follows intensity alone; the classifier lets the paths
   see what separates two tissues of the same brightness (a thin dark wall between two bright cavities
   shows in the probabilities as well as in the intensity).

Thick-slice volumes (slice spacing more than twice the in-plane spacing, e.g. cine MRI) get per-slice
features and each painted slice is segmented on its own (in-plane 8-neighbourhood); an unpainted slice
between painted ones takes the labels of its neighbours through edges across slices.  Other volumes get
a 3D 18-neighbourhood.  The graph covers the strokes' bounding box grown by a margin (thick slices: from
the first to the last painted slice); voxels outside it are background.  The painted voxels keep their
label.  Needs strokes of the background (class 0) and of at least one other class.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence

import numpy as np

from WeakSegLib.data.annotation import UNKNOWN

logger = logging.getLogger(__name__)

FEATURE_SCALES_MM = (1.5, 3.0, 6.0)
PROBABILITY_WEIGHT = 0.3    # cost of a change of the classifier's probabilities, relative to intensity in [0, 1]
DISTANCE_COST = 1e-3        # cost per mm of path, so that ties go to the nearer stroke
CROP_MARGIN = 0.2           # the graph covers the strokes' bounding box grown by this fraction of its span per side
MIN_CROP_MARGIN = 5         # ... and by at least this many voxels
THICK_SLICE_RATIO = 2.0     # slice spacing / in-plane spacing above which slices are treated one by one
MAX_TRAINING_VOXELS = 50_000


def thick_slices(spacing_zyx: Sequence[float]) -> bool:
    """True when the z spacing is more than :data:`THICK_SLICE_RATIO` times the finer in-plane spacing."""
    return float(spacing_zyx[0]) > THICK_SLICE_RATIO * min(float(spacing_zyx[1]), float(spacing_zyx[2]))


def stroke_features(image: np.ndarray, strokes: np.ndarray, spacing_zyx: Sequence[float],
                    per_slice: bool | None = None) -> np.ndarray:
    """(z, y, x) image and strokes -> (z, y, x, F) float32 features (see the module docstring).

    ``per_slice``: filters within each z slice only (default: :func:`thick_slices`).  The intensity is
    clipped to its 1st-99th percentiles and scaled to [0, 1]; positions are in units of 50 mm.
    """
    from scipy import ndimage as ndi

    from WeakSegLib.training.propagation import normalise01  # the training package imports inference

    image = normalise01(np.asarray(image, np.float32))
    if image.shape != strokes.shape:
        raise ValueError(f"image shape {image.shape} differs from the strokes' shape {strokes.shape}.")
    per_slice = thick_slices(spacing_zyx) if per_slice is None else per_slice
    spacing = np.asarray(spacing_zyx, float)
    features = [image]
    for scale in FEATURE_SCALES_MM:
        sigma = scale / spacing
        if per_slice:
            sigma[0] = 0.0
        features += [ndi.gaussian_filter(image, sigma), ndi.gaussian_gradient_magnitude(image, sigma),
                     ndi.gaussian_laplace(image, sigma)]
        if per_slice:   # the in-plane Hessian's two eigenvalues
            hyy = ndi.gaussian_filter(image, sigma, order=(0, 2, 0))
            hxx = ndi.gaussian_filter(image, sigma, order=(0, 0, 2))
            hxy = ndi.gaussian_filter(image, sigma, order=(0, 1, 1))
            half_trace = (hxx + hyy) / 2
            root = np.sqrt(np.maximum(half_trace ** 2 - (hxx * hyy - hxy ** 2), 0))
            features += [half_trace + root, half_trace - root]
    features += _relative_position(strokes, spacing, per_slice)
    return np.stack(features, -1).astype(np.float32)


def _relative_position(strokes: np.ndarray, spacing: np.ndarray, per_slice: bool) -> list[np.ndarray]:
    foreground = strokes > 0
    if not np.any(foreground):
        foreground = strokes != UNKNOWN
    grid = np.meshgrid(*[np.arange(n, dtype=np.float32) for n in strokes.shape], indexing="ij")
    if not per_slice:
        centre = [float(np.mean(a)) for a in np.nonzero(foreground)]
        return [(grid[a] - centre[a]) * spacing[a] / 50.0 for a in range(3)]
    any_slice = foreground.any(0)
    out = [np.zeros(strokes.shape, np.float32) for _ in range(2)]
    for z in range(strokes.shape[0]):
        mask = foreground[z] if foreground[z].any() else any_slice
        for i, a in enumerate((1, 2)):
            centre = float(np.mean(np.nonzero(mask)[i]))
            out[i][z] = (grid[a][z] - centre) * spacing[a] / 50.0
    height = grid[0] / max(strokes.shape[0] - 1, 1)
    return [*out, height]


def fit_stroke_classifier(features: np.ndarray, strokes: np.ndarray, num_classes: int, steps: int = 300,
                          hidden: int = 64, seed: int = 0) -> np.ndarray:
    """A two-layer perceptron fit on the painted voxels; returns (*spatial, K) float32 probabilities.

    ``features``: (*spatial, F); ``strokes``: (*spatial) class ids, ``UNKNOWN`` where unpainted.
    Class-balanced cross-entropy, full-batch Adam (at most :data:`MAX_TRAINING_VOXELS` painted voxels,
    drawn with ``seed``).  Deterministic for a given ``seed``; the global random state is left alone.
    """
    import torch

    if features.shape[:-1] != strokes.shape:
        raise ValueError(f"features {features.shape} do not match the strokes' shape {strokes.shape}.")
    painted = np.nonzero((strokes != UNKNOWN).ravel())[0]
    if painted.size == 0:
        raise ValueError("Nothing is painted: paint a few strokes in each structure and in the background.")
    rng = np.random.default_rng(seed)
    if painted.size > MAX_TRAINING_VOXELS:
        painted = np.sort(rng.choice(painted, MAX_TRAINING_VOXELS, replace=False))
    flat = features.reshape(-1, features.shape[-1])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        x = torch.from_numpy(flat[painted])
        y = torch.from_numpy(strokes.ravel()[painted].astype(np.int64))
        mean, std = x.mean(0), x.std(0) + 1e-6
        counts = torch.bincount(y, minlength=num_classes).double()
        weight = (counts.sum() / (num_classes * counts.clamp(min=1))).float()
        net = torch.nn.Sequential(torch.nn.Linear(flat.shape[1], hidden), torch.nn.ReLU(),
                                  torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
                                  torch.nn.Linear(hidden, num_classes))
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2, weight_decay=1e-4)
        x = (x - mean) / std
        for _ in range(steps):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(x), y, weight=weight)
            loss.backward()
            optimizer.step()
        with torch.no_grad():
            probabilities = np.concatenate([
                torch.softmax(net((torch.from_numpy(chunk) - mean) / std), -1).numpy()
                for chunk in np.array_split(flat, max(1, math.ceil(len(flat) / 500_000)))])
    logger.debug("Stroke classifier: %d painted voxels, final loss %.3f", painted.size, loss.item())
    return probabilities.reshape(*strokes.shape, num_classes).astype(np.float32)


def _offsets(per_slice: bool) -> list[tuple[int, int, int]]:
    """Half of the neighbourhood (one of each +-pair): the in-plane 8-neighbourhood plus the slices above
    and below for thick slices, the 18-neighbourhood otherwise."""
    out = []
    for offset in itertools.product((-1, 0, 1), repeat=3):
        if offset <= (0, 0, 0):
            continue
        nonzero = sum(o != 0 for o in offset)
        if nonzero == 1 or (nonzero == 2 and (not per_slice or offset[0] == 0)):
            out.append(offset)
    return out


def geodesic_competition(features: np.ndarray, strokes: np.ndarray, spacing_zyx: Sequence[float],
                         per_slice: bool | None = None, distance_cost: float = DISTANCE_COST) -> np.ndarray:
    """Every voxel labelled with the class of the stroke it reaches at the least path cost.

    ``features``: (z, y, x, F), the cost of an edge is the L1 change of the features plus
    ``distance_cost`` per mm of its length; ``strokes``: (z, y, x) class ids with ``UNKNOWN`` unpainted.
    Dijkstra from all strokes of each class at once.  Voxels that no stroke reaches get class 0.
    Returns (z, y, x) int16 labels (the painted voxels keep theirs).
    """
    from scipy import sparse
    from scipy.sparse.csgraph import dijkstra

    if features.shape[:-1] != strokes.shape or strokes.ndim != 3:
        raise ValueError(f"features {features.shape} must be (z, y, x, F) on the strokes' grid {strokes.shape}.")
    per_slice = thick_slices(spacing_zyx) if per_slice is None else per_slice
    shape, n = strokes.shape, strokes.size
    index = np.arange(n).reshape(shape)
    flat = features.reshape(n, -1)
    rows, cols, costs = [], [], []
    painted_slices = np.any(strokes != UNKNOWN, axis=(1, 2))
    for offset in _offsets(per_slice):
        source = tuple(slice(max(0, -o), s - max(0, o)) for o, s in zip(offset, shape))
        target = tuple(slice(max(0, o), s - max(0, -o)) for o, s in zip(offset, shape))
        a, b = index[source], index[target]
        if per_slice and offset[0] != 0:
            # Thick slices: a painted slice is segmented on its own (paths through the neighbouring slices,
            # 5-10 mm away, cost less than the edges they jump); an unpainted one takes its neighbours'.
            keep = ~(painted_slices[source[0]] & painted_slices[target[0]])
            a, b = a[keep], b[keep]
        a, b = a.ravel(), b.ravel()
        if a.size == 0:
            continue
        length = math.sqrt(sum((o * float(s)) ** 2 for o, s in zip(offset, spacing_zyx)))
        rows.append(a)
        cols.append(b)
        costs.append(np.abs(flat[a] - flat[b]).sum(-1) + distance_cost * length + 1e-9)
    r, c, w = np.concatenate(rows), np.concatenate(cols), np.concatenate(costs)
    graph = sparse.csr_array((np.concatenate([w, w]), (np.concatenate([r, c]), np.concatenate([c, r]))),
                             shape=(n, n))
    flat_strokes = strokes.ravel()
    classes = [int(k) for k in np.unique(flat_strokes) if k != UNKNOWN]
    distances = np.stack([dijkstra(graph, indices=np.nonzero(flat_strokes == k)[0], min_only=True)
                          for k in classes])
    labels = np.asarray(classes, np.int16)[np.argmin(distances, 0)]
    labels[~np.isfinite(distances.min(0))] = 0
    painted = flat_strokes != UNKNOWN
    labels[painted] = flat_strokes[painted]
    return labels.reshape(shape)


def _crop_box(strokes: np.ndarray, per_slice: bool) -> tuple[slice, ...]:
    box = []
    for axis, positions in enumerate(np.nonzero(strokes != UNKNOWN)):
        lo, hi = int(positions.min()), int(positions.max()) + 1
        if per_slice and axis == 0:
            margin = 0      # thick slices: nothing beyond the first and the last painted slice
        else:
            margin = max(MIN_CROP_MARGIN, int(round(CROP_MARGIN * (hi - lo))))
        box.append(slice(max(0, lo - margin), min(strokes.shape[axis], hi + margin)))
    return tuple(box)


def segment_from_strokes(image: np.ndarray, strokes: np.ndarray, spacing_zyx: Sequence[float],
                         num_classes: int | None = None, probability_weight: float = PROBABILITY_WEIGHT,
                         largest_component: bool | str = False, seed: int = 0) -> np.ndarray:
    """The strokes completed without a model (the module docstring's method).

    ``image``: (z, y, x) intensities (one channel); ``strokes``: (z, y, x) class ids, ``UNKNOWN`` (-1)
    unpainted, 0 = background; ``spacing_zyx`` in mm.  ``num_classes`` defaults to the largest painted
    class + 1.  ``largest_component`` keeps each class's largest component (the painted voxels are put
    back afterwards).  Returns (z, y, x) int16 labels; every painted voxel keeps its label.
    """
    from WeakSegLib.inference.strokes import finish_with_seeds

    image = np.asarray(image)
    strokes = np.asarray(strokes)
    if image.ndim != 3 or image.shape != strokes.shape:
        raise ValueError(f"image {image.shape} and strokes {strokes.shape} must be one (z, y, x) grid.")
    if len(spacing_zyx) != 3 or not all(float(s) > 0 for s in spacing_zyx):
        raise ValueError(f"spacing_zyx must be three positive spacings in mm, got {tuple(spacing_zyx)}.")
    painted = np.unique(strokes[strokes != UNKNOWN])
    if painted.size and painted.min() < 0:
        raise ValueError(f"Stroke values must be class ids >= 0 or {UNKNOWN} (unpainted), got {int(painted.min())}.")
    if 0 not in painted:
        raise ValueError("Without a model the background must be painted too: add a few background strokes "
                         "around the structures (in Slicer: a segment named 'Background').")
    if painted.size < 2:
        raise ValueError("Paint at least one structure besides the background.")
    num_classes = int(painted.max()) + 1 if num_classes is None else int(num_classes)
    if painted.max() >= num_classes:
        raise ValueError(f"The strokes hold class {int(painted.max())} but there are {num_classes} classes.")
    per_slice = thick_slices(spacing_zyx)
    box = _crop_box(strokes, per_slice)
    crop_strokes = strokes[box].astype(np.int16)
    crop_image = image[box].astype(np.float32)
    features = stroke_features(crop_image, crop_strokes, spacing_zyx, per_slice)
    probabilities = fit_stroke_classifier(features, crop_strokes, num_classes, seed=seed)
    intensity = features[..., :1]          # the first feature: the intensity scaled to [0, 1]
    labels = np.zeros(strokes.shape, np.int16)
    labels[box] = geodesic_competition(np.concatenate([intensity, probability_weight * probabilities], -1),
                                       crop_strokes, spacing_zyx, per_slice)
    return finish_with_seeds(labels, strokes.astype(np.int16), largest_component)
