"""Size constraints, their relative formulation and the log-barrier extension.

:func:`relative_bound_loss` is the one formulation of the size-like priors (size ranges here, image
tags in :mod:`~WeakSegLib.losses.tags`, box fill fractions in :mod:`~WeakSegLib.losses.box`): each
side of ``lower <= value <= upper`` is normalised by its own bound.

References
----------
* H. Kervadec, J. Dolz, M. Tang, E. Granger, Y. Boykov, I. Ben Ayed, "Constrained-CNN losses for
  weakly supervised segmentation", Medical Image Analysis 54, 2019 (size penalty).
* H. Kervadec, J. Dolz, J. Yuan, C. Desrosiers, E. Granger, I. Ben Ayed, "Constrained deep
  networks: Lagrangian optimization via log-barrier extensions", Medical Image Analysis, 2022
  (log-barrier extension :func:`log_barrier`).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch

from WeakSegLib.losses._utils import (
    ConstraintLossModule,
    TensorLike,
    broadcast_bounds,
    broadcast_param,
    check_logits,
    check_method,
    check_reduction,
    check_t,
    check_tensor,
    masked_reduce,
    region_sizes,
    resolve_groups,
    sum_by_group,
)

__all__ = [
    "log_barrier",
    "LogBarrierSchedule",
    "inequality_loss",
    "soft_size",
    "size_penalty",
    "size_log_barrier",
    "size_constraint_loss",
    "SizeConstraintLoss",
    "relative_bound_loss",
    "size_proposal_labels",
    "size_proposal_loss",
]

logger = logging.getLogger(__name__)


def log_barrier(z: torch.Tensor, t: float = 5.0) -> torch.Tensor:
    r"""Log-barrier extension :math:`\tilde\psi_t(z)` of the constraint :math:`z \le 0`.

    .. math::

        \tilde\psi_t(z) = \begin{cases}
            -\frac{1}{t}\log(-z) & z \le -\frac{1}{t^2} \\
            t z - \frac{1}{t}\log\frac{1}{t^2} + \frac{1}{t} & \text{otherwise}
        \end{cases}

    (Kervadec et al., MedIA 2022, eq. 7). The extension is C1: value and slope ``t`` match at
    ``z = -1/t^2``; it is linear (finite) for feasible-but-close and for violated constraints.

    Implemented with :func:`torch.where` on *safe* inputs: the log branch is evaluated on
    ``min(z, -1/t^2)``, so neither the value nor the gradient is NaN/Inf for any finite ``z``,
    including ``z = 0`` (the reference implementation evaluates ``log(-z)`` on the raw input).

    Args:
        z: tensor of constraint values (any shape); the constraint is ``z <= 0``.
        t: barrier parameter (> 0). Larger ``t`` approximates the hard constraint better.

    Returns:
        Tensor of the shape of ``z``.
    """
    check_tensor(z, "z")
    t = check_t(t)
    threshold = -1.0 / (t * t)
    z_log = z.clamp(max=threshold)
    log_branch = -torch.log(-z_log) / t
    linear_branch = t * z + (2.0 * math.log(t) + 1.0) / t
    return torch.where(z <= threshold, log_branch, linear_branch)


class LogBarrierSchedule:
    """Schedule of the log-barrier parameter ``t``: ``t <- min(t * factor, t_max)`` at each :meth:`step`.

    The reference implementation (Kervadec et al., MedIA 2022) multiplies ``t`` by ``factor``
    every epoch without bound; with long trainings ``t`` then explodes (gradients of magnitude
    ``t`` on violated constraints, overflow in float16). We cap it at ``t_max``.

    Example::

        schedule = LogBarrierSchedule(t0=5.0, factor=1.1, t_max=1000.0)
        loss_fn = SizeConstraintLoss(method="log_barrier", t=schedule.t)
        for epoch in range(num_epochs):
            ...  # train with loss_fn
            loss_fn.t = schedule.step()
    """

    def __init__(self, t0: float = 5.0, factor: float = 1.1, t_max: float = 1000.0) -> None:
        t0 = check_t(t0)
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor):
            raise TypeError(f"factor must be a finite float >= 1, got {factor!r}.")
        if factor < 1.0:
            raise ValueError(f"factor must be >= 1 (t grows), got {factor}.")
        t_max = check_t(t_max)
        if t_max < t0:
            raise ValueError(f"t_max must be >= t0, got t_max={t_max} < t0={t0}.")
        self.t0 = t0
        self.factor = float(factor)
        self.t_max = t_max
        self._t = t0

    @property
    def t(self) -> float:
        """Current value of ``t``."""
        return self._t

    def step(self) -> float:
        """Multiply ``t`` by ``factor`` (capped at ``t_max``) and return the new value."""
        new_t = min(self._t * self.factor, self.t_max)
        if new_t == self.t_max and self._t < self.t_max:
            logger.debug("log-barrier t reached its cap t_max=%g", self.t_max)
        self._t = new_t
        return self._t

    def state_dict(self) -> dict[str, float]:
        """Plain dict with ``t``, ``t0``, ``factor`` and ``t_max``."""
        return {"t": self._t, "t0": self.t0, "factor": self.factor, "t_max": self.t_max}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a state produced by :meth:`state_dict`."""
        missing = {"t", "t0", "factor", "t_max"} - set(state)
        if missing:
            raise ValueError(f"state dict is missing keys {sorted(missing)}; got keys {sorted(state)}.")
        self.__init__(t0=float(state["t0"]), factor=float(state["factor"]), t_max=float(state["t_max"]))
        t = check_t(float(state["t"]))
        self._t = min(t, self.t_max)

    def __repr__(self) -> str:
        return (
            f"LogBarrierSchedule(t={self._t:g}, t0={self.t0:g}, factor={self.factor:g}, t_max={self.t_max:g})"
        )


def inequality_loss(
    value: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    scale: torch.Tensor | float,
    lower_on: torch.Tensor,
    upper_on: torch.Tensor,
    method: str = "penalty",
    t: float = 5.0,
) -> torch.Tensor:
    r"""Elementwise loss of ``lower <= value <= upper`` in units of a common ``scale``.

    The form of the constraints whose natural unit is a fixed scale (moments in mm, the box
    emptiness and tightness terms); size-like bounds use :func:`relative_bound_loss`.

    With :math:`z_\ell = (a - V)/n` and :math:`z_u = (V - b)/n` (``n = scale``):

    * ``"penalty"``: :math:`\mathrm{relu}(z_\ell)^2 + \mathrm{relu}(z_u)^2`;
    * ``"log_barrier"``: :math:`\tilde\psi_t(z_\ell) + \tilde\psi_t(z_u)` (:func:`log_barrier`).

    A side whose ``*_on`` flag is False contributes exactly 0: its bound is replaced by a safe
    value *before* the maths, so infinite bounds never produce NaN values or gradients.
    All arguments broadcast to the shape of ``value``, which is the output shape.
    """
    zero = torch.zeros((), dtype=value.dtype, device=value.device)
    lower = torch.where(lower_on, lower, zero)
    upper = torch.where(upper_on, upper, zero)
    z_low = (lower - value) / scale
    z_up = (value - upper) / scale
    if method == "penalty":
        low = torch.relu(z_low) ** 2
        up = torch.relu(z_up) ** 2
    else:
        low = log_barrier(z_low, t)
        up = log_barrier(z_up, t)
    return torch.where(lower_on, low, zero) + torch.where(upper_on, up, zero)


def bounded_loss(
    value: torch.Tensor,
    lower: torch.Tensor,
    upper: torch.Tensor,
    active: torch.Tensor,
    scale: torch.Tensor,
    upper_max: torch.Tensor | None,
    method: str,
    t: float,
    reduction: str,
) -> torch.Tensor:
    """:func:`inequality_loss` of ``lower <= value <= upper`` reduced over the ``active`` constraints.

    ``value`` (>= 0 by construction), ``lower``, ``upper``, ``active`` (bool) and ``scale`` share one
    shape, which ``"none"`` returns. Sides that every value satisfies are switched off, so that the
    log-barrier does not push feasible values away from them: infinite bounds, ``lower <= 0`` and
    ``upper >= upper_max`` (the largest possible value; None = no such cap).
    """
    lower_on = active & torch.isfinite(lower) & (lower > 0)
    upper_on = active & torch.isfinite(upper)
    if upper_max is not None:
        upper_on = upper_on & (upper < upper_max)
    values = inequality_loss(value, lower, upper, scale, lower_on, upper_on, method=method, t=t)
    return masked_reduce(values, active, reduction)


def relative_bound_loss(
    value: torch.Tensor,
    lower: TensorLike,
    upper: TensorLike,
    active: torch.Tensor | bool | None = None,
    value_max: TensorLike | None = None,
    method: str = "penalty",
    t: float = 5.0,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Elementwise loss of ``lower <= value <= upper`` measured as *relative* violations.

    The one formulation of the size-like priors: :func:`size_constraint_loss`,
    :func:`~WeakSegLib.losses.tags.tag_constraint_loss` and :func:`~WeakSegLib.losses.box.box_size_loss`
    evaluate their constraints here. Each side is normalised by its own bound,

    .. math::

        z_\ell = \frac{a - V}{\max(a, f)}, \qquad z_u = \frac{V - b}{\max(b, f)}, \qquad
        f = \max(1, 10^{-3} n)

    with :math:`n` = ``value_max`` (the largest possible value, e.g. the voxels of the region); the
    floor :math:`f` measures a bound of 0 (suppression) or of a few voxels against 0.1 % of the region.
    Each side that is on costs :math:`\rho(z_\ell) + \rho(z_u)` with

    * ``"penalty"`` (Kervadec et al., MedIA 2019, made relative): :math:`\rho(z) = r^2` for
      :math:`r = \mathrm{relu}(z) \le 1` and :math:`2r - 1` beyond (C1, bounded slope 2 for a
      prediction far too large);
    * ``"log_barrier"`` (Kervadec et al., MedIA 2022): :math:`\rho(z) = \tilde\psi_t(z)`
      (:func:`log_barrier`); it is negative on the far feasible side of a lower bound (:math:`V > 2a`).

    Why relative: a 50 % error costs 0.25 whatever the organ's and the image's size, and ``t`` keeps
    one meaning. Normalising by the region size instead (:math:`(a - V)/n`) makes a small organ's
    bound nearly free: a 5 mL organ in a 1 L image predicted empty costs :math:`(5/1000)^2 = 2.5 \cdot 10^{-5}`.

    Sides every value satisfies are off (exactly 0, and the barrier does not push feasible values
    away from them): ``lower <= 0``, ``upper >= value_max`` and infinite bounds. Inactive entries
    give exactly 0 and no NaN gradient, whatever their bounds.

    Args:
        value: floating tensor of any shape, e.g. (G, C) soft sizes :math:`V` in voxels.
        lower, upper: bounds :math:`a, b` (units of ``value``), floats or tensors broadcastable to
            ``value``; ``-inf`` / ``inf`` for a missing side; ``lower <= upper`` where active.
        active: bool tensor broadcastable to ``value``: which constraints exist (None = all).
        value_max: :math:`n` (> 0, finite), float or tensor broadcastable to ``value`` (e.g. (G, 1)
            region sizes); None = no cap on ``upper`` and floor :math:`f = 1`.
        method: ``"penalty"`` or ``"log_barrier"``; ``t``: barrier parameter (> 0).
        reduction: ``"mean"`` over active entries (0, connected to the graph, when none is active),
            ``"sum"``, or ``"none"`` -> the shape of ``value``.
    """
    check_tensor(value, "value")
    if not value.is_floating_point():
        raise TypeError(f"value must be a floating point tensor, got dtype {value.dtype}.")
    check_method(method)
    t = check_t(t)
    check_reduction(reduction)
    low, up, act = broadcast_bounds(lower, upper, active, value)
    if bool(torch.isnan(low).any() | torch.isnan(up).any()):
        raise ValueError("lower and upper must not contain NaN (use -inf / inf for a missing side).")
    crossed = act & (low > up)
    if bool(crossed.any()):
        index = tuple(int(v) for v in crossed.nonzero()[0])
        raise ValueError(
            f"lower must be <= upper for active constraints, got lower={float(low[index])} > "
            f"upper={float(up[index])} at index {index}."
        )
    lower_on = act & torch.isfinite(low) & (low > 0)
    upper_on = act & torch.isfinite(up)
    floor = torch.ones((), dtype=value.dtype, device=value.device)
    if value_max is not None:
        cap = broadcast_param(value_max, tuple(value.shape), value, "value_max")
        if not bool((torch.isfinite(cap) & (cap > 0)).all()):
            raise ValueError(
                "value_max must be finite and > 0 (the largest possible value, e.g. the voxels of the "
                f"region), got min {float(cap.min())}; pass None for no cap."
            )
        upper_on = upper_on & (up < cap)
        floor = torch.maximum(1e-3 * cap, floor)
    # Sides that are off get the safe bound 0 *before* the maths: no inf / NaN in values or gradients.
    zero = torch.zeros((), dtype=value.dtype, device=value.device)
    low = torch.where(lower_on, low, zero)
    up = torch.where(upper_on, up, zero)
    z_low = (low - value) / torch.maximum(low, floor)
    z_up = (value - up) / torch.maximum(up, floor)
    if method == "penalty":
        cost_low, cost_up = _relative_penalty(z_low), _relative_penalty(z_up)
    else:
        cost_low, cost_up = log_barrier(z_low, t), log_barrier(z_up, t)
    values = torch.where(lower_on, cost_low, zero) + torch.where(upper_on, cost_up, zero)
    return masked_reduce(values, act, reduction)


def _relative_penalty(z: torch.Tensor) -> torch.Tensor:
    r""":math:`r^2` for :math:`r = \mathrm{relu}(z) \le 1`, :math:`2r - 1` beyond (value and slope match at 1)."""
    r = torch.relu(z)
    return torch.where(r <= 1.0, r * r, 2.0 * r - 1.0)


def soft_size(
    probs: torch.Tensor, groups: torch.Tensor | None = None, num_groups: int | None = None
) -> torch.Tensor:
    r"""Soft size :math:`V_{g,c} = \sum_{b \in g} \sum_p s_{b,c,p}` of each class in each region.

    Args:
        probs: (B, C, H, W) or (B, C, D, H, W) probabilities (e.g. softmax of the logits).
        groups: optional (B,) int64 region id of each item (e.g. the volume a slice comes from);
            None makes each item its own region (G = B).
        num_groups: number of regions G (default ``groups.max() + 1``).

    Returns:
        (G, C) sizes in voxels (soft size units).
    """
    probs = check_logits(probs, name="probs")
    groups, num = resolve_groups(groups, probs.shape[0], num_groups)
    return sum_by_group(probs.sum(dim=tuple(range(2, probs.ndim))), groups, num)


def _size_constraint(
    sizes: torch.Tensor,
    lower: TensorLike,
    upper: TensorLike,
    active: torch.Tensor | None,
    region_size: TensorLike | None,
    reduction: str,
    method: str,
    t: float = 5.0,
) -> torch.Tensor:
    """:func:`size_penalty` or :func:`size_log_barrier` (``method``): checks, then :func:`relative_bound_loss`."""
    if not isinstance(sizes, torch.Tensor) or sizes.ndim != 2 or not sizes.is_floating_point():
        shape = tuple(sizes.shape) if isinstance(sizes, torch.Tensor) else type(sizes).__name__
        raise ValueError(f"sizes must be a floating (G, C) tensor, got {shape}.")
    if region_size is not None:
        region_size = broadcast_param(region_size, tuple(sizes.shape), sizes, "region_size")
        if not bool((torch.isfinite(region_size) & (region_size > 0)).all()):
            raise ValueError(
                f"region_size must be > 0 and finite (voxels of the region), got min {float(region_size.min())}."
            )
    return relative_bound_loss(sizes, lower, upper, active, region_size, method, t, reduction)


def size_penalty(
    sizes: torch.Tensor,
    lower: TensorLike,
    upper: TensorLike,
    active: torch.Tensor | None = None,
    region_size: TensorLike | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Size penalty (Kervadec et al., MedIA 2019) on relative violations, from soft sizes.

    .. math::

        \mathcal{L}_{g,c} = \rho\!\left(\frac{a_{g,c} - V_{g,c}}{\max(a_{g,c}, f_g)}\right)
                          + \rho\!\left(\frac{V_{g,c} - b_{g,c}}{\max(b_{g,c}, f_g)}\right),
        \qquad \rho(z) = \begin{cases} r^2 & r = \mathrm{relu}(z) \le 1 \\ 2r - 1 & r > 1 \end{cases}

    with :math:`f_g = \max(1, 10^{-3} n_g)`, :math:`n_g` = ``region_size`` (see
    :func:`relative_bound_loss` for why each side is relative to its own bound). ``a == b`` gives
    the equality constraint. Vacuous sides (``lower <= 0``, ``upper >= region_size``, infinite) are off.

    Args:
        sizes: (G, C) soft sizes :math:`V` in voxels (see :func:`soft_size`).
        lower, upper: bounds :math:`a, b` in voxels, floats or tensors broadcastable to (G, C);
            ``lower=0`` / ``upper=inf`` for a missing side.
        active: (G, C) bool, which constraints exist (None = all); inactive ones contribute 0.
        region_size: :math:`n_g` in voxels, float or tensor broadcastable to (G, C) (e.g. (G, 1));
            None = no cap on ``upper`` and floor :math:`f = 1`.
        reduction: ``"mean"`` over active constraints, ``"sum"``, or ``"none"`` -> (G, C).
    """
    check_reduction(reduction)
    return _size_constraint(sizes, lower, upper, active, region_size, reduction, "penalty")


def size_log_barrier(
    sizes: torch.Tensor,
    lower: TensorLike,
    upper: TensorLike,
    active: torch.Tensor | None = None,
    region_size: TensorLike | None = None,
    t: float = 5.0,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Log-barrier size constraint (Kervadec et al., MedIA 2022) on relative violations, from soft sizes.

    .. math::

        \mathcal{L}_{g,c} = \tilde\psi_t\!\left(\frac{a_{g,c} - V_{g,c}}{\max(a_{g,c}, f_g)}\right)
                          + \tilde\psi_t\!\left(\frac{V_{g,c} - b_{g,c}}{\max(b_{g,c}, f_g)}\right),
        \qquad f_g = \max(1, 10^{-3} n_g)

    The reference applies :math:`\tilde\psi_t` to voxel counts; relative violations give ``t`` one
    meaning for any organ and image size. Vacuous sides (``lower <= 0``, ``upper >= region_size`` or
    infinite) are off: the barrier would otherwise push feasible sizes away from them.

    Args: as :func:`size_penalty`, plus ``t`` (> 0, see :class:`LogBarrierSchedule`).
    """
    check_reduction(reduction)
    t = check_t(t)
    return _size_constraint(sizes, lower, upper, active, region_size, reduction, "log_barrier", t)


def size_constraint_loss(
    logits: torch.Tensor,
    lower: TensorLike,
    upper: TensorLike,
    active: torch.Tensor | None = None,
    groups: torch.Tensor | None = None,
    num_groups: int | None = None,
    method: str = "penalty",
    t: float = 5.0,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Size constraint :math:`a_{g,c} \le V_{g,c} = \sum_{p \in g} s_{c,p} \le b_{g,c}` (Kervadec et al., 2019/2022).

    ``s = softmax(logits, dim=1)``; the size of class c in region g is summed over every item of the
    region (e.g. all slices of a volume share a group id, so a volume-level size bound applies to the
    prediction summed over the volume). Each side is a relative violation, normalised by its own
    bound with the floor :math:`f_g = \max(1, 10^{-3} n_g)`, :math:`n_g` = voxels of region g:
    :func:`size_penalty` (``method="penalty"``), :func:`size_log_barrier` (``"log_barrier"``),
    both :func:`relative_bound_loss` with ``value_max`` = :math:`n_g`.

    Args:
        logits: (B, C, H, W) or (B, C, D, H, W).
        lower, upper: bounds in voxels, floats or tensors broadcastable to (G, C); equality
            when ``lower == upper``; ``upper=float("inf")`` for no upper bound.
        active: (G, C) bool, which constraints exist (None = all). Inactive ones give exactly 0.
        groups: optional (B,) int64 region ids; None = each item is its own region (G = B).
        num_groups: G; default ``max(groups.max() + 1, lower.shape[0])`` for (G, C) bounds.
        method: ``"penalty"`` or ``"log_barrier"``.
        t: log-barrier parameter (> 0; ignored by the penalty).
        reduction: ``"mean"`` over active constraints, ``"sum"``, ``"none"`` -> (G, C).
    """
    logits = check_logits(logits)
    check_method(method)
    check_reduction(reduction)
    t = check_t(t)
    groups, num = resolve_groups(groups, logits.shape[0], num_groups, (lower, upper, active))
    probs = torch.softmax(logits, dim=1)
    sizes = soft_size(probs, groups, num)
    region = region_sizes(logits, groups, num).unsqueeze(1)
    return relative_bound_loss(sizes, lower, upper, active, region, method, t, reduction)


class SizeConstraintLoss(ConstraintLossModule):
    """Module form of :func:`size_constraint_loss`; holds ``method``, ``t`` and ``reduction``.

    ``t`` is a plain attribute: update it from a :class:`LogBarrierSchedule` between epochs.
    ``forward(logits, lower, upper, active=None, groups=None, num_groups=None)``.
    """

    def forward(
        self,
        logits: torch.Tensor,
        lower: TensorLike,
        upper: TensorLike,
        active: torch.Tensor | None = None,
        groups: torch.Tensor | None = None,
        num_groups: int | None = None,
    ) -> torch.Tensor:
        return size_constraint_loss(
            logits, lower, upper, active, groups, num_groups, self.method, self.t, self.reduction
        )


@torch.no_grad()
def size_proposal_labels(
    probs: torch.Tensor,
    lower: TensorLike,
    upper: TensorLike,
    active: torch.Tensor,
    allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    r"""Hard labels of one volume projected onto its size ranges (constrained proposals, Pathak et al. 2015).

    For each foreground class :math:`c` with a range (``active[c]``), the target size is the network's
    own hard size clamped to the range, :math:`n_c = \min(\max(|\{p: \arg\max s_p = c\}|, a_c), b_c)`,
    counted where ``c`` is allowed; the :math:`n_c` allowed voxels of largest :math:`s_{c,p}` become
    ``c`` (a voxel claimed by two classes goes to the more probable). Voxels the network gives to a
    foreground class without a range are left unknown (-1); every other voxel is background. Soft size
    constraints alone are met by probabilities spread thin over the volume (no voxel above 0.5); these
    labels ask for a confident mask of a size inside the range instead.

    Args:
        probs: (1, C, *spatial) softmax probabilities of one volume.
        lower, upper: (C,) bounds in voxels (``upper`` may be ``inf``).
        active: (C,) bool, the classes that have a range (class 0 is ignored).
        allowed: optional (C, *spatial) bool, where each class may lie (False: tagged absent there).

    Returns:
        (1, *spatial) int64 labels in ``{-1, 0, ..., C - 1}``.
    """
    check_tensor(probs, "probs")
    if probs.ndim < 3 or probs.shape[0] != 1:
        raise ValueError(f"probs must be (1, C, *spatial) (one volume), got {tuple(probs.shape)}.")
    k = probs.shape[1]
    p = probs[0].float()
    lower = torch.as_tensor(lower, dtype=torch.float64).reshape(-1)
    upper = torch.as_tensor(upper, dtype=torch.float64).reshape(-1)
    active = torch.as_tensor(active, dtype=torch.bool).reshape(-1)
    if lower.numel() != k or upper.numel() != k or active.numel() != k:
        raise ValueError(f"lower, upper and active need one entry per class ({k}), got {lower.numel()}, "
                         f"{upper.numel()} and {active.numel()}.")
    if allowed is not None and tuple(allowed.shape) != tuple(p.shape):
        raise ValueError(f"allowed must be (C, *spatial) = {tuple(p.shape)}, got {tuple(allowed.shape)}.")
    hard = p.argmax(0)
    labels = torch.zeros(p.shape[1:], dtype=torch.long, device=p.device)
    best = torch.full(p.shape[1:], -1.0, device=p.device)
    for c in range(1, k):
        if not bool(active[c]):
            labels[hard == c] = -1
    for c in range(1, k):
        if not bool(active[c]):
            continue
        ok = torch.ones_like(hard, dtype=torch.bool) if allowed is None else allowed[c].bool()
        own = int(((hard == c) & ok).sum())
        n = int(min(max(own, math.ceil(float(lower[c]))), math.floor(min(float(upper[c]), 1e18))))
        n = min(n, int(ok.sum()))
        if n <= 0:
            continue
        score = torch.where(ok, p[c], torch.full_like(p[c], -1.0)).reshape(-1)
        top = torch.topk(score, n).indices
        take = torch.zeros_like(score, dtype=torch.bool)
        take[top] = True
        take = take.reshape(p.shape[1:]) & (p[c] > best)
        labels[take] = c
        best = torch.where(take, p[c], best)
    return labels.unsqueeze(0)


def size_proposal_loss(
    logits: torch.Tensor,
    lower: TensorLike,
    upper: TensorLike,
    active: torch.Tensor,
    allowed: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of one volume's logits (1, C, *spatial) on its :func:`size_proposal_labels`.

    The labels are recomputed from the current prediction at every call and carry no gradient.
    """
    logits = check_logits(logits)
    labels = size_proposal_labels(torch.softmax(logits.detach().float(), 1), lower, upper, active, allowed)
    if not bool((labels >= 0).any()):
        return logits.sum() * 0.0
    x = logits if logits.dtype in (torch.float32, torch.float64) else logits.float()
    return torch.nn.functional.cross_entropy(x, labels, ignore_index=-1)
