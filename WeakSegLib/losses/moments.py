"""Shape moments of the soft segmentation (volume, centroid, spread) and constraints on them.

Reference: H. Kervadec, H. Bahig, L. Letourneau-Guillon, J. Dolz, I. Ben Ayed, "Beyond
pixel-wise supervision for segmentation: A few global shape descriptors might be surprisingly
good!", MIDL 2021.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from WeakSegLib.losses._utils import (
    ConstraintLossModule,
    TensorLike,
    broadcast_bounds,
    check_logits,
    check_method,
    check_positive,
    check_reduction,
    check_t,
    resolve_groups,
    sum_by_group,
)
from WeakSegLib.losses.size import bounded_loss

__all__ = [
    "soft_moments",
    "centroid_constraint_loss",
    "spread_constraint_loss",
    "CentroidConstraintLoss",
    "SpreadConstraintLoss",
]


def _check_spacing(spacing: Sequence[float] | None, ndim: int) -> tuple[float, ...]:
    if spacing is None:
        return (1.0,) * ndim
    try:
        values = tuple(float(s) for s in spacing)
    except (TypeError, ValueError):
        raise TypeError(
            f"spacing must be a sequence of {ndim} floats (mm per voxel), got {spacing!r}."
        ) from None
    if len(values) != ndim:
        raise ValueError(
            f"spacing must have one value per spatial dim: expected {ndim}, got {len(values)} ({values})."
        )
    if not all(math.isfinite(s) and s > 0 for s in values):
        raise ValueError(f"spacing values must be finite and > 0, got {values}.")
    return values


def soft_moments(
    probs: torch.Tensor,
    spacing: Sequence[float] | None = None,
    groups: torch.Tensor | None = None,
    num_groups: int | None = None,
    eps: float = 1e-8,
) -> dict[str, torch.Tensor]:
    r"""Soft volume, centroid and spread of each class in each region.

    With :math:`x_{p,d} = i_{p,d}\,\delta_d` the coordinate (mm) of voxel p along spatial axis d
    (index times ``spacing[d]``, axes in the tensor's order) and :math:`m = \sum_p s_{c,p}`:

    .. math::

        \mu_d = \frac{\sum_p s_{c,p}\, x_{p,d}}{m + \epsilon}, \qquad
        \sigma^2_d = \frac{\sum_p s_{c,p}\,(x_{p,d} - \mu_d)^2}{m + \epsilon}

    Sums run over every item of a region (``groups``); for groups of 2D items (slices of a
    volume) the moments are over the item's own spatial dims (H, W): the slice index is not a
    coordinate. ``eps`` makes an empty class (m = 0) give centroid and spread 0, without NaN.

    Args:
        probs: (B, C, H, W) or (B, C, D, H, W) probabilities.
        spacing: voxel size (mm) per spatial dim, in the tensor's axis order; None = 1.
        groups, num_groups: optional region ids (B,) and G (None: G = B).
        eps: > 0.

    Returns:
        dict with ``"volume"`` (G, C) in voxels, ``"volume_mm"`` (G, C) in mm^ndim (volume times
        the voxel volume), ``"centroid"`` (G, C, ndim) in mm and ``"spread"`` (G, C, ndim) in mm^2.
    """
    probs = check_logits(probs, name="probs")
    eps = check_positive(eps, "eps")
    ndim = probs.ndim - 2
    spacing = _check_spacing(spacing, ndim)
    groups, num = resolve_groups(groups, probs.shape[0], num_groups)
    if groups is not None:
        groups = groups.to(probs.device)

    def reduce_groups(x: torch.Tensor) -> torch.Tensor:
        return sum_by_group(x, groups, num)

    spatial = tuple(range(2, probs.ndim))
    mass = reduce_groups(probs.sum(spatial))
    denominator = mass + eps
    marginals = []
    centroid = []
    for d in range(ndim):
        others = tuple(a for a in spatial if a != d + 2)
        marginal = probs.sum(others) if others else probs
        coords = torch.arange(probs.shape[d + 2], dtype=probs.dtype, device=probs.device) * spacing[d]
        centroid.append(reduce_groups((marginal * coords).sum(-1)) / denominator)
        marginals.append((marginal, coords))
    spread = []
    for d, (marginal, coords) in enumerate(marginals):
        mu = centroid[d] if groups is None else centroid[d][groups]
        second = reduce_groups((marginal * (coords - mu.unsqueeze(-1)) ** 2).sum(-1))
        spread.append(second / denominator)
    return {
        "volume": mass,
        "volume_mm": mass * float(math.prod(spacing)),
        "centroid": torch.stack(centroid, dim=-1),
        "spread": torch.stack(spread, dim=-1),
    }


def _moment_constraint(
    kind: str,
    logits: torch.Tensor,
    lower: TensorLike,
    upper: TensorLike,
    active: torch.Tensor | None,
    spacing: Sequence[float] | None,
    groups: torch.Tensor | None,
    num_groups: int | None,
    method: str,
    t: float,
    reduction: str,
    eps: float,
) -> torch.Tensor:
    logits = check_logits(logits)
    check_method(method)
    check_reduction(reduction)
    t = check_t(t)
    ndim = logits.ndim - 2
    spacing = _check_spacing(spacing, ndim)
    groups, num = resolve_groups(groups, logits.shape[0], num_groups, (lower, upper, active))
    moments = soft_moments(torch.softmax(logits, dim=1), spacing, groups, num, eps)
    value = moments[kind]
    if isinstance(active, torch.Tensor) and active.ndim == 2:
        active = active.unsqueeze(-1)
    low, up, act = broadcast_bounds(lower, upper, active, value)
    if bool(torch.isnan(low).any() | torch.isnan(up).any()):
        raise ValueError("lower and upper must not contain NaN (use -inf / inf for a missing side).")
    if bool((act & (low > up)).any()):
        raise ValueError("lower must be <= upper for every active constraint.")
    sizes = zip(logits.shape[2:], spacing, strict=True)
    extent, last = (
        torch.tensor(v, dtype=value.dtype, device=value.device)
        for v in zip(*[(n * s, (n - 1) * s) for n, s in sizes], strict=True)
    )
    if kind == "centroid":
        scale, upper_max = extent, last
    else:
        scale, upper_max = extent**2, last**2 / 4.0
    # every distribution on the image has 0 <= value <= upper_max (see size_log_barrier)
    return bounded_loss(value, low, up, act, scale, upper_max, method, t, reduction)


def centroid_constraint_loss(
    logits: torch.Tensor,
    lower: TensorLike,
    upper: TensorLike,
    active: torch.Tensor | None = None,
    spacing: Sequence[float] | None = None,
    groups: torch.Tensor | None = None,
    method: str = "penalty",
    t: float = 5.0,
    reduction: str = "mean",
    num_groups: int | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    r"""Centroid constraint :math:`a_{g,c,d} \le \mu_{g,c,d} \le b_{g,c,d}` (mm), Kervadec et al. MIDL 2021.

    With :math:`E_d = n_d \delta_d` the extent (mm) of the image along axis d, the constraint
    values are normalised as :math:`z = (a - \mu)/E_d` and :math:`z = (\mu - b)/E_d` (O(1)) and
    evaluated by :math:`\mathrm{relu}(z)^2` or :math:`\tilde\psi_t(z)`. Sides that always hold
    (``lower <= 0``, ``upper >= (n_d - 1) spacing_d``, infinite bounds) are skipped.

    Args:
        logits: (B, C, H, W) or (B, C, D, H, W).
        lower, upper: bounds in mm, broadcastable to (G, C, ndim).
        active: (G, C) (all axes) or (G, C, ndim) bool; None = all active.
        spacing: voxel size (mm) per spatial dim (tensor axis order); None = 1.
        groups: optional (B,) region ids (None: G = B); see :func:`soft_moments`.
        method, t: ``"penalty"`` or ``"log_barrier"`` and its parameter.
        reduction: ``"mean"`` over active (g, c, d) constraints, ``"sum"``, ``"none"`` -> (G, C, ndim).
        num_groups: G; default ``max(groups.max() + 1, lower.shape[0])`` for (G, C, ndim) bounds.
        eps: see :func:`soft_moments` (an empty class has centroid 0).
    """
    return _moment_constraint(
        "centroid", logits, lower, upper, active, spacing, groups, num_groups, method, t, reduction, eps
    )


def spread_constraint_loss(
    logits: torch.Tensor,
    lower: TensorLike,
    upper: TensorLike,
    active: torch.Tensor | None = None,
    spacing: Sequence[float] | None = None,
    groups: torch.Tensor | None = None,
    method: str = "penalty",
    t: float = 5.0,
    reduction: str = "mean",
    num_groups: int | None = None,
    eps: float = 1e-8,
) -> torch.Tensor:
    r"""Spread constraint :math:`a \le \sigma^2_{g,c,d} \le b` (mm^2), Kervadec et al. MIDL 2021.

    As :func:`centroid_constraint_loss` with the second central moments of :func:`soft_moments`
    and the normalisation :math:`z = (a - \sigma^2)/E_d^2`, :math:`z = (\sigma^2 - b)/E_d^2`.
    Sides that always hold (``lower <= 0``, ``upper >= ((n_d - 1) spacing_d)^2 / 4``) are skipped.
    """
    return _moment_constraint(
        "spread", logits, lower, upper, active, spacing, groups, num_groups, method, t, reduction, eps
    )


class _MomentConstraintLoss(ConstraintLossModule):
    _fn = staticmethod(centroid_constraint_loss)

    def __init__(
        self,
        spacing: Sequence[float] | None = None,
        method: str = "penalty",
        t: float = 5.0,
        reduction: str = "mean",
        eps: float = 1e-8,
    ) -> None:
        spacing = None if spacing is None else tuple(float(s) for s in spacing)
        super().__init__(method, t, reduction)
        self.spacing = spacing
        self.eps = check_positive(eps, "eps")

    def forward(
        self,
        logits: torch.Tensor,
        lower: TensorLike,
        upper: TensorLike,
        active: torch.Tensor | None = None,
        groups: torch.Tensor | None = None,
        num_groups: int | None = None,
        spacing: Sequence[float] | None = None,
    ) -> torch.Tensor:
        spacing = self.spacing if spacing is None else spacing
        return type(self)._fn(
            logits,
            lower,
            upper,
            active,
            spacing,
            groups,
            method=self.method,
            t=self.t,
            reduction=self.reduction,
            num_groups=num_groups,
            eps=self.eps,
        )


class CentroidConstraintLoss(_MomentConstraintLoss):
    """Module form of :func:`centroid_constraint_loss`.

    ``forward(logits, lower, upper, active=None, groups=None, num_groups=None, spacing=None)``;
    a ``spacing`` given to forward overrides the one given here.
    """

    _fn = staticmethod(centroid_constraint_loss)


class SpreadConstraintLoss(_MomentConstraintLoss):
    """Module form of :func:`spread_constraint_loss` (same arguments as :class:`CentroidConstraintLoss`)."""

    _fn = staticmethod(spread_constraint_loss)
