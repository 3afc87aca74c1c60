"""Image-tag constraints: a tagged class must be present, an absent class must be suppressed.

Reference: Kervadec et al., "Constrained-CNN losses for weakly supervised segmentation",
MedIA 2019, and "Constrained deep networks: Lagrangian optimization via log-barrier
extensions", MedIA 2022 (image-level tags as size constraints).
"""

from __future__ import annotations

import torch
from torch import nn

from ._utils import check_logits, check_method, check_reduction, check_t, region_sizes, resolve_groups
from .size import size_log_barrier, size_penalty, soft_size

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

    For region g and class c with soft size :math:`V_{g,c} = \sum_{p \in g} s_{c,p}`:

    * ``tags[g, c] == 1`` (present): inclusion :math:`V_{g,c} \ge` ``min_size``;
    * ``tags[g, c] == 0`` (absent): suppression :math:`V_{g,c} \le 0`;
    * ``tags[g, c] == -1`` (unknown): no constraint (contributes exactly 0).

    Each constraint is evaluated by :func:`~WeakSegLib.losses.size.size_penalty` or
    :func:`~WeakSegLib.losses.size.size_log_barrier`, normalised by the region size :math:`n_g`,
    e.g. suppression gives :math:`(V/n)^2` or :math:`\tilde\psi_t(V/n)`. Note that with the
    penalty and ``min_size`` of a few voxels the inclusion term :math:`((m - V)/n)^2` is tiny;
    prefer the log-barrier (linear, slope ``t``, when violated) or a larger ``min_size``.

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
    if isinstance(min_size, bool) or not isinstance(min_size, (int, float)) or not min_size >= 0:
        raise ValueError(f"min_size must be a float >= 0, got {min_size!r}.")
    if groups is not None and num_groups is None and tags.ndim == 2:
        num_groups = int(tags.shape[0])
    groups, num = resolve_groups(groups, logits.shape[0], num_groups)
    expected = (num, logits.shape[1])
    if tuple(tags.shape) != expected:
        raise ValueError(f"tags must have shape (G, C) = {expected}, got {tuple(tags.shape)}.")
    tags = tags.to(logits.device).long()
    if bool(((tags < -1) | (tags > 1)).any()):
        raise ValueError("tags values must be 1 (present), 0 (absent) or -1 (unknown).")
    probs = torch.softmax(logits, dim=1)
    sizes = soft_size(probs, groups, num)
    region = region_sizes(logits, groups, num).unsqueeze(1)
    zero = torch.zeros((), dtype=sizes.dtype, device=sizes.device)
    min_value = torch.full((), float(min_size), dtype=sizes.dtype, device=sizes.device)
    lower = torch.where(tags == 1, min_value, zero)
    upper = torch.where(tags == 0, zero, torch.full_like(zero, float("inf")))
    active = tags != -1
    if method == "penalty":
        return size_penalty(sizes, lower, upper, active, region, reduction)
    return size_log_barrier(sizes, lower, upper, active, region, check_t(t), reduction)


class TagConstraintLoss(nn.Module):
    """Module form of :func:`tag_constraint_loss`; ``forward(logits, tags, groups=None, num_groups=None)``."""

    def __init__(
        self, min_size: float = 1.0, method: str = "penalty", t: float = 5.0, reduction: str = "mean"
    ) -> None:
        super().__init__()
        if isinstance(min_size, bool) or not isinstance(min_size, (int, float)) or not min_size >= 0:
            raise ValueError(f"min_size must be a float >= 0, got {min_size!r}.")
        self.min_size = float(min_size)
        self.method = check_method(method)
        self.t = check_t(t)
        self.reduction = check_reduction(reduction)

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
