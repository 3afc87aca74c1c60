"""Image-tag constraints: a tagged class must be present, an absent class must be suppressed.

The tags are size constraints in the relative formulation of :func:`~WeakSegLib.losses.size.relative_bound_loss`.

Reference: Kervadec et al., "Constrained-CNN losses for weakly supervised segmentation",
MedIA 2019, and "Constrained deep networks: Lagrangian optimization via log-barrier
extensions", MedIA 2022 (image-level tags as size constraints).
"""

from __future__ import annotations

import torch

from WeakSegLib.losses._utils import (
    ConstraintLossModule,
    check_logits,
    check_method,
    check_non_negative,
    check_reduction,
    resolve_groups,
)
from WeakSegLib.losses.size import size_constraint_loss

__all__ = ["tag_constraint_loss", "TagConstraintLoss"]


def tag_constraint_loss(
    logits: torch.Tensor,
    tags: torch.Tensor,
    groups: torch.Tensor | None = None,
    num_groups: int | None = None,
    min_size: float = 1.0,
    method: str = "penalty",
    t: float = 5.0,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Image-tag constraints expressed as size constraints on each region.

    For region g of :math:`n_g` voxels and class c with soft size :math:`V_{g,c} = \sum_{p \in g} s_{c,p}`:

    * ``tags[g, c] == 1`` (present): inclusion :math:`V_{g,c} \ge m` (``min_size``),
      :math:`z = (m - V_{g,c}) / \max(m, f_g)`;
    * ``tags[g, c] == 0`` (absent): suppression :math:`V_{g,c} \le 0`, measured against the floor,
      :math:`z = V_{g,c} / f_g`;
    * ``tags[g, c] == -1`` (unknown): no constraint (contributes exactly 0);

    with :math:`f_g = \max(1, 10^{-3} n_g)`. Each :math:`z` costs :math:`\rho(z)` (``"penalty"``:
    :math:`r^2` for :math:`r = \mathrm{relu}(z) \le 1`, :math:`2r - 1` beyond) or
    :math:`\tilde\psi_t(z)` (``"log_barrier"``): the relative formulation of
    :func:`~WeakSegLib.losses.size.size_constraint_loss` / :func:`~WeakSegLib.losses.size.relative_bound_loss`
    (Kervadec et al., MedIA 2019 / 2022). Whatever the region's size, a present class predicted empty
    costs 1 (for :math:`m \ge f_g`) and an absent class predicted on 0.1 % of a region of at least
    1000 voxels costs 1. A ``min_size`` below :math:`f_g` is measured against :math:`f_g` (a few voxels
    in a large volume weigh little); ``min_size=0`` switches inclusion off.

    Args:
        logits: (B, C, H, W) or (B, C, D, H, W).
        tags: (G, C) integer tensor with values in {-1, 0, 1}.
        groups: optional (B,) int64 region ids (None: G = B); ``num_groups`` defaults to
            ``tags.shape[0]``.
        min_size: minimum size (voxels) of a present class, >= 0.
        method: ``"penalty"`` or ``"log_barrier"``; ``t``: log-barrier parameter.
        reduction: ``"mean"`` over known tags, ``"sum"``, ``"none"`` -> (G, C).
    """
    logits = check_logits(logits)
    check_method(method)
    check_reduction(reduction)
    if not isinstance(tags, torch.Tensor):
        raise TypeError(f"tags must be a torch.Tensor of shape (G, C), got {type(tags).__name__}.")
    if tags.is_floating_point() or tags.is_complex():
        raise TypeError(f"tags must be an integer tensor with values -1/0/1, got dtype {tags.dtype}.")
    min_size = check_non_negative(min_size, "min_size")
    if groups is not None and num_groups is None and tags.ndim == 2:
        num_groups = int(tags.shape[0])
    groups, num = resolve_groups(groups, logits.shape[0], num_groups)
    expected = (num, logits.shape[1])
    if tuple(tags.shape) != expected:
        raise ValueError(f"tags must have shape (G, C) = {expected}, got {tuple(tags.shape)}.")
    tags = tags.to(logits.device).long()
    if bool(((tags < -1) | (tags > 1)).any()):
        raise ValueError("tags values must be 1 (present), 0 (absent) or -1 (unknown).")
    zero = torch.zeros((), dtype=logits.dtype, device=logits.device)
    min_value = torch.full((), min_size, dtype=logits.dtype, device=logits.device)
    lower = torch.where(tags == 1, min_value, zero)
    upper = torch.where(tags == 0, zero, torch.full_like(zero, float("inf")))
    return size_constraint_loss(logits, lower, upper, tags != -1, groups, num, method, t, reduction)


class TagConstraintLoss(ConstraintLossModule):
    """Module form of :func:`tag_constraint_loss`; ``forward(logits, tags, groups=None, num_groups=None)``."""

    def __init__(
        self, min_size: float = 1.0, method: str = "penalty", t: float = 5.0, reduction: str = "mean"
    ) -> None:
        min_size = check_non_negative(min_size, "min_size")
        super().__init__(method, t, reduction)
        self.min_size = min_size

    def forward(
        self,
        logits: torch.Tensor,
        tags: torch.Tensor,
        groups: torch.Tensor | None = None,
        num_groups: int | None = None,
    ) -> torch.Tensor:
        return tag_constraint_loss(
            logits, tags, groups, num_groups, self.min_size, self.method, self.t, self.reduction
        )
