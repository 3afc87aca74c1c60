"""Non-adjacency prior: penalise contact between classes that never touch anatomically.

Reference: P.-A. Ganaye, M. Sdika, H. Benoit-Cattin, "Semi-supervised learning for segmentation
under semantic constraint", MICCAI 2018.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from WeakSegLib.losses._utils import check_logits, check_reduction, reduce

__all__ = ["soft_adjacency", "non_adjacency_loss", "NonAdjacencyLoss"]

PairsLike = Sequence[Sequence[int]] | torch.Tensor


def _check_kernel(kernel_size: int) -> int:
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int):
        raise ValueError(f"kernel_size must be an odd int >= 1, got {kernel_size!r}.")
    if kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd int >= 1 (centred neighbourhood), got {kernel_size!r}.")
    return kernel_size


def _check_pairs(forbidden_pairs: PairsLike, num_classes: int) -> list[tuple[int, int]]:
    """Accept a list of (i, j) pairs or a (C, C) bool matrix; return a list of pairs."""
    if isinstance(forbidden_pairs, torch.Tensor) and forbidden_pairs.dtype == torch.bool:
        if tuple(forbidden_pairs.shape) != (num_classes, num_classes):
            raise ValueError(
                f"a forbidden_pairs matrix must have shape (C, C) = ({num_classes}, {num_classes}), "
                f"got {tuple(forbidden_pairs.shape)}."
            )
        return [(int(i), int(j)) for i, j in forbidden_pairs.nonzero().tolist()]
    pairs = []
    try:
        for pair in forbidden_pairs:
            i, j = (int(v) for v in pair)
            pairs.append((i, j))
    except (TypeError, ValueError):
        raise TypeError(
            "forbidden_pairs must be a sequence of (i, j) class pairs or a (C, C) bool tensor, "
            f"got {forbidden_pairs!r}."
        ) from None
    for i, j in pairs:
        if not (0 <= i < num_classes and 0 <= j < num_classes):
            raise ValueError(f"forbidden pair ({i}, {j}) has a class outside [0, {num_classes - 1}].")
        if i == j:
            raise ValueError(f"forbidden pair ({i}, {j}) pairs a class with itself.")
    return pairs


def _dilate(x: torch.Tensor, kernel_size: int) -> torch.Tensor:
    """Max-pooling of (B, K, *spatial) over a ``kernel_size`` window (stride 1, same size), 2D or 3D."""
    pool = F.max_pool2d if x.ndim == 4 else F.max_pool3d
    return pool(x, kernel_size, stride=1, padding=kernel_size // 2)


def soft_adjacency(probs: torch.Tensor, kernel_size: int = 3) -> torch.Tensor:
    r"""Soft adjacency matrix :math:`A_{b,i,j} = \frac{1}{n}\sum_p \mathrm{dilate}(s_i)_p\, s_{j,p}`.

    ``dilate`` is a max-pooling of window ``kernel_size`` (stride 1, same size), 2D or 3D;
    :math:`n` is the number of voxels per item, so :math:`A \in [0, 1]`.

    Args:
        probs: (B, C, H, W) or (B, C, D, H, W) probabilities.
        kernel_size: odd int >= 1.

    Returns:
        (B, C, C) tensor.
    """
    probs = check_logits(probs, name="probs")
    kernel_size = _check_kernel(kernel_size)
    dilated = _dilate(probs, kernel_size)
    n_voxels = float(math.prod(probs.shape[2:]))
    return torch.einsum("bi...,bj...->bij", dilated, probs) / n_voxels


def non_adjacency_loss(
    logits: torch.Tensor,
    forbidden_pairs: PairsLike,
    kernel_size: int = 3,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Non-adjacency prior (Ganaye et al., MICCAI 2018): penalise :math:`A_{ij}` for forbidden pairs.

    .. math:: \mathcal{L}_{b,(i,j)} = A_{b,i,j} = \frac{1}{n}\sum_p \mathrm{dilate}(s_i)_p\, s_{j,p}

    with ``s = softmax(logits)`` (see :func:`soft_adjacency`). A forbidden pair is directed:
    list ``(j, i)`` too for the symmetric constraint (the two values nearly coincide).

    Args:
        logits: (B, C, H, W) or (B, C, D, H, W).
        forbidden_pairs: sequence of (i, j) class pairs, or a (C, C) bool matrix.
        kernel_size: odd neighbourhood size (3 = touching voxels incl. diagonals).
        reduction: ``"mean"`` over items and pairs, ``"sum"``, ``"none"`` -> (B, P) (P pairs in
            the given order; row-major order of a matrix).
    """
    logits = check_logits(logits)
    check_reduction(reduction)
    kernel_size = _check_kernel(kernel_size)
    pairs = _check_pairs(forbidden_pairs, logits.shape[1])
    if not pairs:
        values = logits.sum() * 0.0
        return values.new_zeros((logits.shape[0], 0)) if reduction == "none" else values
    probs = torch.softmax(logits, dim=1)
    first = torch.tensor([i for i, _ in pairs], device=logits.device)
    second = torch.tensor([j for _, j in pairs], device=logits.device)
    dilated = _dilate(probs[:, first], kernel_size)
    n_voxels = float(math.prod(logits.shape[2:]))
    values = (dilated * probs[:, second]).sum(dim=tuple(range(2, logits.ndim))) / n_voxels
    return reduce(values, reduction)


class NonAdjacencyLoss(nn.Module):
    """Module form of :func:`non_adjacency_loss`; holds the forbidden pairs; ``forward(logits)``."""

    def __init__(self, forbidden_pairs: PairsLike, kernel_size: int = 3, reduction: str = "mean") -> None:
        super().__init__()
        if isinstance(forbidden_pairs, torch.Tensor) and forbidden_pairs.dtype == torch.bool:
            self.forbidden_pairs = [tuple(p) for p in forbidden_pairs.nonzero().tolist()]
        else:
            self.forbidden_pairs = _check_pairs(forbidden_pairs, num_classes=1 << 30)
        self.kernel_size = _check_kernel(kernel_size)
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return non_adjacency_loss(logits, self.forbidden_pairs, self.kernel_size, self.reduction)
