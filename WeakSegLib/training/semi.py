"""The maths shared by the learning modes (:mod:`WeakSegLib.training.modes`), as plain functions.

Schedules (sigmoid ramp-up, EMA decay, SMILEr threshold), the mean teacher's EMA update,
MixMatch's sharpening and mixup, input perturbations (intensity jitter, flips, cutout),
soft-target losses, and the relabeling rules of SMILEr, CAM pseudo-masks and box rounds.
Every function takes tensors in the trainer's layout — images ``(B, C, *spatial)``, logits
``(B, K, *spatial)``, label maps ``(*spatial)`` int64 with ``-1`` = unknown — works in 2D and 3D,
and draws its randomness from a given :class:`torch.Generator` (runs stay reproducible and
resumable).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from WeakSegLib.data.annotation import UNKNOWN

__all__ = [
    "sigmoid_rampup",
    "ema_decay",
    "ema_update",
    "sharpen",
    "mixup",
    "sample_beta",
    "soft_cross_entropy",
    "soft_target_mse",
    "masked_cross_entropy",
    "intensity_perturbation",
    "random_flip_dims",
    "cutout",
    "rms_normalise",
    "smiler_threshold",
    "smiler_relabel",
    "normalise_cam",
    "cam_pseudo_labels",
    "box_round_labels",
]


# ------------------------------------------------------------------------------------ schedules
def sigmoid_rampup(progress: float, length: float) -> float:
    r"""Weight ramp-up of Laine & Aila (ICLR 2017): :math:`\exp(-5 (1 - t)^2)`, :math:`t = \mathrm{clip}(p / L, 0, 1)`.

    ``progress`` and ``length`` are in the same unit (here: fractions of the training budget);
    ``length <= 0`` means no ramp-up (weight 1 from the start).
    """
    if length <= 0:
        return 1.0
    t = min(max(float(progress) / float(length), 0.0), 1.0)
    return float(math.exp(-5.0 * (1.0 - t) ** 2))


def ema_decay(step: int, decay: float) -> float:
    """Mean teacher's decay at optimiser step ``step`` (0-based): ``min(1 - 1 / (step + 1), decay)``.

    The warm-up makes the teacher the plain average of the students while ``step`` is small
    (Tarvainen & Valpola's implementation), so it is not stuck at the random initialisation.
    """
    return min(1.0 - 1.0 / (int(step) + 1), float(decay))


@torch.no_grad()
def ema_update(teacher: torch.nn.Module, student: torch.nn.Module, decay: float) -> None:
    r"""In place: :math:`\theta_T \leftarrow d\,\theta_T + (1 - d)\,\theta_S` for every parameter; buffers copied."""
    for t, s in zip(teacher.parameters(), student.parameters(), strict=True):
        t.mul_(decay).add_(s.detach().to(t.dtype), alpha=1.0 - decay)
    for t, s in zip(teacher.buffers(), student.buffers(), strict=True):
        t.copy_(s)


def smiler_threshold(round_index: int, start: float = 0.95, step: float = 0.05, minimum: float = 0.8) -> float:
    r"""SMILEr's confidence threshold for relabeling round ``t`` (0-based).

    :math:`\gamma_t = \max(\gamma_{min}, \gamma_0 - t\,\delta)`: a strict threshold
    first, loosened round after round as the model improves.
    """
    return max(float(minimum), float(start) - int(round_index) * float(step))


# ------------------------------------------------------------------------------------ MixMatch
def sharpen(probs: torch.Tensor, temperature: float, dim: int = 1) -> torch.Tensor:
    r"""MixMatch's sharpening :math:`p_c^{1/T} / \sum_k p_k^{1/T}` along ``dim`` (T -> 0: one-hot)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    # In log space: p ** (1 / T) underflows float32 for small T.
    return torch.softmax(torch.log(probs.clamp_min(1e-30)) / float(temperature), dim)


def mixup(x_a: torch.Tensor, y_a: torch.Tensor, x_b: torch.Tensor, y_b: torch.Tensor, lam: float
          ) -> tuple[torch.Tensor, torch.Tensor, float]:
    r"""MixMatch's mixup: :math:`\lambda' = \max(\lambda, 1 - \lambda)`, inputs and targets mixed with :math:`\lambda'`.

    Returns ``(x, y, lambda')`` with :math:`x = \lambda' x_a + (1 - \lambda') x_b` (same for ``y``):
    the result stays closer to ``a``, so labelled rows stay mostly labelled.
    """
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must be in [0, 1], got {lam}.")
    lam = max(float(lam), 1.0 - float(lam))
    return lam * x_a + (1.0 - lam) * x_b, lam * y_a + (1.0 - lam) * y_b, lam


def sample_beta(alpha: float, generator: torch.Generator) -> float:
    """One draw of Beta(alpha, alpha), seeded from ``generator`` (torch has no seeded Beta sampler)."""
    seed = int(torch.randint(0, 2**31 - 1, (), generator=generator))
    return float(np.random.default_rng(seed).beta(alpha, alpha))


# ------------------------------------------------------------------------------------ losses
def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None
                       ) -> torch.Tensor:
    r"""Cross-entropy with soft targets :math:`-\sum_c q_c \log s_c`, mean over the voxels of ``mask`` (B, *spatial)."""
    values = -(target * torch.log_softmax(logits.float(), 1)).sum(1)
    if mask is None:
        return values.mean()
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp_min(1.0)


def soft_target_mse(probs: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    r"""MSE of probabilities against soft targets, :math:`\frac{1}{K}\sum_c (s_c - q_c)^2` per voxel.

    ``probs``, ``target``: (B, K, *spatial) probabilities; ``mask``: optional (B, *spatial) bool.
    Mean over every element without ``mask``, else mean over the voxels of ``mask`` (0 if none).
    """
    squared = (probs - target) ** 2
    if mask is None:
        return squared.mean()
    values = squared.mean(1)
    return (values * mask).sum() / mask.sum().clamp_min(1)


def masked_cross_entropy(logits: torch.Tensor, target: torch.Tensor, mask: torch.Tensor,
                         scope: torch.Tensor | None = None) -> torch.Tensor:
    r"""Hard-target CE on the voxels of ``mask``, *normalised by the voxels of* ``scope`` (default: all).

    As FixMatch's :math:`\frac{1}{\mu B}\sum 1(\max q \ge \tau)\,H(\hat q, p)`: few confident voxels
    give a small loss, not a loud one.
    """
    values = F.cross_entropy(logits.float(), target.clamp_min(0), reduction="none")
    mask = mask.to(values.dtype)
    denom = values.numel() if scope is None else scope.to(values.dtype).sum()
    return (values * mask).sum() / max(float(denom), 1.0)


# ------------------------------------------------------------------------------------ perturbations
def _uniform(gen: torch.Generator, n: int, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=gen)


def intensity_perturbation(x: torch.Tensor, generator: torch.Generator, scale: float = 0.1, shift: float = 0.1,
                           noise: float = 0.1) -> torch.Tensor:
    """Per item: ``x * U(1 - scale, 1 + scale) + U(-shift, shift) + N(0, noise^2)`` (normalised intensities)."""
    b = x.shape[0]
    shape = (b,) + (1,) * (x.ndim - 1)
    s = _uniform(generator, b, 1.0 - scale, 1.0 + scale).view(shape).to(x.device, x.dtype)
    t = _uniform(generator, b, -shift, shift).view(shape).to(x.device, x.dtype)
    out = x * s + t
    if noise > 0:
        out = out + torch.randn(x.shape, generator=generator).to(x.device, x.dtype) * noise
    return out


def random_flip_dims(generator: torch.Generator, ndim: int, p: float = 0.5) -> list[int]:
    """Spatial dims (2 .. ndim - 1) of a (B, C, *spatial) tensor to flip, each with probability ``p``."""
    return [d for d in range(2, ndim) if float(torch.rand((), generator=generator)) < p]


def cutout(x: torch.Tensor, generator: torch.Generator, fraction: float) -> torch.Tensor:
    """Per item, zero one random box whose sides are ``fraction`` of the spatial sizes (DeVries & Taylor 2017)."""
    if fraction <= 0:
        return x
    out = x.clone()
    spatial = x.shape[2:]
    for i in range(x.shape[0]):
        region = []
        for n in spatial:
            size = max(1, int(round(n * fraction)))
            start = int(torch.randint(0, max(n - size, 0) + 1, (), generator=generator))
            region.append(slice(start, start + size))
        out[(i, slice(None), *region)] = 0
    return out


def rms_normalise(d: torch.Tensor) -> torch.Tensor:
    """Scale each item of ``d`` (B, ...) to a root-mean-square of 1 (a per-voxel perturbation size)."""
    rms = d.flatten(1).pow(2).mean(1).sqrt().clamp_min(1e-12)
    return d / rms.view((-1,) + (1,) * (d.ndim - 1))


# ------------------------------------------------------------------------------------ relabeling
def smiler_relabel(labels: torch.Tensor, probs: torch.Tensor, complete: torch.Tensor, gamma: float,
                   ignore_index: int = UNKNOWN) -> tuple[torch.Tensor, int]:
    r"""SMILEr relabeling of one volume (Petit et al. 2018).

    A voxel that is unknown in ``labels`` becomes class :math:`c \ge 1` when :math:`p_c \ge \gamma`
    and the mask of ``c`` is *not* complete in this volume; annotated voxels and complete classes
    are never touched, background is never added.  With :math:`\gamma > 0.5` at most one class
    qualifies per voxel.

    Args:
        labels: (*spatial) int64, ``ignore_index`` = unknown.
        probs: (K, *spatial) softmax probabilities.
        complete: (K,) bool.
        gamma: threshold in (0.5, 1].

    Returns:
        ``(new_labels, number of voxels added)``.
    """
    if not 0.5 < gamma <= 1.0:
        raise ValueError(f"gamma must be in (0.5, 1], got {gamma}.")
    if probs.shape[1:] != labels.shape or complete.shape != (probs.shape[0],):
        raise ValueError(f"probs must be (K, *spatial) with spatial {tuple(labels.shape)} and complete (K,), "
                         f"got {tuple(probs.shape)} and {tuple(complete.shape)}.")
    out = labels.clone()
    unknown = labels == ignore_index
    added = 0
    for c in range(1, probs.shape[0]):
        if bool(complete[c]):
            continue
        sel = unknown & (probs[c] >= gamma)
        out[sel] = c
        added += int(sel.sum())
    return out, added


def normalise_cam(cam: torch.Tensor, dims: Sequence[int] | None = None) -> torch.Tensor:
    r"""Min-max normalisation of class activation maps to [0, 1] over ``dims`` (default: all but the first).

    :math:`\tilde M_c = (M_c - \min M_c) / (\max M_c - \min M_c)`; a constant map becomes 0.
    """
    dims = tuple(range(1, cam.ndim)) if dims is None else tuple(dims)
    lo = cam.amin(dim=dims, keepdim=True)
    hi = cam.amax(dim=dims, keepdim=True)
    return (cam - lo) / (hi - lo).clamp_min(1e-12) * (hi > lo)


def cam_pseudo_labels(cam: torch.Tensor, status: torch.Tensor, fg_threshold: float = 0.6,
                      bg_threshold: float = 0.1, max_voxels: dict[int, float] | None = None) -> torch.Tensor:
    r"""Pseudo-mask of one volume from its normalised CAMs (Zhou et al. 2016) and its tags.

    * class :math:`c \ge 1` where the tag says present, :math:`\tilde M_c \ge` ``fg_threshold`` and
      :math:`c` has the largest CAM of the present classes; with ``max_voxels[c]`` (e.g. the lower
      bound of a size range) only the ``max_voxels[c]`` most activated of those voxels are kept;
    * background where every class that may be present (tag present or unknown) has
      :math:`\tilde M_c \le` ``bg_threshold``;
    * unknown (-1) elsewhere.  A class tagged absent is never assigned.

    Args:
        cam: (K, *spatial) normalised CAMs (channel 0, background, is not used).
        status: (K, *spatial) int, broadcastable: 1 present, 0 absent, -1 unknown (per voxel, so
            slice tags can differ along z).
    """
    k = cam.shape[0]
    status = torch.broadcast_to(status, cam.shape)
    out = torch.full(cam.shape[1:], UNKNOWN, dtype=torch.long, device=cam.device)
    present = status == 1
    fg_cam = torch.where(present, cam, torch.full_like(cam, -1.0))
    fg_cam[0] = -1.0
    best_value, best_class = fg_cam.max(0)
    for c in range(1, k):
        sel = (best_class == c) & (best_value >= fg_threshold)
        if max_voxels is not None and c in max_voxels:
            n = int(max_voxels[c])
            if n <= 0:
                sel = torch.zeros_like(sel)
            elif int(sel.sum()) > n:
                values = cam[c][sel]
                cut = torch.topk(values, n).values[-1]
                sel = sel & (cam[c] >= cut)
        out[sel] = c
    maybe = status[1:] != 0
    activation = torch.where(maybe, cam[1:], torch.zeros_like(cam[1:])).amax(0) if k > 1 else cam[0] * 0
    out[(activation <= bg_threshold) & (out == UNKNOWN)] = 0
    return out


def certain_background_outside_boxes(boxes: Sequence[tuple[int, Sequence[int], Sequence[int]]], absent,
                                     num_classes: int, shape, device=None) -> torch.Tensor | None:
    """Mask of the voxels outside every box, or None when they are not certainly background.

    They are when every foreground class has a box or is tagged ``absent``; otherwise an unboxed
    class may lie anywhere.  Shared by the objective's background labels and the box rounds.
    """
    known = {int(c) for c, _, _ in boxes} | {int(c) for c in absent}
    if not all(c in known for c in range(1, num_classes)):
        return None
    inside = torch.zeros(tuple(shape), dtype=torch.bool, device=device)
    for _, start, stop in boxes:
        inside[tuple(slice(int(a), int(b)) for a, b in zip(start, stop))] = True
    return ~inside


def box_round_labels(probs: torch.Tensor, boxes: Sequence[tuple[int, Sequence[int], Sequence[int]]],
                     absent: Sequence[int] = (), min_confidence: float = 0.5, min_fill: float = 0.1,
                     core_scale: float = 0.45, background_in_box: bool = True) -> torch.Tensor:
    r"""Next round's pseudo-labels of one volume from the model's prediction and its boxes (Khoreva et al. 2017).

    * outside every box: background, when every foreground class has a box or is tagged ``absent``
      (otherwise unknown: an unboxed class may be there);
    * inside a box of class ``c``: ``c`` where the model predicts ``c`` with probability
      :math:`\ge` ``min_confidence``; background where it confidently predicts background
      (``background_in_box``); unknown elsewhere;
    * a box whose predicted ``c`` fills less than ``min_fill`` of it is *reset*: its voxels become
      unknown and its centred core (``core_scale`` of each side) becomes ``c`` — Khoreva's rule
      that a too-small segment returns to the box's initial label.

    Args:
        probs: (K, *spatial) softmax probabilities.
        boxes: ``(class, start, stop)`` in voxels, half-open, one entry per spatial axis.
    """
    k = probs.shape[0]
    spatial = probs.shape[1:]
    conf, pred = probs.max(0)
    confident = conf >= min_confidence
    out = torch.full(spatial, UNKNOWN, dtype=torch.long, device=probs.device)
    in_class = torch.zeros((k, *spatial), dtype=torch.bool, device=probs.device)
    regions = []
    for c, start, stop in boxes:
        region = tuple(slice(int(a), int(b)) for a, b in zip(start, stop))
        regions.append((int(c), region))
        in_class[(int(c), *region)] = True
    boxed = {c for c, _ in regions}
    outside = certain_background_outside_boxes(boxes, absent, k, spatial, probs.device)
    if outside is not None:
        out[outside] = 0
    if background_in_box:
        out[in_class.any(0) & confident & (pred == 0)] = 0
    for c in sorted(boxed):
        out[in_class[c] & confident & (pred == c)] = c
    for c, region in regions:
        if float((pred[region] == c).float().mean()) >= min_fill:
            continue
        view = out[region]
        view[(view == 0) | (view == c)] = UNKNOWN
        core = []
        for sl in region:
            n = sl.stop - sl.start
            size = max(1, int(round(n * core_scale)))
            lo = sl.start + (n - size) // 2
            core.append(slice(lo, lo + size))
        core_view = out[tuple(core)]
        core_view[core_view == UNKNOWN] = c
    return out
