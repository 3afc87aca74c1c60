"""Pairwise (CRF) regularised loss: neighbouring voxels of similar intensity get the same label.

References: M. Tang, F. Perazzi, A. Djelouah, I. Ben Ayed, C. Schroers, Y. Boykov, "On regularized
losses for weakly-supervised CNN segmentation", ECCV 2018 (relaxed dense-CRF / Potts loss
``sum_k S_k^T W (1 - S_k)``); A. Obukhov, S. Georgoulis, D. Dai, L. Van Gool, "Gated CRF loss for
weakly supervised semantic image segmentation", 2019 (the same affinity restricted to a local
window, with a gate that removes pairs from the loss).

Scribbles say nothing about where a boundary lies; this term puts it on an intensity edge.  For the
softmax ``s`` and a Gaussian affinity ``w_ij`` between voxel ``i`` and each neighbour ``j`` of a local
window,

.. math:: L = \\frac{1}{N} \\sum_i \\sum_{j \\in N(i)} w_{ij} \\, (1 - s_i \\cdot s_j), \\qquad
          w_{ij} = \\exp\\Big(-\\frac{\\lVert I_i - I_j \\rVert^2}{2\\sigma_I^2}
                          -\\frac{\\lVert x_i - x_j \\rVert^2}{2\\sigma_x^2}\\Big) / Z,
          \\quad Z = \\sum_{j} e^{-\\lVert x_i - x_j\\rVert^2 / 2\\sigma_x^2}

which equals the relaxed Potts energy ``sum_k S_k^T W (1 - S_k)`` of Tang et al. on the window
(``sum_k s_ik s_jk`` is the probability that ``i`` and ``j`` take the same label).  Differences from
the references, on purpose:

* the window is local (as in the gated CRF), so the cost is linear in the number of voxels; a dense
  bilateral filter (Tang et al.) is not needed for the small medical patches trained here;
* distances are in millimetres when ``spacing`` is given (anisotropic volumes weigh a neighbour one
  thick slice away less than an in-plane neighbour);
* each pair is visited once (``j`` in one half of the window) and counted for both voxels, and pairs
  that fall outside the image or where either voxel is outside ``mask`` are dropped (the gate), so
  padding never pulls labels;
* the normalisation by the spatial kernel's sum keeps the value in ``[0, 1]`` whatever the radius.

The affinity depends on the image only and carries no gradient.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import nn

from WeakSegLib.losses._utils import check_logits, check_mask, check_reduction

__all__ = ["crf_loss", "CRFLoss", "crf_offsets"]


def crf_offsets(ndim: int, radius: int | Sequence[int]) -> list[tuple[int, ...]]:
    """The neighbour offsets of one half of a ``(2r+1)^ndim`` window (the other half is symmetric)."""
    radii = [int(radius)] * ndim if isinstance(radius, int) else [int(r) for r in radius]
    if len(radii) != ndim or any(r < 0 for r in radii) or not any(radii):
        raise ValueError(f"radius must be a non-negative int or one per spatial dim ({ndim}) with at least one "
                         f"> 0, got {radius!r}.")
    out = []
    for offset in itertools.product(*[range(-r, r + 1) for r in radii]):
        if any(offset) and offset > tuple(0 for _ in offset):     # lexicographically positive half
            out.append(offset)
    return out


def _shifted_views(x: torch.Tensor, offset: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(x at p, x at p + offset) over the positions where both lie inside the image; (B, C, *overlap)."""
    here, there = [slice(None), slice(None)], [slice(None), slice(None)]
    for d, n in zip(offset, x.shape[2:]):
        if d >= 0:
            here.append(slice(0, n - d))
            there.append(slice(d, n))
        else:
            here.append(slice(-d, n))
            there.append(slice(0, n + d))
    return x[tuple(here)], x[tuple(there)]


def _placed(values: torch.Tensor, offset: Sequence[int], here: bool) -> torch.Tensor:
    """Zero-pad an overlap map from :func:`_shifted_views` back to the full image (at p, or at p + offset)."""
    pad: list[int] = []
    for d in reversed(offset):                    # F.pad wants (last dim first) (before, after) pairs
        d = int(d)
        at_start = (d >= 0) == here               # "here" sits at the start of the axis when d >= 0
        pad += [abs(d), 0] if not at_start else [0, abs(d)]
    return torch.nn.functional.pad(values, pad)


def crf_loss(
    logits: torch.Tensor,
    image: torch.Tensor,
    radius: int | Sequence[int] = 2,
    sigma_intensity: float = 0.3,
    sigma_spatial: float = 3.0,
    spacing: Sequence[float] | None = None,
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Local relaxed-Potts CRF loss (see the module docstring).

    Args:
        logits: (B, C, H, W) or (B, C, D, H, W).
        image: (B, M, *spatial) intensities (M channels, e.g. z-scored MR; the intensity distance is
            summed over channels), same spatial shape as ``logits``.
        radius: window half-width in voxels, one int or one per spatial dim (0 = no neighbour along
            that axis, e.g. ``(0, 2, 2)`` for in-plane pairs only in 3D).
        sigma_intensity: intensity scale of the affinity, in the image's units.
        sigma_spatial: spatial scale, in mm when ``spacing`` is given, else in voxels.
        spacing: optional voxel size per spatial dim, in the order of the spatial dims.
        mask: optional (B, *spatial) bool; pairs with a voxel outside it are dropped (padding).
        reduction: ``"mean"`` over voxels (a value in [0, 1]), ``"sum"``, or ``"none"`` -> (B, *spatial)
            per-voxel energy (each pair counted at both its voxels, halved).
    """
    logits = check_logits(logits)
    check_reduction(reduction)
    spatial = tuple(logits.shape[2:])
    ndim = len(spatial)
    if not isinstance(image, torch.Tensor) or not image.is_floating_point():
        raise TypeError("image must be a floating point torch.Tensor of shape (B, M, *spatial).")
    if image.ndim != logits.ndim or image.shape[0] != logits.shape[0] or tuple(image.shape[2:]) != spatial:
        raise ValueError(f"image must have shape (B, M, *spatial) = ({logits.shape[0]}, M, "
                         f"{', '.join(map(str, spatial))}) to match logits {tuple(logits.shape)}, "
                         f"got {tuple(image.shape)}.")
    for name, value in (("sigma_intensity", sigma_intensity), ("sigma_spatial", sigma_spatial)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}.")
    if spacing is None:
        spacing = [1.0] * ndim
    spacing = [float(s) for s in spacing]
    if len(spacing) != ndim or any(not math.isfinite(s) or s <= 0 for s in spacing):
        raise ValueError(f"spacing must give {ndim} finite values > 0, got {spacing!r}.")
    valid = None if mask is None else check_mask(mask, logits).unsqueeze(1).float()

    probs = torch.softmax(logits, 1)
    image = image.detach().to(device=probs.device, dtype=probs.dtype)
    offsets = crf_offsets(ndim, radius)
    spatial_w = [math.exp(-sum((o * s) ** 2 for o, s in zip(off, spacing)) / (2.0 * sigma_spatial ** 2))
                 for off in offsets]
    norm = 2.0 * sum(spatial_w)                   # both halves of the window
    per_voxel = reduction == "none"
    energy = torch.zeros((logits.shape[0], 1, *spatial), dtype=probs.dtype, device=probs.device) if per_voxel \
        else None
    total = probs.sum() * 0.0
    for off, ws in zip(offsets, spatial_w):
        if ws < 1e-6:
            continue
        p_here, p_there = _shifted_views(probs, off)
        i_here, i_there = _shifted_views(image, off)
        w = torch.exp(-((i_here - i_there) ** 2).sum(1, keepdim=True) / (2.0 * sigma_intensity ** 2)) * ws
        if valid is not None:
            v_here, v_there = _shifted_views(valid, off)
            w = w * v_here * v_there
        pair = w * (1.0 - (p_here * p_there).sum(1, keepdim=True))
        if per_voxel:
            # Count the pair at both voxels (half each): the per-voxel map sums to the total.
            energy = energy + _placed(0.5 * pair, off, here=True) + _placed(0.5 * pair, off, here=False)
        else:
            total = total + pair.sum()
    if per_voxel:
        return energy[:, 0] * (2.0 / norm)
    total = total * (2.0 / norm)
    if reduction == "sum":
        return total
    count = float(logits.shape[0] * math.prod(spatial)) if valid is None else valid.sum().clamp_min(1.0)
    return total / count


class CRFLoss(nn.Module):
    """Module form of :func:`crf_loss`; ``forward(logits, image, mask=None)``."""

    def __init__(self, radius: int | Sequence[int] = 2, sigma_intensity: float = 0.3, sigma_spatial: float = 3.0,
                 spacing: Sequence[float] | None = None, reduction: str = "mean") -> None:
        super().__init__()
        self.radius, self.sigma_intensity, self.sigma_spatial = radius, sigma_intensity, sigma_spatial
        self.spacing = spacing
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return crf_loss(logits, image, self.radius, self.sigma_intensity, self.sigma_spatial, self.spacing, mask,
                        self.reduction)
