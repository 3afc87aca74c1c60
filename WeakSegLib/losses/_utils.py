"""Shared helpers of the losses: input and option checks, group sums, reductions, module base.

Everything here is plain torch; the checks raise :class:`ValueError` / :class:`TypeError` whose
message gives the expected and the actual shapes (never ``assert`` on user input).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = [
    "REDUCTIONS",
    "METHODS",
    "group_sum",
    "check_reduction",
    "check_method",
    "check_t",
    "check_positive",
    "check_non_negative",
    "check_ignore_index",
    "check_tensor",
    "check_logits",
    "check_labels",
    "check_mask",
    "optional_mask",
    "resolve_groups",
    "sum_by_group",
    "region_sizes",
    "broadcast_param",
    "broadcast_active",
    "broadcast_bounds",
    "masked_reduce",
    "reduce",
    "safe_divide",
    "spatial_dims",
    "ConstraintLossModule",
]

REDUCTIONS = ("mean", "sum", "none")
METHODS = ("penalty", "log_barrier")

TensorLike = torch.Tensor | float | int | Sequence[float]


def check_reduction(reduction: str) -> str:
    """Return ``reduction`` if it is one of ``"mean"``, ``"sum"``, ``"none"``, else raise ValueError."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")
    return reduction


def check_method(method: str) -> str:
    """Return ``method`` if it is ``"penalty"`` or ``"log_barrier"``, else raise ValueError."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}.")
    return method


def check_t(t: float | torch.Tensor) -> float:
    """Return the log-barrier parameter ``t`` as a python float; it must be finite and > 0."""
    if isinstance(t, torch.Tensor):
        if t.numel() != 1:
            raise ValueError(f"t must be a scalar, got a tensor of shape {tuple(t.shape)}.")
        t = float(t.item())
    if isinstance(t, bool) or not isinstance(t, (int, float)):
        raise TypeError(f"t must be a positive float, got {type(t).__name__}.")
    t = float(t)
    if not math.isfinite(t) or t <= 0.0:
        raise ValueError(f"t must be a finite positive float, got {t}.")
    return t


def check_positive(value: float, name: str) -> float:
    """Return ``value`` as a float if it is a real number > 0 (not a bool), else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{name} must be a float > 0, got {value!r}.")
    return float(value)


def check_non_negative(value: float, name: str) -> float:
    """Return ``value`` as a float if it is a real number >= 0 (not a bool, not NaN), else raise ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0:
        raise ValueError(f"{name} must be a float >= 0, got {value!r}.")
    return float(value)


def check_ignore_index(ignore_index: int) -> int:
    """Return ``ignore_index`` if it is an int (not a bool), else raise TypeError."""
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}.")
    return ignore_index


def check_tensor(x: object, name: str) -> torch.Tensor:
    """Return ``x`` if it is a :class:`torch.Tensor`, else raise TypeError naming ``name``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}.")
    return x


def spatial_dims(x: torch.Tensor) -> tuple[int, ...]:
    """Indices of the spatial dimensions of a (B, C, *spatial) tensor: ``(2, ..., ndim - 1)``."""
    return tuple(range(2, x.ndim))


def check_logits(
    logits: torch.Tensor, name: str = "logits", allowed_spatial: Sequence[int] = (2, 3)
) -> torch.Tensor:
    """Check that ``logits`` is a floating (B, C, H, W) or (B, C, D, H, W) tensor and return it.

    float16 / bfloat16 inputs are returned as float32 (differentiably): the global sums of the
    losses (sizes, moments, Dice) overflow float16 above 65504 voxels.
    """
    check_tensor(logits, name)
    if not logits.is_floating_point():
        raise TypeError(f"{name} must be a floating point tensor, got dtype {logits.dtype}.")
    if logits.ndim - 2 not in tuple(allowed_spatial):
        layouts = {2: "(B, C, H, W)", 3: "(B, C, D, H, W)"}
        expected = " or ".join(layouts.get(n, f"(B, C, <{n} spatial dims>)") for n in allowed_spatial)
        raise ValueError(f"{name} must have shape {expected}, got {tuple(logits.shape)}.")
    if logits.shape[0] < 1 or logits.shape[1] < 1:
        raise ValueError(f"{name} needs at least one item and one class, got shape {tuple(logits.shape)}.")
    if logits.dtype in (torch.float16, torch.bfloat16):
        return logits.float()
    return logits


def check_labels(
    labels: torch.Tensor, logits: torch.Tensor, ignore_index: int = -1, name: str = "labels"
) -> torch.Tensor:
    """Check integer ``labels`` of shape (B, *spatial) or (B, 1, *spatial) against ``logits``.

    Returns the labels as int64 of shape (B, *spatial). Values must be class indices in
    ``[0, C)`` or ``ignore_index``.
    """
    check_tensor(labels, name)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor (int64 class indices), got dtype {labels.dtype}.")
    check_ignore_index(ignore_index)
    labels = _voxel_shape(labels, logits, name).to(device=logits.device, dtype=torch.long)
    num_classes = logits.shape[1]
    known = labels != ignore_index
    bad = known & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        value = int(labels[bad][0])
        raise ValueError(
            f"{name} values must be class indices in [0, {num_classes - 1}] or ignore_index={ignore_index}, "
            f"found {value}."
        )
    return labels


def check_mask(mask: torch.Tensor, logits: torch.Tensor, name: str = "mask") -> torch.Tensor:
    """Check a boolean voxel mask of shape (B, *spatial) or (B, 1, *spatial); return (B, *spatial)."""
    check_tensor(mask, name)
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got dtype {mask.dtype}.")
    return _voxel_shape(mask, logits, name).to(logits.device)


def optional_mask(mask: torch.Tensor | None, values: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """:func:`check_mask` of ``mask`` against ``logits``, or all True of the shape of ``values`` when None."""
    if mask is None:
        return torch.ones(values.shape, dtype=torch.bool, device=values.device)
    return check_mask(mask, logits)


def _voxel_shape(x: torch.Tensor, logits: torch.Tensor, name: str) -> torch.Tensor:
    """Squeeze a (B, 1, *spatial) voxel map to (B, *spatial) and check it matches ``logits`` (B, C, *spatial)."""
    expected = (logits.shape[0], *logits.shape[2:])
    if x.ndim == logits.ndim and x.shape[1] == 1:
        x = x.squeeze(1)
    if tuple(x.shape) != tuple(expected):
        raise ValueError(
            f"{name} must have shape (B, *spatial) = {tuple(expected)} or (B, 1, *spatial) to match "
            f"logits of shape {tuple(logits.shape)}, got {tuple(x.shape)}."
        )
    return x


def resolve_groups(
    groups: torch.Tensor | None,
    batch_size: int,
    num_groups: int | None = None,
    shape_hints: Sequence[object] = (),
) -> tuple[torch.Tensor | None, int]:
    """Validate ``groups`` and return ``(groups as int64 or None, G)``.

    ``groups`` is None (each item is its own region, G = B) or a (B,) integer tensor with values
    in ``[0, G)``. When ``num_groups`` is None, G is the largest of ``groups.max() + 1`` and the
    leading size of any tensor in ``shape_hints`` with at least two dims (e.g. ``lower`` (G, C)).
    """
    if num_groups is not None:
        if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1:
            raise ValueError(f"num_groups must be a positive int, got {num_groups!r}.")
    if groups is None:
        if num_groups is not None and num_groups != batch_size:
            raise ValueError(
                f"num_groups={num_groups} but groups is None (each of the B={batch_size} items is its own "
                "region); pass groups of shape (B,) to merge items into regions."
            )
        return None, batch_size
    if not isinstance(groups, torch.Tensor):
        raise TypeError(f"groups must be a torch.Tensor of shape (B,), got {type(groups).__name__}.")
    if groups.is_floating_point() or groups.is_complex() or groups.dtype == torch.bool:
        raise TypeError(f"groups must be an integer tensor, got dtype {groups.dtype}.")
    if tuple(groups.shape) != (batch_size,):
        raise ValueError(f"groups must have shape (B,) = ({batch_size},), got {tuple(groups.shape)}.")
    groups = groups.long()
    if bool((groups < 0).any()):
        raise ValueError(f"groups values must be >= 0, got min {int(groups.min())}.")
    needed = int(groups.max()) + 1
    if num_groups is None:
        num_groups = needed
        for hint in shape_hints:
            if isinstance(hint, torch.Tensor) and hint.ndim >= 2:
                num_groups = max(num_groups, int(hint.shape[0]))
    elif needed > num_groups:
        raise ValueError(f"groups values must be < num_groups={num_groups}, got max {needed - 1}.")
    return groups, num_groups


def group_sum(
    x: torch.Tensor, groups: torch.Tensor | None = None, num_groups: int | None = None
) -> torch.Tensor:
    """Sum the items of ``x`` (B, ...) that share a group id: returns (G, ...).

    ``out[g] = sum_{b : groups[b] == g} x[b]`` computed with ``index_add`` (differentiable with
    respect to ``x``). With ``groups=None`` each item is its own region and ``x`` is returned.
    A group without items sums to 0.
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 1:
        raise TypeError("x must be a torch.Tensor with a leading batch dimension.")
    groups, num = resolve_groups(groups, x.shape[0], num_groups)
    return sum_by_group(x, groups, num)


def sum_by_group(x: torch.Tensor, groups: torch.Tensor | None, num_groups: int) -> torch.Tensor:
    """:func:`group_sum` of ``x`` (B, ...) -> (G, ...) for ``groups`` already checked by :func:`resolve_groups`.

    No check and no device synchronisation: ``groups`` is None (``x`` is returned) or (B,) int64.
    """
    if groups is None:
        return x
    return x.new_zeros((num_groups, *x.shape[1:])).index_add(0, groups.to(x.device), x)


def region_sizes(x: torch.Tensor, groups: torch.Tensor | None, num_groups: int) -> torch.Tensor:
    """Number of voxels of each region, (G,), in the dtype of ``x`` (B, C, *spatial); >= 1.

    ``groups`` and ``num_groups`` as returned by :func:`resolve_groups`.
    """
    per_item = x.new_full((x.shape[0],), float(math.prod(x.shape[2:])))
    return sum_by_group(per_item, groups, num_groups).clamp_min(1.0)


def broadcast_param(value: TensorLike, shape: Sequence[int], like: torch.Tensor, name: str) -> torch.Tensor:
    """Convert ``value`` (float or tensor) to ``like``'s dtype/device and broadcast it to ``shape``."""
    if isinstance(value, torch.Tensor):
        if value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must be a real number or a real tensor, got dtype {value.dtype}.")
        tensor = value.to(device=like.device, dtype=like.dtype)
    else:
        try:
            tensor = torch.as_tensor(value, dtype=like.dtype, device=like.device)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise TypeError(f"{name} must be a float or a tensor, got {type(value).__name__}.") from exc
    return _broadcast(tensor, shape, name)


def broadcast_active(
    active: torch.Tensor | bool | None, shape: Sequence[int], device: torch.device, name: str = "active"
) -> torch.Tensor:
    """Convert ``active`` (None = all, bool, or a bool/integer tensor) to a bool tensor of ``shape``."""
    if active is None:
        return torch.ones(tuple(shape), dtype=torch.bool, device=device)
    if isinstance(active, bool):
        return torch.full(tuple(shape), active, dtype=torch.bool, device=device)
    if not isinstance(active, torch.Tensor):
        raise TypeError(f"{name} must be a bool tensor, got {type(active).__name__}.")
    if active.is_floating_point() or active.is_complex():
        raise TypeError(f"{name} must be a bool (or integer 0/1) tensor, got dtype {active.dtype}.")
    return _broadcast(active.to(device=device).bool(), shape, name)


def broadcast_bounds(
    lower: TensorLike, upper: TensorLike, active: torch.Tensor | bool | None, like: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``lower``, ``upper`` (:func:`broadcast_param`) and ``active`` (:func:`broadcast_active`) shaped as ``like``."""
    shape = tuple(like.shape)
    low = broadcast_param(lower, shape, like, "lower")
    up = broadcast_param(upper, shape, like, "upper")
    return low, up, broadcast_active(active, shape, like.device)


def _broadcast(tensor: torch.Tensor, shape: Sequence[int], name: str) -> torch.Tensor:
    """``torch.broadcast_to(tensor, shape)``, with a ValueError naming ``name`` when it cannot."""
    try:
        return torch.broadcast_to(tensor, tuple(shape))
    except RuntimeError:
        raise ValueError(
            f"{name} must be broadcastable to {tuple(shape)}, got shape {tuple(tensor.shape)}."
        ) from None


def safe_divide(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` where ``den > 0`` and 0 elsewhere, with finite gradients everywhere."""
    positive = den > 0
    safe_den = torch.where(positive, den, torch.ones_like(den))
    return torch.where(positive, num / safe_den, torch.zeros_like(num / safe_den))


def masked_reduce(values: torch.Tensor, mask: torch.Tensor, reduction: str) -> torch.Tensor:
    """Zero the entries of ``values`` where ``mask`` is False, then reduce.

    ``"none"``: the zeroed tensor; ``"sum"``: its sum; ``"mean"``: its sum divided by the number
    of True entries of ``mask`` (0, still connected to the graph, when there are none).
    """
    mask = torch.broadcast_to(mask, values.shape)
    values = torch.where(mask, values, torch.zeros((), dtype=values.dtype, device=values.device))
    if reduction == "none":
        return values
    total = values.sum()
    if reduction == "sum":
        return total
    count = mask.sum().to(values.dtype)
    return total / count.clamp_min(1.0)


def reduce(values: torch.Tensor, reduction: str, denominator: float | torch.Tensor | None = None) -> torch.Tensor:
    """``"none"``: ``values``; ``"sum"``: ``values.sum()``; ``"mean"``: ``values.mean()``, or
    ``values.sum() / denominator`` when a ``denominator`` (> 0) is given."""
    if reduction == "none":
        return values
    if reduction == "sum":
        return values.sum()
    if denominator is None:
        return values.mean()
    return values.sum() / denominator


class ConstraintLossModule(nn.Module):
    """Base of the module forms whose function takes ``method``, ``t`` and ``reduction``.

    Checks the three options on construction and holds them as plain attributes (update ``t``
    from a :class:`~WeakSegLib.losses.size.LogBarrierSchedule` between epochs).
    """

    def __init__(self, method: str = "penalty", t: float = 5.0, reduction: str = "mean") -> None:
        super().__init__()
        self.method = check_method(method)
        self.t = check_t(t)
        self.reduction = check_reduction(reduction)
