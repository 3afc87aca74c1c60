"""A trained network's probabilities completed by the user's strokes on the volume being annotated.

A random walker with the network as prior (Grady 2005): the strokes are hard labels, the walker
follows image edges between them, and the network's softmax pulls every voxel towards its own
answer with weight ``gamma``.  Small ``gamma`` trusts the strokes (right where the network fails on
this volume, but a few strokes cannot say where the borders between them lie), large ``gamma``
trusts the network (right where it works).  :func:`refine_with_seeds` chooses per slice (2D plans) or
per volume (3D plans) from what the strokes say about the network there: where the network already
gives the painted label to at least ``agreement`` of the painted voxels it is trusted
(``trusted_prior_weight``), elsewhere the strokes lead (``prior_weight``).  The painted voxels
always keep their label.  Intensities are normalised as for the scribble propagation of training
(:func:`WeakSegLib.training.propagation.normalise01`).  Used by the Segment Editor effect with a
trained model, and by the ``interactive-seeds`` benchmark method.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from WeakSegLib.data.annotation import UNKNOWN


def prior_random_walker(image: np.ndarray, prior: np.ndarray, seeds: np.ndarray, spacing: Sequence[float],
                         gamma: float, beta: float, tol: float = 1e-5) -> np.ndarray:
    """Random walker with prior (Grady 2005) on one 2D/3D block; returns per-class probabilities.

    ``image``: (*spatial, C) in [0, 1]; ``prior``: (*spatial, K) probabilities; ``seeds``: (*spatial) with
    UNKNOWN where free.  Solves ``(L_UU + gamma I) x_k = gamma p_k + W_US m_k`` for each class k, with
    the graph Laplacian ``L`` of edge weights ``exp(-beta |grad I|^2 / (10 std(I)))`` (scikit-image's
    convention, gradients per mm relative to the finest spacing).
    """
    from scipy import sparse
    from scipy.sparse import linalg as splinalg

    shape = seeds.shape
    n = int(np.prod(shape))
    k = prior.shape[-1]
    index = np.arange(n).reshape(shape)
    rel = np.asarray(spacing, float) / min(spacing)
    std = float(image.std()) or 1.0
    scale = -beta / (10.0 * std) / math.sqrt(image.shape[-1])
    rows, cols, weights = [], [], []
    for ax in range(len(shape)):
        if shape[ax] < 2:
            continue
        grad2 = (np.diff(image, axis=ax) / rel[ax]) ** 2
        rows.append(np.delete(index, -1, axis=ax).ravel())
        cols.append(np.delete(index, 0, axis=ax).ravel())
        weights.append(np.exp(scale * grad2.sum(-1)).ravel() + 1e-10)
    r, c, w = np.concatenate(rows), np.concatenate(cols), np.concatenate(weights)
    adjacency = sparse.csr_array((np.concatenate([w, w]), (np.concatenate([r, c]), np.concatenate([c, r]))),
                                 shape=(n, n))
    flat_seeds = seeds.ravel()
    seeded = flat_seeds != UNKNOWN
    free = np.nonzero(~seeded)[0]
    fixed = np.nonzero(seeded)[0]
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    a_uu = (sparse.diags_array(degree[free] + gamma) - adjacency[free][:, free]).tocsc()
    w_us = adjacency[free][:, fixed]
    flat_prior = prior.reshape(n, k)
    out = np.zeros((n, k), np.float32)
    out[fixed, np.clip(flat_seeds[fixed], 0, k - 1)] = 1.0
    if free.size:
        rhs = gamma * flat_prior[free].astype(np.float64)
        if fixed.size:
            onehot = np.zeros((fixed.size, k))
            onehot[np.arange(fixed.size), np.clip(flat_seeds[fixed], 0, k - 1)] = 1.0
            rhs += w_us @ onehot
        # Priors and seeds sum to one over the classes, so the solutions do too: solve K - 1 systems.
        if free.size <= 150_000:   # a 2D slice: a sparse direct solve is exact and fast
            solve = splinalg.factorized(a_uu)
            sol = [solve(rhs[:, j]) for j in range(k - 1)]
        else:                      # a 3D volume: Jacobi-preconditioned CG (gamma keeps it well conditioned)
            inv_diag = sparse.diags_array(1.0 / a_uu.diagonal())
            sol = [splinalg.cg(a_uu, rhs[:, j], x0=flat_prior[free, j].astype(np.float64), rtol=tol,
                               maxiter=2000, M=inv_diag)[0] for j in range(k - 1)]
        sol.append(1.0 - np.sum(sol, axis=0))
        out[free] = np.stack(sol, 1)
    return out.reshape(*shape, k)


STROKE_PRIOR_WEIGHT = 0.03      # gamma where the strokes contradict the network
TRUSTED_PRIOR_WEIGHT = 0.3      # gamma where the network agrees with the strokes
STROKE_AGREEMENT = 0.97         # fraction of painted voxels the network must label as painted to be trusted


def stroke_agreement(labels: np.ndarray, seeds: np.ndarray) -> float | None:
    """Fraction of the seeded voxels whose label in ``labels`` is the seeded one (None without seeds)."""
    known = seeds != UNKNOWN
    if not np.any(known):
        return None
    return float(np.mean(labels[known] == seeds[known]))


def refine_with_seeds(probabilities: np.ndarray, image: np.ndarray, seeds: np.ndarray,
                      spacing_zyx: Sequence[float], dims: int = 3, prior_weight: float = STROKE_PRIOR_WEIGHT,
                      beta: float = 130.0, trusted_prior_weight: float | None = None,
                      agreement: float = STROKE_AGREEMENT, largest_component: bool = False) -> np.ndarray:
    """Network probabilities + hard seeds -> labels, by a random walker with the network as prior.

    ``probabilities``: (z, y, x, K) softmax of the network on the image grid; ``image``: (z, y, x[, C]);
    ``seeds``: (z, y, x) class ids with ``UNKNOWN`` (-1) where not annotated.  Each class's walker
    probability is pulled towards the seeds along image-homogeneous paths and towards the network
    prior with weight ``prior_weight`` (gamma; large = trust the network, small = trust the seeds).
    With ``trusted_prior_weight``, a block (a z slice with ``dims=2``, the volume with ``dims=3``) where
    the network's labels agree with at least ``agreement`` of the block's seeds
    (:func:`stroke_agreement`) uses that weight instead.  Seeded voxels keep their label.  With
    ``dims=2`` (the model's 2D plan, anisotropic volumes) the walker runs per z slice and slices
    without seeds keep the network's labels; with ``dims=3`` it runs on the whole volume with the
    voxel spacing.  ``largest_component`` keeps each class's largest component (the seeded voxels are
    labelled again afterwards: strokes are never removed).  Returns (z, y, x) int16 labels.
    """
    from WeakSegLib.inference.postprocessing import keep_largest_component
    from WeakSegLib.training.propagation import normalise01  # the training package imports inference

    probabilities = np.asarray(probabilities, np.float32)
    if probabilities.ndim != 4 or probabilities.shape[:3] != seeds.shape:
        raise ValueError(f"probabilities must be (z, y, x, K) on the seeds' grid {seeds.shape}, got "
                         f"{probabilities.shape}.")
    img = np.asarray(image, np.float32)
    img = img[..., None] if img.ndim == 3 else img
    if img.shape[:3] != seeds.shape:
        raise ValueError(f"image shape {img.shape[:3]} differs from the seeds' shape {seeds.shape}.")
    img = normalise01(img, channels_last=True)
    if not prior_weight > 0 or (trusted_prior_weight is not None and not trusted_prior_weight > 0):
        raise ValueError(f"The prior weights must be > 0, got {prior_weight} and {trusted_prior_weight}.")
    labels = probabilities.argmax(-1).astype(np.int16)

    def gamma(block_labels, block_seeds) -> float:
        agree = stroke_agreement(block_labels, block_seeds)
        trusted = trusted_prior_weight is not None and agree is not None and agree >= agreement
        return trusted_prior_weight if trusted else prior_weight

    if dims == 2:
        for z in range(seeds.shape[0]):
            if np.any(seeds[z] != UNKNOWN):
                prob = prior_random_walker(img[z], probabilities[z], seeds[z], tuple(spacing_zyx[1:]),
                                            gamma(labels[z], seeds[z]), beta)
                labels[z] = prob.argmax(-1)
    elif np.any(seeds != UNKNOWN):
        labels = prior_random_walker(img, probabilities, seeds, tuple(spacing_zyx), gamma(labels, seeds),
                                      beta).argmax(-1).astype(np.int16)
    if largest_component:
        labels = keep_largest_component(labels)
    known = seeds != UNKNOWN
    labels[known] = seeds[known]
    return labels


def complete_strokes(models, volume, strokes: np.ndarray, largest_component: bool = False,
                     prior_weight: float = STROKE_PRIOR_WEIGHT,
                     trusted_prior_weight: float | None = TRUSTED_PRIOR_WEIGHT,
                     agreement: float = STROKE_AGREEMENT, beta: float = 130.0):
    """The labels of ``volume`` from trained model(s) and the user's strokes on it, as a label Volume.

    ``models``: a :class:`~WeakSegLib.model.Model` or a list (an ensemble); ``strokes``: (z, y, x) class
    ids on the volume's grid, ``UNKNOWN`` (-1) where nothing is painted.  The network's probabilities
    are refined by :func:`refine_with_seeds` (walker per slice for 2D plans, per volume for 3D);
    ``largest_component`` keeps each class's largest component.  Every painted voxel keeps its label.
    """
    from WeakSegLib.data.volume import Volume
    from WeakSegLib.model import predict_ensemble

    models = models if isinstance(models, (list, tuple)) else [models]
    strokes = np.asarray(strokes)
    if strokes.shape != tuple(volume.shape[:3]):
        raise ValueError(f"The strokes' shape {strokes.shape} differs from the image's {tuple(volume.shape[:3])}; "
                         f"paint them on the image's grid.")
    num_classes = len(models[0].class_names)
    painted = strokes != UNKNOWN
    if np.any(painted & ((strokes < 0) | (strokes >= num_classes))):
        raise ValueError(f"The strokes hold labels {sorted(set(np.unique(strokes[painted]).tolist()))}; the model "
                         f"has classes 0..{num_classes - 1} ({', '.join(models[0].class_names)}) and "
                         f"{UNKNOWN} marks unpainted voxels.")
    probabilities = predict_ensemble(models, volume, return_probabilities=True).probabilities.array
    labels = refine_with_seeds(probabilities, volume.array, strokes.astype(np.int16), volume.geometry.spacing_zyx,
                               models[0].plan.dims, prior_weight, beta, trusted_prior_weight, agreement,
                               largest_component)
    return Volume(labels, volume.geometry)
