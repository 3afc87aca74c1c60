"""Class-ratio prior: KL divergence between predicted and prior class proportions.

References: Y. Zhou et al., "Prior-aware neural network for partially-supervised multi-organ
segmentation", ICCV 2019; M. Bateson, H. Kervadec, J. Dolz, H. Lombaert, I. Ben Ayed,
"Source-relaxed domain adaptation for image segmentation", MICCAI 2020 (paired with entropy
minimisation, :func:`~WeakSegLib.losses.entropy.entropy_loss`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from WeakSegLib.losses._utils import check_logits, check_positive, check_reduction, reduce, resolve_groups
from WeakSegLib.losses.size import soft_size

__all__ = ["class_ratio_kl_loss", "ClassRatioLoss"]

PriorLike = torch.Tensor | Sequence[float]


def _check_prior(prior: PriorLike, num_groups: int, logits: torch.Tensor) -> torch.Tensor:
    if prior is None:
        raise ValueError("prior is required: a (C,) or (G, C) tensor of class proportions.")
    p = prior if isinstance(prior, torch.Tensor) else torch.as_tensor(prior)
    given = tuple(p.shape)
    if not p.is_floating_point():
        p = p.to(torch.float64)
    p = p.to(device=logits.device, dtype=logits.dtype)
    num_classes = logits.shape[1]
    if p.ndim == 1:
        p = p.unsqueeze(0)
    if p.ndim != 2 or p.shape[1] != num_classes or p.shape[0] not in (1, num_groups):
        raise ValueError(
            f"prior must have shape (C,) = ({num_classes},) or (G, C) = ({num_groups}, {num_classes}), "
            f"got {given}."
        )
    if bool((p < 0).any()) or not bool(torch.isfinite(p).all()):
        raise ValueError("prior proportions must be finite and >= 0.")
    total = p.sum(1, keepdim=True)
    if bool((total <= 0).any()):
        raise ValueError("prior proportions must have a positive sum for every region.")
    return (p / total).expand(num_groups, num_classes)


def class_ratio_kl_loss(
    logits: torch.Tensor,
    prior: PriorLike,
    groups: torch.Tensor | None = None,
    num_groups: int | None = None,
    eps: float = 1e-8,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""KL divergence of the predicted class proportions from the prior proportions, per region.

    .. math::

        q_{g,c} = \frac{V_{g,c}}{\sum_k V_{g,k}}, \qquad
        \mathcal{L}_g = \mathrm{KL}(q_g \,\|\, \pi_g) = \sum_c q_{g,c}
            \left[\log(q_{g,c} + \epsilon) - \log(\pi_{g,c} + \epsilon)\right]

    with :math:`V` the soft sizes (:func:`~WeakSegLib.losses.size.soft_size`) and :math:`\pi`
    the prior normalised to sum to 1. ``eps`` keeps empty classes (:math:`q = 0`) and zero prior
    entries finite (value and gradient).

    Args:
        logits: (B, C, H, W) or (B, C, D, H, W).
        prior: (C,) or (G, C) non-negative proportions (normalised internally).
        groups, num_groups: optional region ids (B,) and G (None: G = B).
        eps: > 0.
        reduction: ``"mean"`` over regions, ``"sum"``, ``"none"`` -> (G,).
    """
    logits = check_logits(logits)
    check_reduction(reduction)
    check_positive(eps, "eps")
    groups, num = resolve_groups(groups, logits.shape[0], num_groups, (prior,))
    p = _check_prior(prior, num, logits)
    sizes = soft_size(torch.softmax(logits, dim=1), groups, num)
    total = sizes.sum(1, keepdim=True)
    q = sizes / total.clamp_min(eps)
    values = (q * (torch.log(q + eps) - torch.log(p + eps))).sum(1)
    return reduce(values, reduction)


class ClassRatioLoss(nn.Module):
    """Module form of :func:`class_ratio_kl_loss`.

    ``prior`` may be fixed here (stored as a buffer) or given to ``forward(logits, prior=None,
    groups=None, num_groups=None)``, which takes precedence.
    """

    def __init__(self, prior: PriorLike | None = None, eps: float = 1e-8, reduction: str = "mean") -> None:
        super().__init__()
        self.eps = check_positive(eps, "eps")
        self.reduction = check_reduction(reduction)
        if prior is not None:
            p = torch.as_tensor(prior, dtype=torch.float32)
            if p.ndim not in (1, 2) or bool((p < 0).any()):
                raise ValueError(
                    f"prior must be a (C,) or (G, C) tensor of proportions >= 0, got shape {tuple(p.shape)}."
                )
            self.register_buffer("prior", p)
        else:
            self.prior = None

    def forward(
        self,
        logits: torch.Tensor,
        prior: PriorLike | None = None,
        groups: torch.Tensor | None = None,
        num_groups: int | None = None,
    ) -> torch.Tensor:
        prior = self.prior if prior is None else prior
        return class_ratio_kl_loss(logits, prior, groups, num_groups, self.eps, self.reduction)
