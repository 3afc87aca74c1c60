"""Losses of WeakSeg: partial supervision, global constraints and priors, regularisers.

Each term is a function (the maths) plus a thin :class:`torch.nn.Module` (configuration only).
Shared conventions:

* ``logits``: (B, C, H, W) or (B, C, D, H, W), class 0 = background; probabilities are
  ``softmax(logits, dim=1)`` unless stated otherwise.
* ``labels``: (B, *spatial) or (B, 1, *spatial) int64; ``ignore_index`` (default -1) = unknown.
* ``groups``: optional (B,) int64 region id of each item (e.g. slices of one volume); global
  constraints apply to the prediction summed over a region; None = each item is a region.
* ``lower`` / ``upper`` / ``active``: (G, C) bounds (voxels) and which constraints exist.
* ``reduction``: ``"mean"`` | ``"sum"`` | ``"none"`` (shapes documented per function).

This subpackage imports only torch.
"""

from ._utils import group_sum
from .adjacency import NonAdjacencyLoss, non_adjacency_loss, soft_adjacency
from .box import BoxEmptinessLoss, BoxTightnessLoss, box_emptiness_loss, box_size_loss, box_tightness_loss
from .class_ratio import ClassRatioLoss, class_ratio_kl_loss
from .consistency import (
    ConsistencyLoss,
    CrossModalEquivarianceLoss,
    EquivarianceLoss,
    Flip,
    Rot90,
    Scale,
    consistency_loss,
    cross_modal_equivariance_loss,
    equivariance_loss,
    flip,
    rot90,
    scale,
)
from .crf import CRFLoss, crf_loss, crf_offsets
from .entropy import EntropyLoss, entropy_loss
from .moments import (
    CentroidConstraintLoss,
    SpreadConstraintLoss,
    centroid_constraint_loss,
    soft_moments,
    spread_constraint_loss,
)
from .partial import PartialCrossEntropyLoss, PartialDiceLoss, partial_cross_entropy, partial_dice_loss
from .size import (
    LogBarrierSchedule,
    SizeConstraintLoss,
    inequality_loss,
    log_barrier,
    size_constraint_loss,
    size_log_barrier,
    size_penalty,
    soft_size,
)
from .smile import SmileLoss, marginal_dice_ce_loss, smile_loss, smile_targets
from .supervised import DiceCELoss, dice_ce_loss
from .tags import TagConstraintLoss, tag_constraint_loss

__all__ = [
    # helpers
    "group_sum",
    "soft_size",
    "soft_moments",
    "soft_adjacency",
    "inequality_loss",
    # partial supervision
    "partial_cross_entropy",
    "partial_dice_loss",
    "PartialCrossEntropyLoss",
    "PartialDiceLoss",
    # size and log-barrier
    "log_barrier",
    "LogBarrierSchedule",
    "size_penalty",
    "size_log_barrier",
    "size_constraint_loss",
    "SizeConstraintLoss",
    # tags
    "tag_constraint_loss",
    "TagConstraintLoss",
    # pairwise (CRF) regularisation
    "crf_loss",
    "crf_offsets",
    "CRFLoss",
    # boxes
    "box_emptiness_loss",
    "box_tightness_loss",
    "box_size_loss",
    "BoxEmptinessLoss",
    "BoxTightnessLoss",
    # class ratio
    "class_ratio_kl_loss",
    "ClassRatioLoss",
    # moments
    "centroid_constraint_loss",
    "spread_constraint_loss",
    "CentroidConstraintLoss",
    "SpreadConstraintLoss",
    # entropy
    "entropy_loss",
    "EntropyLoss",
    # SMILE
    "smile_targets",
    "smile_loss",
    "marginal_dice_ce_loss",
    "SmileLoss",
    # consistency / equivariance
    "consistency_loss",
    "equivariance_loss",
    "cross_modal_equivariance_loss",
    "flip",
    "rot90",
    "scale",
    "Flip",
    "Rot90",
    "Scale",
    "ConsistencyLoss",
    "EquivarianceLoss",
    "CrossModalEquivarianceLoss",
    # non-adjacency
    "non_adjacency_loss",
    "NonAdjacencyLoss",
    # full supervision
    "dice_ce_loss",
    "DiceCELoss",
]
