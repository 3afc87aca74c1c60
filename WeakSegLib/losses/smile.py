"""Losses for partially annotated data (complete masks of some classes, the others missing).

* SMILE, per-class binary losses: O. Petit, N. Thome, A. Charnay, A. Hostettler, L. Soler,
  "Handling missing annotations for semantic segmentation with deep convnets", DLMIA (MICCAI
  workshop) 2018.
* Marginal cross-entropy + Dice on the complete classes (softmax networks): the unannotated classes
  and the background are merged into one target, as the marginal loss of G. Shi, L. Xiao, Y. Chen,
  S. K. Zhou, "Marginal loss and exclusion loss for partially supervised multi-organ segmentation",
  MedIA 2021, and the target-adaptive loss of X. Fang, P. Yan, "Multi-organ segmentation over
  partially labeled datasets with multi-scale feature abstraction", IEEE TMI 2020.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from WeakSegLib.losses._utils import (
    check_ignore_index,
    check_labels,
    check_logits,
    check_positive,
    check_reduction,
    check_tensor,
    reduce,
    safe_divide,
)
from WeakSegLib.losses.partial import masked_dice_sums

__all__ = ["smile_targets", "smile_loss", "SmileLoss", "marginal_dice_ce_loss"]

ACTIVATIONS = ("sigmoid", "softmax")


def _check_activation(activation: str) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}.")
    return activation


def _check_complete(complete: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Check the (B, C) completeness flags against ``logits`` (B, C, *spatial); return them as bool."""
    if not isinstance(complete, torch.Tensor) or complete.is_floating_point() or complete.is_complex():
        raise TypeError("complete must be a (B, C) bool tensor.")
    if tuple(complete.shape) != tuple(logits.shape[:2]):
        raise ValueError(
            f"complete must have shape (B, C) = {tuple(logits.shape[:2])}, got {tuple(complete.shape)}."
        )
    return complete.to(logits.device).bool()


def smile_targets(
    labels: torch.Tensor, complete: torch.Tensor, ignore_index: int = -1
) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Per-class binary targets and weights from partial labels and mask completeness.

    For item b and class c, with :math:`y_p` the voxel label:

    * ``complete[b, c]`` (the mask of c is complete in b): every voxel is supervised for c,
      target 1 where :math:`y_p = c`, 0 elsewhere (unlabelled voxels included);
    * otherwise: target 1 where :math:`y_p = c`, target 0 where another class is annotated
      (:math:`y_p \ne c`, :math:`y_p \ne` ``ignore_index``), no supervision (weight 0) where
      :math:`y_p` is unknown.

    Args:
        labels: (B, H, W), (B, D, H, W) or (B, 1, *spatial) int64, ``ignore_index`` = unknown
            (a 4-D (B, 1, H, W) tensor is read as a 2D label map with a channel).
        complete: (B, C) bool.
        ignore_index: label of unknown voxels.

    Returns:
        ``(targets, weights)``, both (B, C, *spatial) float32 (0/1).
    """
    if not isinstance(complete, torch.Tensor):
        raise TypeError(f"complete must be a (B, C) bool tensor, got {type(complete).__name__}.")
    if complete.is_floating_point() or complete.is_complex():
        raise TypeError(f"complete must be a bool tensor, got dtype {complete.dtype}.")
    check_tensor(labels, "labels")
    if labels.ndim not in (3, 4, 5):
        raise ValueError(
            "labels must have shape (B, H, W) or (B, D, H, W) (or with a channel of 1), "
            f"got {tuple(labels.shape)}."
        )
    if complete.ndim != 2 or complete.shape[0] != labels.shape[0]:
        raise ValueError(
            f"complete must have shape (B, C) with B={labels.shape[0]}, got {tuple(complete.shape)}."
        )
    num_classes = complete.shape[1]
    squeeze_ok = labels.ndim >= 4 and labels.shape[1] == 1
    spatial = labels.shape[2:] if squeeze_ok else labels.shape[1:]
    if len(spatial) not in (2, 3):
        raise ValueError(
            "labels must have shape (B, H, W) or (B, D, H, W) (or with a channel of 1), "
            f"got {tuple(labels.shape)}."
        )
    # Shape-only stand-in for the logits (no memory: an expanded scalar).
    reference = torch.zeros((), device=labels.device).expand(labels.shape[0], num_classes, *spatial)
    labels = check_labels(labels, reference, ignore_index)
    return _build_targets(labels, complete, ignore_index)


def _build_targets(
    labels: torch.Tensor, complete: torch.Tensor, ignore_index: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`smile_targets` on checked int64 labels (B, *spatial) and complete (B, C)."""
    num_classes = complete.shape[1]
    spatial = labels.shape[1:]
    complete = complete.to(labels.device).bool()
    known = labels != ignore_index
    safe_labels = torch.where(known, labels, torch.zeros_like(labels))
    onehot = F.one_hot(safe_labels, num_classes).movedim(-1, 1) & known.unsqueeze(1)
    view = complete.view(*complete.shape, *([1] * len(spatial)))
    weights = view | known.unsqueeze(1)
    return onehot.float(), weights.expand_as(onehot).float()


def _log_probs(logits: torch.Tensor, activation: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (log p, log(1 - p)) per class, computed stably."""
    if activation == "sigmoid":
        return F.logsigmoid(logits), F.logsigmoid(-logits)
    log_p = torch.log_softmax(logits, dim=1)
    lse = torch.logsumexp(logits, dim=1)
    others = []
    for c in range(logits.shape[1]):
        rest = torch.cat([logits[:, :c], logits[:, c + 1 :]], dim=1)
        others.append(torch.logsumexp(rest, dim=1) - lse)
    return log_p, torch.stack(others, dim=1)


def smile_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    weights: torch.Tensor,
    activation: str = "sigmoid",
    reduction: str = "mean",
) -> torch.Tensor:
    r"""SMILE loss: K weighted binary cross-entropies, each normalised by its supervised voxels.

    .. math::

        \mathcal{L}_c = \frac{\sum_{b,p} w_{b,c,p}\,[-y_{b,c,p}\log p_{b,c,p}
                         - (1 - y_{b,c,p})\log(1 - p_{b,c,p})]}{\sum_{b,p} w_{b,c,p}}

    (0 for a class without supervised voxel). The normalisation by the supervised voxel count of
    each class keeps classes with few annotations from being drowned. :math:`p` is
    ``sigmoid(logits)`` (independent classes, as in the paper; log terms via ``logsigmoid``) or
    ``softmax(logits)`` (log terms via ``log_softmax`` and a log-sum-exp over the other classes,
    finite for extreme logits).

    Args:
        logits: (B, C, H, W) or (B, C, D, H, W).
        targets, weights: (B, C, *spatial) floats, e.g. from :func:`smile_targets`.
        activation: ``"sigmoid"`` or ``"softmax"`` (needs C >= 2).
        reduction: ``"mean"`` over classes with supervision (0 if none), ``"sum"`` over classes,
            or ``"none"`` -> (C,).
    """
    logits = check_logits(logits)
    check_reduction(reduction)
    _check_activation(activation)
    if activation == "softmax" and logits.shape[1] < 2:
        raise ValueError(
            f"activation='softmax' needs at least 2 classes, got logits of shape {tuple(logits.shape)}."
        )
    for name, tensor in (("targets", targets), ("weights", weights)):
        check_tensor(tensor, name)
        if tuple(tensor.shape) != tuple(logits.shape):
            raise ValueError(
                f"{name} must have the shape of logits (B, C, *spatial) = {tuple(logits.shape)}, "
                f"got {tuple(tensor.shape)}."
            )
    targets = targets.to(dtype=logits.dtype, device=logits.device)
    weights = weights.to(dtype=logits.dtype, device=logits.device)
    if bool((weights < 0).any()):
        raise ValueError("weights must be >= 0.")
    log_p, log_not_p = _log_probs(logits, activation)
    bce = -(targets * log_p + (1.0 - targets) * log_not_p)
    dims = (0, *range(2, logits.ndim))
    per_class = safe_divide((weights * bce).sum(dims), weights.sum(dims))
    supervised = (weights.sum(dims) > 0).sum().to(per_class.dtype)
    return reduce(per_class, reduction, supervised.clamp_min(1.0))


class SmileLoss(nn.Module):
    """Module form of SMILE: ``forward(logits, labels, complete)`` builds the targets with
    :func:`smile_targets` and applies :func:`smile_loss`."""

    def __init__(self, activation: str = "sigmoid", ignore_index: int = -1, reduction: str = "mean") -> None:
        super().__init__()
        self.activation = _check_activation(activation)
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, complete: torch.Tensor) -> torch.Tensor:
        logits = check_logits(logits)
        complete = _check_complete(complete, logits)
        labels = check_labels(labels, logits, self.ignore_index)
        targets, weights = _build_targets(labels, complete, self.ignore_index)
        return smile_loss(logits, targets, weights, self.activation, self.reduction)


def marginal_dice_ce_loss(
    logits: torch.Tensor,
    labels: torch.Tensor,
    complete: torch.Tensor,
    ignore_index: int = -1,
    dice_weight: float = 1.0,
    smooth: float = 1e-5,
) -> torch.Tensor:
    r"""Marginal cross-entropy + batch Dice on the complete classes, for a softmax network.

    For item b let :math:`M_b = \{c : \lnot\,\mathrm{complete}[b, c]\}` be the classes whose mask
    is not given (the background is in :math:`M_b` unless it is complete).  An annotated voxel of
    class :math:`y` costs :math:`-\log s_y`; an unknown voxel may belong to any class of
    :math:`M_b` and costs :math:`-\log \sum_{c \in M_b} s_c` (marginal likelihood: the merged
    "background or a missing class" target).  The mean runs over every voxel with a non-empty
    target set, so the merged class gets as much positive evidence as the background gets in full
    supervision, without deciding between the background and a missing class; that split is
    learned from the volumes where the class is complete.  The Dice term is nnU-Net's batch Dice
    of each foreground class over the items where that class is complete (its mask is known
    everywhere there), averaged over the classes that are complete in at least one item.

    With every class complete this is :func:`~WeakSegLib.losses.supervised.dice_ce_loss`
    (CE + batch Dice without background).  Why not SMILE's per-class binary terms under a
    softmax: on a partially labelled volume the background output only ever receives negative
    targets (on the annotated foreground voxels), normalised as a class of its own, which biases a
    softmax network towards foreground; SMILE as published uses independent sigmoids.

    Args:
        logits: (B, C, H, W) or (B, C, D, H, W).
        labels: (B, *spatial) or (B, 1, *spatial) int64, ``ignore_index`` = unknown.
        complete: (B, C) bool, the classes whose mask is complete in each item.
        dice_weight: weight of the Dice term (>= 0).
        smooth: Dice smoothing (> 0).

    Returns:
        A scalar (0 when nothing is supervised).
    """
    logits = check_logits(logits)
    labels = check_labels(labels, logits, ignore_index)
    complete = _check_complete(complete, logits)
    if isinstance(dice_weight, bool) or not isinstance(dice_weight, (int, float)) or dice_weight < 0:
        raise ValueError(f"dice_weight must be a float >= 0, got {dice_weight!r}.")
    check_positive(smooth, "smooth")
    nd = logits.ndim - 2
    log_p = torch.log_softmax(logits.float(), dim=1)
    known = labels != ignore_index
    safe = torch.where(known, labels, torch.zeros_like(labels))
    nll_known = -log_p.gather(1, safe.unsqueeze(1)).squeeze(1)
    merged = (~complete).view(*complete.shape, *([1] * nd))
    # A finite fill keeps the gradient of logsumexp finite where the merged set is empty.
    nll_unknown = -torch.logsumexp(log_p.masked_fill(~merged, -1e4), dim=1)
    has_merged = merged.flatten(1).any(1).view(-1, *([1] * nd))
    counted = known | has_merged
    nll = torch.where(known, nll_known, torch.where(has_merged, nll_unknown, torch.zeros_like(nll_unknown)))
    ce = safe_divide(nll.sum(), counted.sum().to(nll.dtype))
    used = complete[:, 1:].any(0)
    if dice_weight == 0 or not bool(used.any()):
        return ce
    # Per-item Dice sums over *every* voxel (a complete class's mask is known everywhere, so its false
    # positives on unknown voxels count); unknown voxels enter the one-hot as background, which is dropped.
    intersection, denominator = masked_dice_sums(logits.float(), safe, torch.ones_like(known),
                                                 tuple(range(2, logits.ndim)))
    item_class = complete.to(intersection.dtype)
    dice = (2.0 * (intersection * item_class).sum(0) + smooth) / ((denominator * item_class).sum(0) + smooth)
    return ce + dice_weight * (1.0 - dice[1:][used]).mean()
