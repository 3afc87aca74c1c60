"""Consistency and equivariance regularisers, and the small spatial transforms they use.

References: S. Laine, T. Aila, "Temporal ensembling for semi-supervised learning", ICLR 2017
(prediction consistency); Y. Wang et al., "Self-supervised equivariant attention mechanism for
weakly supervised semantic segmentation", CVPR 2020 (equivariance); G. Patel, J. Dolz, "Weakly
supervised segmentation with cross-modality equivariant constraints", MedIA 77, 2022
(cross-modal equivariance).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from WeakSegLib.losses._utils import check_logits, check_reduction, masked_reduce, optional_mask

__all__ = [
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
]

KINDS = ("mse", "kl")
Transform = Callable[[torch.Tensor], torch.Tensor]


def _resolve_dims(dims: Sequence[int], ndim: int) -> tuple[int, ...]:
    out = []
    for d in dims:
        r = d + ndim if d < 0 else d
        if not 2 <= r < ndim:
            raise ValueError(
                f"transform dims must index spatial dims of a (B, C, *spatial) tensor with {ndim} dims, "
                f"i.e. be in [2, {ndim - 1}] or [-{ndim - 2}, -1], got {d}."
            )
        out.append(r)
    return tuple(out)


def _check_int_dims(dims: Sequence[int], name: str) -> tuple[int, ...]:
    if isinstance(dims, int):
        dims = (dims,)
    try:
        values = tuple(dims)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of ints, got {dims!r}.") from None
    if not values or not all(isinstance(d, int) and not isinstance(d, bool) for d in values):
        raise TypeError(f"{name} must be a non-empty sequence of ints, got {dims!r}.")
    return values


class Flip:
    """Flip along tensor ``dims`` (spatial dims of (B, C, *spatial), e.g. ``(-1,)``); its own inverse."""

    def __init__(self, dims: Sequence[int]) -> None:
        self.dims = _check_int_dims(dims, "dims")

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return torch.flip(x, _resolve_dims(self.dims, x.ndim))

    def inverse(self) -> Flip:
        return Flip(self.dims)

    def __repr__(self) -> str:
        return f"Flip(dims={self.dims})"


class Rot90:
    """Rotate by ``k`` quarter turns in the plane of tensor ``dims`` (two spatial dims); inverse: ``-k``."""

    def __init__(self, k: int = 1, dims: Sequence[int] = (-2, -1)) -> None:
        if isinstance(k, bool) or not isinstance(k, int):
            raise TypeError(f"k must be an int, got {k!r}.")
        self.dims = _check_int_dims(dims, "dims")
        if len(self.dims) != 2:
            raise ValueError(f"rot90 needs exactly 2 dims, got {self.dims}.")
        self.k = k

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        dims = _resolve_dims(self.dims, x.ndim)
        if dims[0] == dims[1]:
            raise ValueError(f"rot90 dims must be different, got {self.dims}.")
        return torch.rot90(x, self.k, dims)

    def inverse(self) -> Rot90:
        return Rot90(-self.k, self.dims)

    def __repr__(self) -> str:
        return f"Rot90(k={self.k}, dims={self.dims})"


class Scale:
    """Rescale the spatial dims by ``factor`` (bilinear in 2D, trilinear in 3D, ``align_corners=False``).

    :meth:`inverse` rescales by ``1 / factor``. The round trip is approximate: bilinear
    resampling is not invertible, and when ``size * factor`` is not an integer the size is not
    restored exactly. Prefer ``inverse=None`` in :func:`equivariance_loss` for scalings.
    """

    def __init__(self, factor: float) -> None:
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 0:
            raise ValueError(f"scale factor must be a float > 0, got {factor!r}.")
        self.factor = float(factor)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        modes = {4: "bilinear", 5: "trilinear"}
        if x.ndim not in modes:
            raise ValueError(f"scale expects (B, C, H, W) or (B, C, D, H, W), got {tuple(x.shape)}.")
        return F.interpolate(x, scale_factor=self.factor, mode=modes[x.ndim], align_corners=False)

    def inverse(self) -> Scale:
        return Scale(1.0 / self.factor)

    def __repr__(self) -> str:
        return f"Scale(factor={self.factor:g})"


def flip(dims: Sequence[int]) -> Flip:
    """Flip transform along tensor ``dims`` (spatial, e.g. ``(-1,)``; see :class:`Flip`)."""
    return Flip(dims)


def rot90(k: int = 1, dims: Sequence[int] = (-2, -1)) -> Rot90:
    """Quarter-turn rotation transform (see :class:`Rot90`)."""
    return Rot90(k, dims)


def scale(factor: float) -> Scale:
    """Rescaling transform via :func:`torch.nn.functional.interpolate` (see :class:`Scale`)."""
    return Scale(factor)


def _check_kind(kind: str) -> str:
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}.")
    return kind


def consistency_loss(
    logits_a: torch.Tensor,
    logits_b: torch.Tensor,
    kind: str = "mse",
    mask: torch.Tensor | None = None,
    reduction: str = "mean",
    detach_target: bool = True,
) -> torch.Tensor:
    r"""Consistency between two predictions of the same voxels.

    * ``"mse"``: :math:`\frac{1}{C}\sum_c (p_{a,c} - p_{b,c})^2` per voxel, with
      :math:`p = \mathrm{softmax}` (so the unmasked mean equals ``F.mse_loss(p_a, p_b)``);
    * ``"kl"``: :math:`\mathrm{KL}(p_b \| p_a) = \sum_c p_{b,c}(\log p_{b,c} - \log p_{a,c})`
      per voxel, with ``log_softmax`` on both sides (finite for extreme logits).

    ``b`` is the target: with ``detach_target=True`` (default) no gradient flows into it.

    Args:
        logits_a, logits_b: (B, C, H, W) or (B, C, D, H, W), same shape.
        kind: ``"mse"`` or ``"kl"``.
        mask: optional (B, *spatial) bool, voxels that count.
        reduction: ``"mean"`` over (masked) voxels, ``"sum"``, ``"none"`` -> (B, *spatial).
        detach_target: detach ``logits_b``.
    """
    logits_a = check_logits(logits_a, "logits_a")
    logits_b = check_logits(logits_b, "logits_b")
    _check_kind(kind)
    check_reduction(reduction)
    if logits_a.shape != logits_b.shape:
        raise ValueError(
            f"logits_a and logits_b must have the same shape, got {tuple(logits_a.shape)} and "
            f"{tuple(logits_b.shape)}."
        )
    if detach_target:
        logits_b = logits_b.detach()
    if kind == "mse":
        values = ((torch.softmax(logits_a, 1) - torch.softmax(logits_b, 1)) ** 2).mean(1)
    else:
        log_a = torch.log_softmax(logits_a, 1)
        log_b = torch.log_softmax(logits_b, 1)
        values = (log_b.exp() * (log_b - log_a)).sum(1)
    return masked_reduce(values, optional_mask(mask, values, logits_a), reduction)


def _check_callable(obj: object, name: str) -> None:
    if not callable(obj):
        raise TypeError(f"{name} must be callable, got {type(obj).__name__}.")


def equivariance_loss(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    transform: Transform,
    inverse: Transform | None = None,
    kind: str = "mse",
    detach_target: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Equivariance of ``model`` to the spatial ``transform`` T.

    * ``inverse=None``: consistency between :math:`f(T(x))` and the target :math:`T(f(x))`;
    * ``inverse`` given: consistency between :math:`T^{-1}(f(T(x)))` and the target :math:`f(x)`
      (compares in the original space, e.g. for non-invertible-size scalings).

    ``T`` is applied to logits (interpolation of logits for :class:`Scale`). By default both
    branches receive gradients (``detach_target=False``).

    Args:
        model: callable mapping (B, C_in, *spatial) images to (B, C, *spatial) logits.
        x: input images.
        transform, inverse: callables on (B, ·, *spatial) tensors (:func:`flip`, :func:`rot90`,
            :func:`scale` or any other).
        kind, detach_target, reduction: as :func:`consistency_loss`.
    """
    _check_callable(model, "model")
    _check_callable(transform, "transform")
    if inverse is not None:
        _check_callable(inverse, "inverse")
    _check_kind(kind)
    check_reduction(reduction)
    if inverse is None:
        pred = model(transform(x))
        target = transform(model(x))
    else:
        pred = inverse(model(transform(x)))
        target = model(x)
    if pred.shape != target.shape:
        raise ValueError(
            f"equivariance compares tensors of different shapes {tuple(pred.shape)} and "
            f"{tuple(target.shape)}; "
            "use a transform whose inverse restores the size (e.g. an integer-friendly scale factor)."
        )
    return consistency_loss(pred, target, kind, detach_target=detach_target, reduction=reduction)


def _check_group_count(groups: list[list[int]]) -> None:
    if len(groups) < 2 or any(len(g) == 0 for g in groups):
        raise ValueError(f"channel_groups needs at least 2 non-empty groups, got {groups}.")


def _check_channel_groups(channel_groups: Sequence[Sequence[int]], num_channels: int) -> list[list[int]]:
    try:
        groups = [[int(c) for c in group] for group in channel_groups]
    except TypeError:
        raise TypeError(
            f"channel_groups must be a sequence of sequences of channel indices, got {channel_groups!r}."
        ) from None
    _check_group_count(groups)
    for g in groups:
        for c in g:
            if not 0 <= c < num_channels:
                raise ValueError(f"channel index {c} out of range for an input with {num_channels} channels.")
    return groups


def cross_modal_equivariance_loss(
    model: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    transform: Transform,
    channel_groups: Sequence[Sequence[int]],
    kind: str = "mse",
    detach_target: bool = False,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Cross-modal equivariance (Patel & Dolz, MedIA 2022) with one shared multi-channel model.

    The input channels are split into modality groups (e.g. ``[[0], [1]]`` for FLAIR vs T1c);
    :math:`x^{(g)}` keeps the channels of group g and zeroes the others. For every ordered pair
    of different groups (g, h), the prediction on the transformed group-g input must match the
    transformed prediction on the group-h input:

    .. math:: \mathcal{L} = \frac{1}{G(G-1)} \sum_{g \ne h}
              D\big(f(T(x^{(g)})),\; T(f(x^{(h)}))\big)

    with D = :func:`consistency_loss` (``kind``). The paper uses one network per modality and
    CAMs; here a single network sees the zero-filled inputs (modality dropout), which keeps the
    trainer's model unchanged. 2G forward passes.

    Args:
        model: callable (B, C_in, *spatial) -> (B, C, *spatial) logits.
        x: (B, C_in, *spatial) multi-channel input.
        transform: spatial transform applied to images and logits.
        channel_groups: at least 2 non-empty lists of channel indices.
        kind, detach_target, reduction: as :func:`consistency_loss` (``"none"`` -> the mean
            over pairs of the (B, *spatial) maps).
    """
    _check_callable(model, "model")
    _check_callable(transform, "transform")
    _check_kind(kind)
    check_reduction(reduction)
    if not isinstance(x, torch.Tensor) or x.ndim < 3:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"x must be a (B, C_in, *spatial) tensor, got {got}.")
    groups = _check_channel_groups(channel_groups, x.shape[1])
    preds = []
    targets = []
    for group in groups:
        keep = torch.zeros(x.shape[1], dtype=x.dtype, device=x.device)
        keep[group] = 1
        x_g = x * keep.view(1, -1, *([1] * (x.ndim - 2)))
        preds.append(model(transform(x_g)))
        targets.append(transform(model(x_g)))
    losses = [
        consistency_loss(preds[g], targets[h], kind, detach_target=detach_target, reduction=reduction)
        for g in range(len(groups))
        for h in range(len(groups))
        if g != h
    ]
    return torch.stack(losses).mean(0)


class _ConsistencyModule(nn.Module):
    """Base of the module forms: checks and holds ``kind``, ``detach_target`` and ``reduction``."""

    def __init__(self, kind: str, detach_target: bool, reduction: str) -> None:
        super().__init__()
        self.kind = _check_kind(kind)
        self.detach_target = bool(detach_target)
        self.reduction = check_reduction(reduction)


class ConsistencyLoss(_ConsistencyModule):
    """Module form of :func:`consistency_loss`; ``forward(logits_a, logits_b, mask=None)``."""

    def __init__(self, kind: str = "mse", detach_target: bool = True, reduction: str = "mean") -> None:
        super().__init__(kind, detach_target, reduction)

    def forward(
        self, logits_a: torch.Tensor, logits_b: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return consistency_loss(logits_a, logits_b, self.kind, mask, self.reduction, self.detach_target)


class EquivarianceLoss(_ConsistencyModule):
    """Module form of :func:`equivariance_loss`; holds the transform; ``forward(model, x)``."""

    def __init__(
        self,
        transform: Transform,
        inverse: Transform | None = None,
        kind: str = "mse",
        detach_target: bool = False,
        reduction: str = "mean",
    ) -> None:
        _check_callable(transform, "transform")
        if inverse is not None:
            _check_callable(inverse, "inverse")
        super().__init__(kind, detach_target, reduction)
        self.transform = transform
        self.inverse = inverse

    def forward(self, model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return equivariance_loss(
            model, x, self.transform, self.inverse, self.kind, self.detach_target, self.reduction
        )


class CrossModalEquivarianceLoss(_ConsistencyModule):
    """Module form of :func:`cross_modal_equivariance_loss`; ``forward(model, x)``."""

    def __init__(
        self,
        transform: Transform,
        channel_groups: Sequence[Sequence[int]],
        kind: str = "mse",
        detach_target: bool = False,
        reduction: str = "mean",
    ) -> None:
        _check_callable(transform, "transform")
        groups = [[int(c) for c in g] for g in channel_groups]
        _check_group_count(groups)
        super().__init__(kind, detach_target, reduction)
        self.transform = transform
        self.channel_groups = groups

    def forward(self, model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return cross_modal_equivariance_loss(
            model, x, self.transform, self.channel_groups, self.kind, self.detach_target, self.reduction
        )
