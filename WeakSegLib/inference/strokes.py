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

import hashlib
import json
import logging
import math
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from WeakSegLib.data.annotation import UNKNOWN

logger = logging.getLogger(__name__)


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
                      agreement: float = STROKE_AGREEMENT, largest_component: bool | str = False) -> np.ndarray:
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
    walked, _ = walk_from_seeds(probabilities, image, seeds, spacing_zyx, dims, prior_weight, beta,
                                trusted_prior_weight, agreement)
    return finish_with_seeds(walked, seeds, largest_component)


def walk_from_seeds(probabilities: np.ndarray, image: np.ndarray, seeds: np.ndarray, spacing_zyx: Sequence[float],
                    dims: int = 3, prior_weight: float = STROKE_PRIOR_WEIGHT, beta: float = 130.0,
                    trusted_prior_weight: float | None = None, agreement: float = STROKE_AGREEMENT,
                    previous: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, int]:
    """The walker step of :func:`refine_with_seeds` (before the largest component and the seeds put back).

    ``previous``: ``(seeds, labels)`` of an earlier call on the same probabilities and image with the same
    parameters (a warm start): with ``dims=2`` each z slice whose seeds are unchanged keeps its earlier
    labels, so an Update after one corrective stroke walks only the slices it touched.  Returns the
    labels and the number of blocks (slices or the volume) the walker ran on.
    """
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

    if previous is not None:
        old_seeds, old_labels = (np.asarray(a) for a in previous)
        if old_seeds.shape != seeds.shape or old_labels.shape != seeds.shape:
            previous = None
    walked = 0
    if dims == 2:
        for z in range(seeds.shape[0]):
            if previous is not None and np.array_equal(old_seeds[z], seeds[z]):
                labels[z] = old_labels[z]
            elif np.any(seeds[z] != UNKNOWN):
                prob = prior_random_walker(img[z], probabilities[z], seeds[z], tuple(spacing_zyx[1:]),
                                            gamma(labels[z], seeds[z]), beta)
                labels[z] = prob.argmax(-1)
                walked += 1
    elif previous is not None and np.array_equal(old_seeds, seeds):
        labels = old_labels.astype(np.int16)
    elif np.any(seeds != UNKNOWN):
        labels = prior_random_walker(img, probabilities, seeds, tuple(spacing_zyx), gamma(labels, seeds),
                                      beta).argmax(-1).astype(np.int16)
        walked = 1
    return labels, walked


def finish_with_seeds(labels: np.ndarray, seeds: np.ndarray, largest_component: bool | str = False) -> np.ndarray:
    """The last step of :func:`refine_with_seeds`: each class's largest component if asked, then every
    seeded voxel labelled with its seed."""
    from WeakSegLib.inference.postprocessing import keep_largest_component

    labels = (keep_largest_component(labels, largest_component) if largest_component
              else np.array(labels, dtype=np.int16))
    known = seeds != UNKNOWN
    labels[known] = seeds[known]
    return labels


class StrokeCache:
    """What completing the strokes of one volume computed, kept in a file so that the next Update starts
    from it (a warm start): the network's probabilities (computed once per image and model, stored as
    float16), and the strokes with the walker's labels of the last call (2D plans: the slices whose
    strokes are unchanged keep them).  The file is only reused when the image, the model(s) and the
    completion's parameters are those it was written for; otherwise it is replaced.  A file that is
    not a stroke cache is never touched.
    """

    FORMAT = "weakseg-stroke-cache-1"

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if self.path.suffix != ".npz":
            raise ValueError(f"The stroke cache '{self.path}' must be a .npz file.")
        if self.path.is_dir():
            raise ValueError(f"The stroke cache '{self.path}' is a folder; give a .npz file's path.")

    def load(self, key: str) -> dict | None:
        """The cached arrays for ``key`` (``probabilities``, ``strokes``, ``walked``), or None when there is
        no cache yet or it was written for something else."""
        if not self.path.exists():
            return None
        foreign = ValueError(f"'{self.path}' is not a WeakSeg stroke cache; choose another cache file (it is left "
                             f"as it is).")
        try:
            data = np.load(self.path, allow_pickle=False)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile):
            raise foreign from None
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise foreign
        with data:
            if "format" not in data.files or str(data["format"]) != self.FORMAT:
                raise foreign
            if str(data["key"]) != key:
                return None
            return {name: data[name] for name in ("probabilities", "strokes", "walked")}

    def check(self) -> None:
        """Raise the error of :meth:`load` now if the file exists and is not a stroke cache."""
        self.load("")

    def save(self, key: str, probabilities: np.ndarray, strokes: np.ndarray, walked: np.ndarray) -> None:
        """Write the cache atomically (a kill leaves the old cache or the new one)."""
        self.check()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                np.savez(f, format=np.array(self.FORMAT), key=np.array(key),
                         probabilities=np.asarray(probabilities, np.float16), strokes=np.asarray(strokes, np.int16),
                         walked=np.asarray(walked, np.int16))
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)


def _cache_key(models, volume, parameters: Sequence) -> str:
    """A digest of what the cached probabilities and labels depend on: the networks' weights and plans,
    the image (voxels and geometry) and the completion's parameters."""
    digest = hashlib.sha256(StrokeCache.FORMAT.encode())
    for model in models:
        digest.update(json.dumps(model.plan.to_dict(), sort_keys=True).encode())
        for name, tensor in sorted(model.network.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    array = np.ascontiguousarray(volume.array)
    digest.update(f"{array.dtype}{array.shape}".encode())
    digest.update(array.tobytes())
    g = volume.geometry
    digest.update(repr((tuple(g.spacing_zyx), tuple(np.asarray(g.origin).ravel()),
                        tuple(np.asarray(g.direction).ravel()), tuple(parameters))).encode())
    return digest.hexdigest()


def complete_strokes(models, volume, strokes: np.ndarray, largest_component: bool | str = False,
                     prior_weight: float = STROKE_PRIOR_WEIGHT,
                     trusted_prior_weight: float | None = TRUSTED_PRIOR_WEIGHT,
                     agreement: float = STROKE_AGREEMENT, beta: float = 130.0,
                     cache: StrokeCache | str | os.PathLike | None = None):
    """The labels of ``volume`` from trained model(s) and the user's strokes on it, as a label Volume.

    ``models``: a :class:`~WeakSegLib.model.Model` or a list (an ensemble); ``strokes``: (z, y, x) class
    ids on the volume's grid, ``UNKNOWN`` (-1) where nothing is painted.  The network's probabilities
    are refined by :func:`refine_with_seeds` (walker per slice for 2D plans, per volume for 3D);
    ``largest_component`` keeps each class's largest component.  Every painted voxel keeps its label.
    ``cache``: a :class:`StrokeCache` (or its .npz path) for a warm start: the next call on the same
    volume and model reuses the network's probabilities and walks only the slices whose strokes changed
    (the result is the one a call with an empty cache gives).
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
    strokes = strokes.astype(np.int16)
    cache = StrokeCache(cache) if cache is not None and not isinstance(cache, StrokeCache) else cache
    key = _cache_key(models, volume, (prior_weight, trusted_prior_weight, agreement, beta)) if cache else ""
    state = cache.load(key) if cache else None
    if state is not None:
        probabilities = state["probabilities"].astype(np.float32)
    else:
        probabilities = predict_ensemble(models, volume, return_probabilities=True).probabilities.array
        if cache:   # what the cache will hold, so that a warm start gives the same labels as this call
            probabilities = probabilities.astype(np.float16).astype(np.float32)
    previous = (state["strokes"], state["walked"]) if state is not None else None
    walked, blocks = walk_from_seeds(probabilities, volume.array, strokes, volume.geometry.spacing_zyx,
                                     models[0].plan.dims, prior_weight, beta, trusted_prior_weight, agreement,
                                     previous)
    logger.info("Strokes completed: %s network probabilities, the walker on %d %s.",
                "cached" if state is not None else "new", blocks,
                "slice(s)" if models[0].plan.dims == 2 else "volume(s)")
    if cache:
        cache.save(key, probabilities, strokes, walked)
    return Volume(finish_with_seeds(walked, strokes, largest_component), volume.geometry)
