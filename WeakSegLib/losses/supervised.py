"""Full supervision: batch soft Dice + cross-entropy with an ignore label (nnU-Net style).

Reference: F. Isensee et al., "nnU-Net: a self-configuring method for deep learning-based
biomedical image segmentation", Nature Methods 2021 (DC_and_CE_loss, batch Dice, ignore label).
"""

from __future__ import annotations

import torch
from torch import nn

from WeakSegLib.losses._utils import (
    check_ignore_index,
    check_logits,
    check_non_negative,
    check_positive,
    check_reduction,
)
from WeakSegLib.losses.partial import check_dice_inputs, masked_dice_sums, partial_cross_entropy

__all__ = ["dice_ce_loss", "DiceCELoss"]


def dice_ce_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    ignore_index: int = -1,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
    include_background: bool = False,
    reduction: str = "mean",
    smooth: float = 1e-5,
) -> torch.Tensor:
    r"""Batch soft Dice + cross-entropy, both restricted to the labelled voxels.

    .. math::

        D_c = \frac{2\sum_{b,p \in \Omega} s_{c,p} y_{c,p} + \epsilon}
                   {\sum_{b,p \in \Omega} s_{c,p} + \sum_{b,p \in \Omega} y_{c,p} + \epsilon},
        \qquad
        \mathcal{L} = w_{ce}\,\mathrm{CE}_\Omega + w_{dice}\,\frac{1}{|K|}\sum_{c \in K} (1 - D_c)

    with :math:`\Omega` the voxels whose label is not ``ignore_index`` (excluded from both terms,
    as nnU-Net's ignore label), sums over the whole batch ("batch Dice"), :math:`K` the classes
    (without background unless ``include_background``), and :math:`\mathrm{CE}_\Omega` the mean
    cross-entropy over :math:`\Omega` (:func:`~WeakSegLib.losses.partial.partial_cross_entropy`,
    0 rather than NaN when :math:`\Omega` is empty). nnU-Net uses :math:`-D_c`; we use
    :math:`1 - D_c` (same gradient, non-negative value).

    Args:
        logits: (B, C, H, W) or (B, C, D, H, W).
        labels: (B, *spatial) or (B, 1, *spatial) int64, ``ignore_index`` = unlabelled.
        dice_weight, ce_weight: >= 0.
        include_background: include class 0 in the Dice term.
        reduction: ``"mean"`` as above; ``"sum"``: CE term + *sum* of the per-class Dice terms;
            ``"none"`` -> (1 + |K|,): ``[w_ce CE, w_dice (1 - D_c) for c in K]``.
        smooth: :math:`\epsilon` > 0.
    """
    logits = check_logits(logits)
    check_reduction(reduction)
    dice_weight = check_non_negative(dice_weight, "dice_weight")
    ce_weight = check_non_negative(ce_weight, "ce_weight")
    labels, known = check_dice_inputs(logits, labels, ignore_index, include_background, smooth)
    intersection, denominator = masked_dice_sums(logits, labels, known, (0, *range(2, logits.ndim)))
    dice = (2.0 * intersection + smooth) / (denominator + smooth)
    dice_terms = dice_weight * (1.0 - dice)
    if not include_background:
        dice_terms = dice_terms[1:]
    ce_term = ce_weight * partial_cross_entropy(logits, labels, ignore_index, reduction="mean")
    if reduction == "none":
        return torch.cat([ce_term.reshape(1), dice_terms])
    if reduction == "sum":
        return ce_term + dice_terms.sum()
    return ce_term + dice_terms.mean()


class DiceCELoss(nn.Module):
    """Module form of :func:`dice_ce_loss`; ``forward(logits, labels)``."""

    def __init__(
        self,
        ignore_index: int = -1,
        dice_weight: float = 1.0,
        ce_weight: float = 1.0,
        include_background: bool = False,
        reduction: str = "mean",
        smooth: float = 1e-5,
    ) -> None:
        super().__init__()
        self.ignore_index = check_ignore_index(ignore_index)
        self.smooth = check_positive(smooth, "smooth")
        self.dice_weight = check_non_negative(dice_weight, "dice_weight")
        self.ce_weight = check_non_negative(ce_weight, "ce_weight")
        self.include_background = bool(include_background)
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return dice_ce_loss(
            logits,
            labels,
            self.ignore_index,
            self.dice_weight,
            self.ce_weight,
            self.include_background,
            self.reduction,
            self.smooth,
        )
