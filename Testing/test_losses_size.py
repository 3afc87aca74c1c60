"""Tests of the size constraint, the log-barrier extension and its schedule."""

from __future__ import annotations

import math

import pytest
import torch

from WeakSegLib.losses import (
    LogBarrierSchedule,
    SizeConstraintLoss,
    log_barrier,
    relative_bound_loss,
    size_constraint_loss,
    size_log_barrier,
    size_penalty,
    size_proposal_labels,
    size_proposal_loss,
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


# uniform logits (1, 2, 4, 4): each class has soft size V = 8 in a region of n = 16 voxels, so the floor
# of a bound is f = max(1, 0.016) = 1 and each side is relative to its own bound: z = (a - V) / max(a, 1),
# z = (V - b) / max(b, 1), cost r^2 for r = relu(z) <= 1, 2r - 1 beyond
PENALTY_CASES = [
    # lower, upper, expected (class 1 active only)
    (10.0, 12.0, ((10 - 8) / 10) ** 2),  # z_low = 0.2 -> 0.04
    (2.0, 6.0, ((8 - 6) / 6) ** 2),  # z_up = 1/3 -> 1/9
    (2.0, 3.0, 2 * (8 - 3) / 3 - 1),  # z_up = 5/3 > 1: linear, 2 * 5/3 - 1 = 7/3
    (4.0, 12.0, 0.0),
    (8.0, 8.0, 0.0),
    (9.0, 9.0, (1 / 9) ** 2),  # equality constraint: z_low = (9 - 8) / 9
    (20.0, 20.0, ((20 - 8) / 20) ** 2),  # a lower bound above n stays on: z_low = 0.6 -> 0.36
    (0.5, 0.5, 2 * (8 - 0.5) / 1 - 1),  # bound below the floor: z_up = 7.5 / max(0.5, 1) -> 14
    (4.0, 16.0, 0.0),  # upper = n is vacuous
]


@pytest.mark.parametrize("lower,upper,expected", PENALTY_CASES)
def test_size_penalty_values(lower, upper, expected) -> None:
    logits = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    active = torch.tensor([[False, True]])
    value = size_constraint_loss(logits, lower, upper, active)
    assert value.item() == pytest.approx(expected, rel=1e-12, abs=1e-15)
    none = size_constraint_loss(logits, lower, upper, active, reduction="none")
    assert none.shape == (1, 2) and none[0, 0].item() == 0.0
    sizes = torch.full((1, 2), 8.0, dtype=torch.float64)   # the same from soft sizes
    assert size_penalty(sizes, lower, upper, active, region_size=16.0).item() == pytest.approx(value.item())


def test_size_log_barrier_values() -> None:
    logits = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    t = 5.0
    value = size_constraint_loss(logits, 10.0, 12.0, torch.tensor([[False, True]]), method="log_barrier", t=t)
    # V = 8: z_low = (10 - 8) / 10 = 0.2 (linear part), z_up = (8 - 12) / 12 = -1/3 (log part)
    expected = _reference_barrier(0.2, t) + _reference_barrier(-1 / 3, t)
    assert value.item() == pytest.approx(expected, rel=1e-12)
    sizes = torch.full((1, 2), 8.0, dtype=torch.float64)
    barrier = size_log_barrier(sizes, 10.0, 12.0, torch.tensor([[False, True]]), region_size=16.0, t=t)
    assert barrier.item() == pytest.approx(expected, rel=1e-12)


def test_half_a_bound_costs_a_quarter_whatever_the_size() -> None:
    # V = a / 2 for organs of 2000, 20000 and 500000 voxels in a region of 10^6 (floor 1000 below every a):
    # z = (a - a/2) / a = 0.5 -> 0.25; normalised by the region size it would cost (a / 2 / 10^6)^2, i.e. 1e-6
    # for the smallest one
    lower = torch.tensor([[2000.0, 20000.0, 500000.0]], dtype=torch.float64)
    value = size_penalty(lower / 2, lower, math.inf, region_size=1e6, reduction="none")
    torch.testing.assert_close(value, torch.full((1, 3), 0.25, dtype=torch.float64))
    # the same 50 % excess over an upper bound: z_up = 0.5 -> 0.25
    value = size_penalty(lower * 1.5, 0.0, lower, region_size=1e6, reduction="none")
    torch.testing.assert_close(value, torch.full((1, 3), 0.25, dtype=torch.float64))


def test_penalty_is_quadratic_then_linear_and_c1() -> None:
    # lower = 100, no floor at play: z = (100 - V) / 100; at V = 0 (z = 1) both branches give 1, slope 2 / 100
    sizes = torch.tensor([[0.0, 1e-7, -1e-7, -100.0]], dtype=torch.float64, requires_grad=True)
    value = size_penalty(sizes, 100.0, math.inf, reduction="none")
    (grad,) = torch.autograd.grad(value.sum(), sizes)
    z = [1.0, 1.0 - 1e-9, 1.0 + 1e-9, 2.0]
    expected = [1.0, z[1] ** 2, 2 * z[2] - 1, 2 * 2.0 - 1]  # 1, ~1, ~1, 3
    torch.testing.assert_close(value[0], torch.tensor(expected, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(grad, torch.full_like(sizes, -2 / 100), rtol=1e-6, atol=0.0)


def test_size_barrier_skips_vacuous_sides() -> None:
    sizes = torch.tensor([[4.0, 0.0]], dtype=torch.float64)
    # lower = 0 and upper = region size are always satisfied: exactly 0
    value = size_log_barrier(sizes, 0.0, 16.0, region_size=16.0, reduction="none")
    assert value.abs().sum().item() == 0.0
    # suppression (upper = 0) is measured against the floor f = max(1, 1e-3 * 16000) = 16:
    # z = V / 16, linear part of the barrier, slope t / 16
    sizes.requires_grad_()
    value = size_log_barrier(sizes, 0.0, 0.0, region_size=16000.0, t=5.0, reduction="none")
    torch.testing.assert_close(
        value.detach(), torch.tensor([[_reference_barrier(4 / 16, 5.0), _reference_barrier(0.0, 5.0)]],
                                     dtype=torch.float64))
    value.sum().backward()
    torch.testing.assert_close(sizes.grad, torch.full_like(sizes, 5.0 / 16.0))


def test_size_penalty_functional_and_inf_bounds() -> None:
    sizes = torch.tensor([[3.0, 7.0]], requires_grad=True)
    value = size_penalty(
        sizes, torch.tensor([[5.0, -math.inf]]), torch.tensor([[math.inf, 6.0]]), reduction="sum"
    )
    value.backward()
    # region_size None: floor 1, no cap; class 0: z_low = (5 - 3) / 5 = 0.4; class 1: z_up = (7 - 6) / 6
    assert value.item() == pytest.approx(0.4**2 + (1 / 6) ** 2)
    assert torch.isfinite(sizes.grad).all()


def _relative_by_hand(v: float, a: float, b: float, n: float, method: str, t: float) -> float:
    """One constraint of relative_bound_loss written with python floats."""
    f = max(1.0, 1e-3 * n)
    cost = 0.0
    for on, z in ((math.isfinite(a) and a > 0, (a - v) / max(a, f)),
                  (math.isfinite(b) and b < n, (v - b) / max(b, f))):
        if on:
            r = max(z, 0.0)
            cost += (r * r if r <= 1 else 2 * r - 1) if method == "penalty" else _reference_barrier(z, t)
    return cost


GROUPINGS = [
    # logits shape, groups
    ((3, 4, 5, 6), None),
    ((2, 3, 4, 5, 6), None),
    ((4, 3, 5, 5), (0, 0, 1, 1)),
    ((5, 2, 3, 40), (2, 0, 0, 1, 2)),
    ((2, 2, 30, 40), None),  # regions over 1000 voxels: floor f = 1e-3 * n > 1
    ((3, 2, 2, 20, 30), (0, 0, 0)),
]


@pytest.mark.parametrize("method", ["penalty", "log_barrier"])
@pytest.mark.parametrize("shape,groups", GROUPINGS)
def test_size_constraint_loss_is_relative_bound_loss_on_random_inputs(shape, groups, method) -> None:
    g = torch.Generator().manual_seed(sum(shape))
    logits = 2.0 * torch.randn(shape, dtype=torch.float64, generator=g)
    group_ids = None if groups is None else torch.tensor(groups)
    num = shape[0] if groups is None else max(groups) + 1
    per_item = math.prod(shape[2:])
    n = [float(per_item * (1 if groups is None else groups.count(k))) for k in range(num)]
    k = shape[1]
    # bounds around the random soft sizes, with vacuous (0, inf, >= n) and inactive entries
    sizes = torch.softmax(logits, 1).sum(tuple(range(2, len(shape))))
    if groups is not None:
        sizes = torch.zeros(num, k, dtype=torch.float64).index_add(0, group_ids, sizes)
    lower = sizes * torch.empty(num, k, dtype=torch.float64).uniform_(0.3, 1.7, generator=g)
    upper = lower * torch.empty(num, k, dtype=torch.float64).uniform_(1.0, 2.0, generator=g)
    lower[0, 0], upper[-1, -1], upper[0, -1] = 0.0, math.inf, n[0]
    active = torch.rand(num, k, generator=g) > 0.2
    active[0, 1] = True
    value = size_constraint_loss(logits, lower, upper, active, group_ids, num, method, 3.0, "mean")
    region = torch.tensor(n, dtype=torch.float64)[:, None]
    reference = relative_bound_loss(sizes, lower, upper, active, region, method, 3.0)
    assert value.item() == pytest.approx(reference.item(), rel=1e-12, abs=1e-15)
    by_hand = [
        _relative_by_hand(float(sizes[i, c]), float(lower[i, c]), float(upper[i, c]), n[i], method, 3.0)
        for i in range(num) for c in range(k) if active[i, c]
    ]
    assert value.item() == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-10, abs=1e-15)
    none = size_constraint_loss(logits, lower, upper, active, group_ids, num, method, 3.0, "none")
    assert none.shape == (num, k) and bool((none[~active] == 0).all())
    total = size_constraint_loss(logits, lower, upper, active, group_ids, num, method, 3.0, "sum")
    assert total.item() == pytest.approx(value.item() * int(active.sum()), rel=1e-12, abs=1e-15)


def test_gradcheck_float64() -> None:
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 3, 4, 4, dtype=torch.float64, generator=g, requires_grad=True)
    lower = torch.tensor([[0.0, 4.0, 2.0], [1.0, 12.0, 0.5], [3.0, 0.0, 6.0]], dtype=torch.float64)
    upper = torch.tensor([[3.0, 6.0, math.inf], [2.0, 16.0, 0.5], [5.0, 0.0, 10.0]], dtype=torch.float64)
    groups = torch.tensor([0, 2, 1])
    for method in ("penalty", "log_barrier"):
        assert torch.autograd.gradcheck(
            lambda x, m=method: size_constraint_loss(x, lower, upper, None, groups, None, m, 2.0), (logits,))
    sizes = (torch.rand(3, 3, dtype=torch.float64, generator=g) * 12).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: size_penalty(v, lower, upper, region_size=16.0), (sizes,))
    assert torch.autograd.gradcheck(lambda v: size_log_barrier(v, lower, upper, t=4.0), (sizes,))
    assert torch.autograd.gradcheck(
        lambda v: relative_bound_loss(v, lower, upper, None, 16.0, "penalty", reduction="none"), (sizes,))


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
    # V = 16 in each region of n = 32 voxels (floor 1; upper = 32 = n is vacuous)
    # group 0: z_low = (20 - 16) / 20 = 0.2 -> 0.04; group 1: z_up = (16 - 4) / 4 = 3 -> 2 * 3 - 1 = 5
    torch.testing.assert_close(none, torch.tensor([[0.0, 0.2**2], [0.0, 5.0]]))
    mean = SizeConstraintLoss()(logits, lower, upper, active, groups)
    assert mean.item() == pytest.approx((0.04 + 5.0) / 2)


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
    with pytest.raises(ValueError, match="region_size must be > 0 and finite"):
        size_log_barrier(torch.zeros(1, 2), 0.0, 1.0, region_size=math.inf)
    with pytest.raises(ValueError, match=r"sizes must be a floating \(G, C\) tensor"):
        size_penalty(torch.zeros(2), 0.0, 1.0)


def test_relative_bound_loss_inactive_and_infinite_bounds_are_safe() -> None:
    value = torch.tensor([[3.0, 5.0]], dtype=torch.float64, requires_grad=True)
    lower = torch.tensor([[math.inf, 2.0]], dtype=torch.float64)
    upper = torch.tensor([[math.inf, -math.inf]], dtype=torch.float64)
    active = torch.tensor([[True, False]])
    loss = relative_bound_loss(value, lower, upper, active, 10.0, "log_barrier")
    (grad,) = torch.autograd.grad(loss, value)
    assert loss.item() == 0.0 and bool((grad == 0).all())
    nothing = relative_bound_loss(value, 1.0, 2.0, False, None)
    assert nothing.item() == 0.0 and nothing.requires_grad


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"value": [[1.0]]}, TypeError, "value must be a torch.Tensor"),
        ({"value": torch.ones(1, 2, dtype=torch.long)}, TypeError, "value must be a floating point tensor"),
        ({"value_max": 0.0}, ValueError, "value_max must be finite and > 0"),
        ({"value_max": math.inf}, ValueError, "value_max must be finite and > 0"),
        ({"value_max": torch.ones(3)}, ValueError, r"value_max must be broadcastable to \(1, 2\)"),
        ({"lower": torch.zeros(3)}, ValueError, r"lower must be broadcastable to \(1, 2\)"),
        ({"lower": 3.0}, ValueError, r"lower must be <= upper .* at index \(0, 0\)"),
        ({"upper": math.nan}, ValueError, "must not contain NaN"),
        ({"active": torch.ones(1, 2)}, TypeError, "active must be a bool"),
        ({"method": "barrier"}, ValueError, "method must be one of"),
        ({"t": 0.0}, ValueError, "t must be a finite positive"),
        ({"reduction": "max"}, ValueError, "reduction must be one of"),
    ],
)
def test_relative_bound_loss_ill_inputs(kwargs, error, match) -> None:
    args = {"value": torch.ones(1, 2), "lower": 0.0, "upper": 2.0, "active": None, "value_max": 4.0, **kwargs}
    with pytest.raises(error, match=match):
        relative_bound_loss(**args)


# ------------------------------------------------------------------------------------ size proposals
def _probs(fg: list[float]) -> torch.Tensor:
    """(1, 2, 1, n) probabilities with foreground ``fg`` per voxel."""
    p = torch.tensor(fg, dtype=torch.float64)
    return torch.stack([1 - p, p])[None, :, None, :]


def test_size_proposal_takes_the_most_probable_voxels_up_to_the_range() -> None:
    probs = _probs([0.45, 0.05, 0.4, 0.3, 0.2, 0.1])           # no voxel above 0.5: hard size 0
    on = torch.tensor([False, True])
    # Hard size 0 < lower 3: the 3 most probable voxels become foreground, the rest background.
    labels = size_proposal_labels(probs, [0, 3], [0, 4], on)
    assert labels.tolist() == [[[1, 0, 1, 1, 0, 0]]]
    # A hard size inside the range is kept: 0.9 and 0.8 are the network's own mask.
    labels = size_proposal_labels(_probs([0.9, 0.8, 0.4, 0.1]), [0, 1], [0, 3], on)
    assert labels.tolist() == [[[1, 1, 0, 0]]]
    # Above the upper bound: only the upper bound's worth of the most probable.
    labels = size_proposal_labels(_probs([0.9, 0.8, 0.7, 0.6]), [0, 1], [0, 2], on)
    assert labels.tolist() == [[[1, 1, 0, 0]]]
    # Where the class is tagged absent it is never chosen, even the most probable voxel.
    allowed = torch.ones(2, 1, 6, dtype=torch.bool)
    allowed[1, 0, 0] = False
    labels = size_proposal_labels(_probs([0.45, 0.05, 0.4, 0.3, 0.2, 0.1]), [0, 3], [0, 3], on, allowed)
    assert labels.tolist() == [[[0, 0, 1, 1, 1, 0]]]


def test_size_proposal_classes_without_range_stay_unknown_and_conflicts_go_to_the_likelier() -> None:
    p = torch.tensor([[0.1, 0.1, 0.2, 0.6],        # background
                      [0.5, 0.6, 0.1, 0.1],        # class 1, range [2, 2]
                      [0.4, 0.3, 0.7, 0.3]],       # class 2, no range
                     dtype=torch.float64)[None, :, None, :]
    labels = size_proposal_labels(p, [0, 2, 0], [0, 2, 0], torch.tensor([False, True, False]))
    assert labels.tolist() == [[[1, 1, -1, 0]]]
    p = torch.tensor([[0.2, 0.2, 0.8],
                      [0.5, 0.3, 0.1],             # class 1, range [2, 2]: voxels 0 and 1
                      [0.3, 0.5, 0.1]],            # class 2, range [2, 2]: voxels 1 and 0
                     dtype=torch.float64)[None, :, None, :]
    labels = size_proposal_labels(p, [0, 2, 2], [0, 2, 2], torch.tensor([False, True, True]))
    assert labels.tolist() == [[[1, 2, 0]]]


def test_size_proposal_loss_is_cross_entropy_on_the_proposal_by_hand() -> None:
    fg = [0.45, 0.05, 0.4, 0.3]
    logits = torch.log(_probs(fg)).requires_grad_(True)
    loss = size_proposal_loss(logits, [0, 2], [0, 2], torch.tensor([False, True]))
    # Proposal: voxels 0 and 2 foreground, 1 and 3 background.
    expected = -(math.log(0.45) + math.log(0.95) + math.log(0.4) + math.log(0.7)) / 4
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-9)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[0, 1, 0, 0] < 0 < logits.grad[0, 1, 0, 1]
    with pytest.raises(ValueError, match="one volume"):
        size_proposal_labels(torch.rand(2, 2, 3, 3), [0, 1], [0, 2], torch.tensor([False, True]))
    with pytest.raises(ValueError, match="one entry per class"):
        size_proposal_labels(torch.rand(1, 2, 3, 3), [0, 1, 2], [0, 2], torch.tensor([False, True]))
