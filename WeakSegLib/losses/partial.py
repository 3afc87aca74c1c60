"""Partial (scribble / point) supervision: losses restricted to the annotated voxels.

References: Tang et al., "Normalized cut loss for weakly-supervised CNN segmentation", CVPR 2018
(partial cross-entropy); nnU-Net v2's ignore label (Isensee et al., "nnU-Net revisited", 2023);
Kervadec et al., MedIA 2019 (pCE baseline of the constrained losses).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from WeakSegLib.losses._utils import (
    check_ignore_index,
    check_labels,
    check_logits,
    check_positive,
    check_reduction,
    masked_reduce,
    safe_divide,
)

__all__ = [
    "partial_cross_entropy",
    "partial_dice_loss",
    "PartialCrossEntropyLoss",
    "PartialDiceLoss",
]


def _check_class_weights(class_weights: torch.Tensor | Sequence[float], logits: torch.Tensor) -> torch.Tensor:
    weights = torch.as_tensor(class_weights, dtype=logits.dtype, device=logits.device)
    if weights.shape != (logits.shape[1],):
        raise ValueError(
            f"class_weights must have shape (C,) = ({logits.shape[1]},), got {tuple(weights.shape)}."
        )
    if bool((weights < 0).any()) or not bool(torch.isfinite(weights).all()):
        raise ValueError("class_weights must be finite and >= 0.")
    return weights


def partial_cross_entropy(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = -1,
    class_weights: torch.Tensor | Sequence[float] | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Partial cross-entropy: cross-entropy on the annotated voxels only.

    .. math::

        \mathcal{L} = \frac{\sum_{p \in \Omega_L} w_{y_p}\,(-\log s_{y_p, p})}{\sum_{p \in \Omega_L} w_{y_p}}

    with :math:`\Omega_L` the voxels whose label is not ``ignore_index`` and :math:`w` the class
    weights (1 by default). The mean is over *annotated* voxels, not over all voxels (a common
    mistake that makes the loss scale with the annotated fraction). When no voxel is annotated,
    ``"mean"`` returns 0 connected to the graph (``torch.nn.functional.cross_entropy`` returns NaN).

    Args:
        logits: (B, C, H, W) or (B, C, D, H, W).
        labels: (B, *spatial) or (B, 1, *spatial) int64 class indices, ``ignore_index`` = unknown.
        ignore_index: label value of unannotated voxels.
        class_weights: optional (C,) non-negative weights.
        reduction: ``"mean"`` (weighted mean over annotated voxels), ``"sum"``, or ``"none"``
            -> (B, *spatial) weighted voxel losses, 0 on unannotated voxels.
    """
    logits = check_logits(logits)
    check_reduction(reduction)
    labels = check_labels(labels, logits, ignore_index)
    known = labels != ignore_index
    safe_labels = torch.where(known, labels, torch.zeros_like(labels))
    nll = -torch.log_softmax(logits, dim=1).gather(1, safe_labels.unsqueeze(1)).squeeze(1)
    weights = known.to(logits.dtype)
    if class_weights is not None:
        weights = weights * _check_class_weights(class_weights, logits)[safe_labels]
    values = torch.where(known, nll * weights, torch.zeros((), dtype=nll.dtype, device=nll.device))
    if reduction == "none":
        return values
    if reduction == "sum":
        return values.sum()
    return safe_divide(values.sum(), weights.sum())


def check_dice_inputs(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, include_background: bool, smooth: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Check the options of a soft Dice on the annotated voxels, then the labels.

    ``smooth`` must be > 0 and ``logits`` (B, C, *spatial) need 2 classes or more when the
    background is left out. Returns the labels as int64 (B, *spatial) and the (B, *spatial) bool
    mask of annotated voxels; shared by :func:`partial_dice_loss` and
    :func:`~WeakSegLib.losses.supervised.dice_ce_loss`.
    """
    check_positive(smooth, "smooth")
    if not include_background and logits.shape[1] < 2:
        raise ValueError(
            f"include_background=False needs at least 2 classes, got logits of shape {tuple(logits.shape)}."
        )
    labels = check_labels(labels, logits, ignore_index)
    return labels, labels != ignore_index


def masked_dice_sums(logits: torch.Tensor, labels: torch.Tensor, known: torch.Tensor,
                     axes: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-Dice sums over the annotated voxels only: ``(sum s*y, sum s + sum y)`` over ``axes``.

    ``labels`` (B, *spatial) checked int64, ``known`` (B, *spatial) bool; shared by
    :func:`partial_dice_loss` (per item) and :func:`~WeakSegLib.losses.supervised.dice_ce_loss` (batch Dice).
    """
    safe_labels = torch.where(known, labels, torch.zeros_like(labels))
    known_f = known.unsqueeze(1).to(logits.dtype)
    onehot = F.one_hot(safe_labels, logits.shape[1]).movedim(-1, 1).to(logits.dtype) * known_f
    probs = torch.softmax(logits, dim=1) * known_f
    return (probs * onehot).sum(axes), probs.sum(axes) + onehot.sum(axes)


def partial_dice_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = -1,
    include_background: bool = True,
    smooth: float = 1e-5,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Soft Dice loss computed over the annotated voxels only (per item and class).

    .. math::

        \mathcal{L}_{b,c} = 1 - \frac{2\sum_{p \in \Omega_b} s_{c,p}\,y_{c,p} + \epsilon}
            {\sum_{p \in \Omega_b} s_{c,p} + \sum_{p \in \Omega_b} y_{c,p} + \epsilon}

    with :math:`\Omega_b` the annotated voxels of item b, :math:`y` the one-hot labels and
    :math:`\epsilon` = ``smooth`` (> 0; a class neither annotated nor predicted on
    :math:`\Omega_b` gives 0).

    Args:
        logits: (B, C, H, W) or (B, C, D, H, W).
        labels: (B, *spatial) or (B, 1, *spatial) int64, ``ignore_index`` = unknown.
        include_background: keep class 0.
        smooth: :math:`\epsilon` > 0.
        reduction: ``"mean"`` over (item, class) pairs of items with >= 1 annotated voxel (0 when
            there is none), ``"sum"``, or ``"none"`` -> (B, C) (or (B, C - 1) without background),
            0 for items without annotation.
    """
    logits = check_logits(logits)
    check_reduction(reduction)
    labels, known = check_dice_inputs(logits, labels, ignore_index, include_background, smooth)
    intersection, denominator = masked_dice_sums(logits, labels, known, tuple(range(2, logits.ndim)))
    loss = 1.0 - (2.0 * intersection + smooth) / (denominator + smooth)
    if not include_background:
        loss = loss[:, 1:]
    annotated = known.flatten(1).any(1).unsqueeze(1)
    return masked_reduce(loss, annotated, reduction)


class PartialCrossEntropyLoss(nn.Module):
    """Module form of :func:`partial_cross_entropy`; ``forward(logits, labels)``."""

    def __init__(
        self,
        ignore_index: int = -1,
        class_weights: torch.Tensor | Sequence[float] | None = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_reduction(reduction)
        if class_weights is not None:
            weights = torch.as_tensor(class_weights, dtype=torch.float32)
            if weights.ndim != 1 or bool((weights < 0).any()):
                raise ValueError(
                    "class_weights must be a 1-D tensor of non-negative weights, "
                    f"got shape {tuple(weights.shape)}."
                )
            self.register_buffer("class_weights", weights)
        else:
            self.class_weights = None

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return partial_cross_entropy(logits, labels, self.ignore_index, self.class_weights, self.reduction)


class PartialDiceLoss(nn.Module):
    """Module form of :func:`partial_dice_loss`; ``forward(logits, labels)``."""

    def __init__(
        self,
        ignore_index: int = -1,
        include_background: bool = True,
        smooth: float = 1e-5,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.ignore_index = check_ignore_index(ignore_index)
        self.smooth = check_positive(smooth, "smooth")
        self.include_background = bool(include_background)
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return partial_dice_loss(
            logits, labels, self.ignore_index, self.include_background, self.smooth, self.reduction
        )
