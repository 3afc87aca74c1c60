"""Losses of WeakSeg: partial supervision, global constraints and priors, regularisers.

Each term is a function (the maths) plus a thin :class:`torch.nn.Module` (configuration only).
Shared conventions:

* ``logits``: (B, C, H, W) or (B, C, D, H, W), class 0 = background; probabilities are
  ``softmax(logits, dim=1)`` unless stated otherwise.
* ``labels``: (B, *spatial) or (B, 1, *spatial) int64; ``ignore_index`` (default -1) = unknown.
* ``groups``: optional (B,) int64 region id of each item (e.g. slices of one volume); global
  constraints apply to the prediction summed over a region; None = each item is a region.
* ``lower`` / ``upper`` / ``active``: (G, C) bounds (voxels) and which constraints exist; size-like
  bounds (size ranges, tags, box fill fractions) are relative violations, each side normalised by
  its own bound (:func:`~WeakSegLib.losses.size.relative_bound_loss`).
* ``reduction``: ``"mean"`` | ``"sum"`` | ``"none"`` (shapes documented per function).

This subpackage imports only torch.
"""

from WeakSegLib.losses import (
    adjacency,
    box,
    class_ratio,
    consistency,
    crf,
    entropy,
    moments,
    partial,
    size,
    smile,
    supervised,
    tags,
)
from WeakSegLib.losses._utils import group_sum
from WeakSegLib.losses.adjacency import *  # noqa: F403
from WeakSegLib.losses.box import *  # noqa: F403
from WeakSegLib.losses.class_ratio import *  # noqa: F403
from WeakSegLib.losses.consistency import *  # noqa: F403
from WeakSegLib.losses.crf import *  # noqa: F403
from WeakSegLib.losses.entropy import *  # noqa: F403
from WeakSegLib.losses.moments import *  # noqa: F403
from WeakSegLib.losses.partial import *  # noqa: F403
from WeakSegLib.losses.size import *  # noqa: F403
from WeakSegLib.losses.smile import *  # noqa: F403
from WeakSegLib.losses.supervised import *  # noqa: F403
from WeakSegLib.losses.tags import *  # noqa: F403

# Each module lists its public names once, in its own ``__all__``.
_MODULES = (partial, size, tags, crf, box, class_ratio, moments, adjacency, entropy, smile, consistency, supervised)
__all__ = ["group_sum", *(name for module in _MODULES for name in module.__all__)]
