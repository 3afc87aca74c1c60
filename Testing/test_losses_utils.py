"""Tests of the shared helpers of WeakSegLib.losses (group sums, checks, reductions)."""

from __future__ import annotations

import pytest
import torch

from WeakSegLib.losses import group_sum
from WeakSegLib.losses._utils import (
    ConstraintLossModule,
    broadcast_active,
    broadcast_bounds,
    broadcast_param,
    check_ignore_index,
    check_labels,
    check_logits,
    check_mask,
    check_non_negative,
    check_positive,
    masked_reduce,
    optional_mask,
    reduce,
    resolve_groups,
    safe_divide,
    sum_by_group,
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


def test_sum_by_group_matches_group_sum() -> None:
    x = torch.arange(12.0).reshape(4, 3)
    groups, num = resolve_groups(torch.tensor([2, 0, 2, 1]), 4, None)
    torch.testing.assert_close(sum_by_group(x, groups, num), group_sum(x, torch.tensor([2, 0, 2, 1])))
    assert sum_by_group(x, None, 4) is x


def test_reduce() -> None:
    values = torch.tensor([1.0, 2.0, 6.0])
    assert reduce(values, "none") is values
    assert reduce(values, "sum").item() == 9.0
    assert reduce(values, "mean").item() == 3.0
    assert reduce(values, "mean", 2).item() == 4.5


def test_optional_mask() -> None:
    logits = torch.zeros(2, 3, 4, 4)
    values = torch.zeros(2, 4, 4)
    assert optional_mask(None, values, logits).all() and optional_mask(None, values, logits).shape == (2, 4, 4)
    mask = torch.zeros(2, 1, 4, 4, dtype=torch.bool)
    torch.testing.assert_close(optional_mask(mask, values, logits), check_mask(mask, logits))
    with pytest.raises(TypeError, match="mask must be a bool tensor"):
        optional_mask(torch.zeros(2, 4, 4), values, logits)


def test_broadcast_bounds() -> None:
    low, up, act = broadcast_bounds(1.0, torch.tensor([2.0, 3.0, 4.0]), None, torch.zeros(2, 3, dtype=torch.float64))
    assert low.shape == up.shape == act.shape == (2, 3)
    assert low.dtype == up.dtype == torch.float64 and act.dtype == torch.bool and bool(act.all())
    with pytest.raises(ValueError, match=r"upper must be broadcastable to \(2, 3\), got shape \(2,\)"):
        broadcast_bounds(1.0, torch.zeros(2), None, torch.zeros(2, 3))


@pytest.mark.parametrize(
    "check,value,error,match",
    [
        (check_positive, 0, ValueError, r"eps must be a float > 0, got 0\."),
        (check_positive, True, ValueError, r"eps must be a float > 0, got True\."),
        (check_positive, "1", ValueError, r"eps must be a float > 0, got '1'\."),
        (check_non_negative, -1.0, ValueError, r"eps must be a float >= 0, got -1.0\."),
        (check_non_negative, float("nan"), ValueError, r"eps must be a float >= 0, got nan\."),
    ],
)
def test_ill_numbers(check, value, error, match) -> None:
    with pytest.raises(error, match=match):
        check(value, "eps")


def test_number_checks_return_floats() -> None:
    assert check_positive(2, "eps") == 2.0 and isinstance(check_positive(2, "eps"), float)
    assert check_non_negative(0, "w") == 0.0 and isinstance(check_non_negative(0, "w"), float)
    assert check_ignore_index(-1) == -1
    with pytest.raises(TypeError, match="ignore_index must be an int, got bool"):
        check_ignore_index(False)


@pytest.mark.parametrize(
    "options,error,match",
    [
        ({"method": "exact"}, ValueError, "method must be one of"),
        ({"t": 0.0}, ValueError, "t must be a finite positive float"),
        ({"reduction": "avg"}, ValueError, "reduction must be one of"),
    ],
)
def test_constraint_module_ill_opts(options, error, match) -> None:
    with pytest.raises(error, match=match):
        ConstraintLossModule(**options)


def test_constraint_module_holds_checked_options() -> None:
    module = ConstraintLossModule("log_barrier", 3, "sum")
    assert (module.method, module.t, module.reduction) == ("log_barrier", 3.0, "sum")
    assert isinstance(module.t, float)
