"""Entropy minimisation of the softmax prediction.

Reference: Y. Grandvalet, Y. Bengio, "Semi-supervised learning by entropy minimization",
NeurIPS 2005.
"""

from __future__ import annotations

import torch
from torch import nn

from WeakSegLib.losses._utils import check_logits, check_reduction, masked_reduce, optional_mask

__all__ = ["entropy_loss", "EntropyLoss"]


def entropy_loss(
    logits: torch.Tensor, mask: torch.Tensor | None = None, reduction: str = "mean"
) -> torch.Tensor:
    r"""Shannon entropy of the softmax, averaged over the voxels selected by ``mask``.

    .. math:: H_p = -\sum_c s_{c,p} \log s_{c,p}

    computed as ``-(softmax * log_softmax).sum(1)``: finite (value and gradient) for extreme
    logits, where :math:`s = 0` and :math:`\log s` stays finite.

    Args:
        logits: (B, C, H, W) or (B, C, D, H, W).
        mask: optional (B, *spatial) or (B, 1, *spatial) bool, True where the entropy counts
            (e.g. unlabelled voxels); None = every voxel.
        reduction: ``"mean"`` over selected voxels (0 if none), ``"sum"``, or ``"none"`` ->
            (B, *spatial) entropy map, 0 outside the mask.
    """
    logits = check_logits(logits)
    check_reduction(reduction)
    log_probs = torch.log_softmax(logits, dim=1)
    entropy = -(log_probs.exp() * log_probs).sum(1)
    return masked_reduce(entropy, optional_mask(mask, entropy, logits), reduction)


class EntropyLoss(nn.Module):
    """Module form of :func:`entropy_loss`; ``forward(logits, mask=None)``."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return entropy_loss(logits, mask, self.reduction)
