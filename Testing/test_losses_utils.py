"""Tests of the shared helpers of WeakSegLib.losses (group sums, checks, reductions)."""

from __future__ import annotations

import pytest
import torch

from WeakSegLib.losses import group_sum
from WeakSegLib.losses._utils import (
    broadcast_active,
    broadcast_param,
    check_labels,
    check_logits,
    masked_reduce,
    resolve_groups,
    safe_divide,
)


def test_group_sum_values_and_gradient() -> None:
    x = torch.arange(12.0, dtype=torch.float64).reshape(4, 3).requires_grad_()
    groups = torch.tensor([0, 1, 0, 2])
    out = group_sum(x, groups)
    expected = torch.stack([x[0] + x[2], x[1], x[3]])
    torch.testing.assert_close(out, expected)
    assert torch.autograd.gradcheck(lambda v: group_sum(v, groups), (x,))


def test_group_sum_none_and_empty_group() -> None:
    x = torch.ones(2, 3)
    assert group_sum(x) is x
    out = group_sum(x, torch.tensor([0, 0]), num_groups=3)
    torch.testing.assert_close(out, torch.tensor([[2.0] * 3, [0.0] * 3, [0.0] * 3]))


@pytest.mark.parametrize(
    "groups,num_groups,error,match",
    [
        (torch.tensor([0, 1, 2]), None, ValueError, r"shape \(B,\) = \(2,\), got \(3,\)"),
        (torch.tensor([0.0, 1.0]), None, TypeError, "integer tensor"),
        (torch.tensor([0, -1]), None, ValueError, ">= 0"),
        (torch.tensor([0, 3]), 2, ValueError, "< num_groups=2"),
        (None, 3, ValueError, "num_groups=3 but groups is None"),
        (torch.tensor([0, 1]), 0, ValueError, "positive int"),
    ],
)
def test_ill_groups(groups, num_groups, error, match) -> None:
    with pytest.raises(error, match=match):
        group_sum(torch.ones(2, 3), groups, num_groups)


def test_resolve_groups_uses_shape_hints() -> None:
    groups, num = resolve_groups(torch.tensor([0, 0]), 2, None, (torch.zeros(4, 3),))
    assert num == 4 and groups.dtype == torch.long


def test_masked_reduce() -> None:
    values = torch.tensor([[1.0, float("inf")], [3.0, 4.0]])
    mask = torch.tensor([[True, False], [True, True]])
    assert masked_reduce(values, mask, "sum").item() == 8.0
    assert masked_reduce(values, mask, "mean").item() == pytest.approx(8.0 / 3.0)
    torch.testing.assert_close(masked_reduce(values, mask, "none"), torch.tensor([[1.0, 0.0], [3.0, 4.0]]))
    empty = masked_reduce(values, torch.zeros_like(mask), "mean")
    assert empty.item() == 0.0


def test_safe_divide_zero_denominator() -> None:
    num = torch.tensor([1.0, 0.0], requires_grad=True)
    den = torch.tensor([2.0, 0.0], requires_grad=True)
    out = safe_divide(num, den)
    out.sum().backward()
    torch.testing.assert_close(out, torch.tensor([0.5, 0.0]))
    assert torch.isfinite(num.grad).all() and torch.isfinite(den.grad).all()


def test_broadcast_helpers() -> None:
    like = torch.zeros(2, 3)
    assert broadcast_param(1.5, (2, 3), like, "lower").shape == (2, 3)
    assert broadcast_active(torch.tensor([True, False, True]), (2, 3), like.device).shape == (2, 3)
    with pytest.raises(ValueError, match=r"lower must be broadcastable to \(2, 3\), got shape \(4,\)"):
        broadcast_param(torch.zeros(4), (2, 3), like, "lower")
    with pytest.raises(TypeError, match="bool"):
        broadcast_active(torch.zeros(2, 3), (2, 3), like.device)


@pytest.mark.parametrize(
    "logits,error,match",
    [
        (torch.zeros(2, 3, 4), ValueError, r"\(B, C, H, W\) or \(B, C, D, H, W\), got \(2, 3, 4\)"),
        (torch.zeros(2, 3, 4, 4, dtype=torch.long), TypeError, "floating point"),
        ([1.0], TypeError, "torch.Tensor"),
    ],
)
def test_ill_logits(logits, error, match) -> None:
    with pytest.raises(error, match=match):
        check_logits(logits)


def test_check_labels_squeezes_and_validates() -> None:
    logits = torch.zeros(2, 3, 4, 4)
    out = check_labels(torch.zeros(2, 1, 4, 4, dtype=torch.long), logits)
    assert out.shape == (2, 4, 4)
    with pytest.raises(ValueError, match=r"\(B, \*spatial\) = \(2, 4, 4\).*got \(2, 4, 5\)"):
        check_labels(torch.zeros(2, 4, 5, dtype=torch.long), logits)
    with pytest.raises(ValueError, match=r"\[0, 2\] or ignore_index=-1, found 3"):
        check_labels(torch.full((2, 4, 4), 3), logits)
    with pytest.raises(TypeError, match="integer tensor"):
        check_labels(torch.zeros(2, 4, 4), logits)
