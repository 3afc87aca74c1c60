"""Tests of the size constraint, the log-barrier extension and its schedule."""

from __future__ import annotations

import math

import pytest
import torch

from WeakSegLib.losses import (
    LogBarrierSchedule,
    SizeConstraintLoss,
    log_barrier,
    size_constraint_loss,
    size_log_barrier,
    size_penalty,
    soft_size,
)


def _reference_barrier(z: float, t: float) -> float:
    if z <= -1.0 / t**2:
        return -math.log(-z) / t
    return t * z - math.log(1.0 / t**2) / t + 1.0 / t


@pytest.mark.parametrize("t", [1.0, 5.0, 37.5])
@pytest.mark.parametrize("z", [-3.0, -0.5, -0.04, -1e-3, 0.0, 1e-3, 0.7, 12.0])
def test_log_barrier_matches_definition(z: float, t: float) -> None:
    value = log_barrier(torch.tensor(z, dtype=torch.float64), t)
    assert value.item() == pytest.approx(_reference_barrier(z, t), rel=1e-12, abs=1e-12)


def test_log_barrier_is_c1_and_safe_at_zero() -> None:
    t = 5.0
    threshold = -1.0 / t**2
    z = torch.tensor([threshold - 1e-9, threshold + 1e-9, 0.0, -1e30, 1e30], dtype=torch.float64)
    z.requires_grad_()
    value = log_barrier(z, t)
    value.sum().backward()
    assert torch.isfinite(value).all() and torch.isfinite(z.grad).all()
    assert value[0].item() == pytest.approx(value[1].item(), abs=1e-7)
    assert z.grad[0].item() == pytest.approx(t, rel=1e-6) and z.grad[1].item() == pytest.approx(t)
    assert z.grad[2].item() == t  # linear part at z = 0
    x = torch.linspace(-2, 1, 31, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: log_barrier(v, 3.0), (x,))


def test_log_barrier_schedule() -> None:
    schedule = LogBarrierSchedule(t0=5.0, factor=2.0, t_max=12.0)
    assert schedule.t == 5.0
    assert [schedule.step() for _ in range(3)] == [10.0, 12.0, 12.0]
    other = LogBarrierSchedule()
    other.load_state_dict(schedule.state_dict())
    assert other.state_dict() == {"t": 12.0, "t0": 5.0, "factor": 2.0, "t_max": 12.0}
    with pytest.raises(ValueError, match="missing keys"):
        other.load_state_dict({"t": 1.0})


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"t0": 0.0}, "finite positive"),
        ({"factor": 0.5}, "factor must be >= 1"),
        ({"t0": 10.0, "t_max": 5.0}, "t_max must be >= t0"),
    ],
)
def test_schedule_ill_opts(kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        LogBarrierSchedule(**kwargs)


def test_soft_size_with_groups() -> None:
    probs = torch.softmax(torch.randn(3, 2, 4, 4, dtype=torch.float64), 1)
    per_item = probs.sum((2, 3))
    torch.testing.assert_close(soft_size(probs), per_item)
    grouped = soft_size(probs, torch.tensor([1, 0, 1]))
    torch.testing.assert_close(grouped, torch.stack([per_item[1], per_item[0] + per_item[2]]))


# uniform logits (1, 2, 4, 4): each class has soft size 8 in a region of 16 voxels
PENALTY_CASES = [
    # lower, upper, expected (class 1 active only)
    (10.0, 12.0, (10 - 8) ** 2 / 16**2),
    (2.0, 6.0, (8 - 6) ** 2 / 16**2),
    (4.0, 12.0, 0.0),
    (8.0, 8.0, 0.0),
    (9.0, 9.0, 1 / 16**2),  # equality constraint
]


@pytest.mark.parametrize("lower,upper,expected", PENALTY_CASES)
def test_size_penalty_values(lower, upper, expected) -> None:
    logits = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    active = torch.tensor([[False, True]])
    value = size_constraint_loss(logits, lower, upper, active)
    assert value.item() == pytest.approx(expected, abs=1e-15)
    none = size_constraint_loss(logits, lower, upper, active, reduction="none")
    assert none.shape == (1, 2) and none[0, 0].item() == 0.0


def test_size_log_barrier_values() -> None:
    logits = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    t = 5.0
    value = size_constraint_loss(logits, 10.0, 12.0, torch.tensor([[False, True]]), method="log_barrier", t=t)
    expected = _reference_barrier((10 - 8) / 16, t) + _reference_barrier((8 - 12) / 16, t)
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_size_barrier_skips_vacuous_sides() -> None:
    sizes = torch.tensor([[4.0, 0.0]], dtype=torch.float64)
    # lower = 0 and upper = region size are always satisfied: exactly 0
    value = size_log_barrier(sizes, 0.0, 16.0, region_size=16.0, reduction="none")
    assert value.abs().sum().item() == 0.0
    # suppression (upper = 0) of an empty class: linear part, finite, slope t / n
    sizes.requires_grad_()
    value = size_log_barrier(sizes, 0.0, 0.0, region_size=16.0, t=5.0, reduction="sum")
    value.backward()
    torch.testing.assert_close(sizes.grad, torch.full_like(sizes, 5.0 / 16.0))


def test_size_penalty_functional_and_inf_bounds() -> None:
    sizes = torch.tensor([[3.0, 7.0]], requires_grad=True)
    value = size_penalty(
        sizes, torch.tensor([[5.0, -math.inf]]), torch.tensor([[math.inf, 6.0]]), reduction="sum"
    )
    value.backward()
    assert value.item() == pytest.approx(4.0 + 1.0)
    assert torch.isfinite(sizes.grad).all()


def test_groups_sum_over_volume() -> None:
    g = torch.Generator().manual_seed(1)
    slices = torch.randn(3, 2, 4, 4, dtype=torch.float64, generator=g)
    # the three slices of one volume == a single 3D item
    grouped = size_constraint_loss(slices, 10.0, 20.0, groups=torch.tensor([0, 0, 0]), reduction="none")
    volume = slices.permute(1, 0, 2, 3).unsqueeze(0)
    direct = size_constraint_loss(volume, 10.0, 20.0, reduction="none")
    torch.testing.assert_close(grouped, direct)
    assert grouped.shape == (1, 2)


def test_mixed_groups_and_module() -> None:
    logits = torch.zeros(4, 2, 4, 4)
    lower = torch.tensor([[0.0, 20.0], [0.0, 0.0]])
    upper = torch.tensor([[32.0, 32.0], [32.0, 4.0]])
    active = torch.tensor([[False, True], [False, True]])
    groups = torch.tensor([0, 0, 1, 1])
    none = SizeConstraintLoss(reduction="none")(logits, lower, upper, active, groups)
    # group 0: V = 16 in 32 voxels -> ((20 - 16) / 32)^2; group 1: ((16 - 4) / 32)^2
    torch.testing.assert_close(none, torch.tensor([[0.0, (4 / 32) ** 2], [0.0, (12 / 32) ** 2]]))
    mean = SizeConstraintLoss()(logits, lower, upper, active, groups)
    assert mean.item() == pytest.approx(((4 / 32) ** 2 + (12 / 32) ** 2) / 2)


def test_no_active_constraint_is_zero() -> None:
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    value = size_constraint_loss(logits, 1.0, 2.0, active=torch.zeros(2, 3, dtype=torch.bool))
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_empty_class_and_zero_size_bounds_3d() -> None:
    logits = torch.full((1, 2, 2, 3, 3), -1e4)
    logits[:, 0] = 1e4  # class 1 empty, exactly 0 in float32
    logits.requires_grad_()
    for method in ("penalty", "log_barrier"):
        value = size_constraint_loss(logits, 0.0, 0.0, method=method) + size_constraint_loss(
            logits, 5.0, 5.0, method=method
        )
        (grad,) = torch.autograd.grad(value, logits)
        assert torch.isfinite(value) and torch.isfinite(grad).all()


@pytest.mark.parametrize(
    "lower,upper,active,groups,error,match",
    [
        (
            torch.zeros(3),
            1.0,
            None,
            None,
            ValueError,
            r"lower must be broadcastable to \(2, 2\), got shape \(3,\)",
        ),
        (0.0, torch.zeros(5, 2), None, None, ValueError, r"upper must be broadcastable to \(2, 2\)"),
        (0.0, 1.0, torch.ones(2, 3, dtype=torch.bool), None, ValueError, r"active must be broadcastable"),
        (0.0, 1.0, torch.ones(2, 2), None, TypeError, "active must be a bool"),
        (0.0, 1.0, None, torch.tensor([0]), ValueError, r"groups must have shape \(B,\) = \(2,\)"),
        (5.0, 1.0, None, None, ValueError, "lower must be <= upper"),
        (float("nan"), 1.0, None, None, ValueError, "NaN"),
    ],
)
def test_ill_shape(lower, upper, active, groups, error, match) -> None:
    logits = torch.zeros(2, 2, 3, 3)
    with pytest.raises(error, match=match):
        size_constraint_loss(logits, lower, upper, active, groups)


def test_ill_opts() -> None:
    logits = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError, match="method must be one of"):
        size_constraint_loss(logits, 0.0, 1.0, method="barrier")
    with pytest.raises(ValueError, match="t must be a finite positive"):
        size_constraint_loss(logits, 0.0, 1.0, method="log_barrier", t=-1.0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        SizeConstraintLoss(reduction="max")
    with pytest.raises(ValueError, match="region_size must be > 0"):
        size_penalty(torch.zeros(1, 2), 0.0, 1.0, region_size=0.0)
    with pytest.raises(ValueError, match=r"sizes must be a floating \(G, C\) tensor"):
        size_penalty(torch.zeros(2), 0.0, 1.0)
