"""Tests of the image-tag (presence / absence) constraints."""

from __future__ import annotations

import math

import pytest
import torch

from WeakSegLib.losses import TagConstraintLoss, log_barrier, size_constraint_loss, tag_constraint_loss

# uniform logits (1, 3, 4, 4): every class has soft size V = 16/3 in n = 16 voxels; floor f = max(1, 0.016) = 1.
# present: z = (m - V) / max(m, 1); absent: z = V / 1; cost r^2 for r = relu(z) <= 1, 2r - 1 beyond
TAG_CASES = [
    # tags, min_size, expected "none" row
    ([1, 0, -1], 1.0, [0.0, 2 * 16 / 3 - 1, 0.0]),  # present: 1 - 16/3 < 0; absent: z = 16/3 -> 29/3
    ([1, 1, 1], 8.0, [((8 - 16 / 3) / 8) ** 2] * 3),  # z = (8/3) / 8 = 1/3 -> 1/9
    ([-1, -1, -1], 1.0, [0.0, 0.0, 0.0]),
    ([0, 0, 0], 1.0, [2 * 16 / 3 - 1] * 3),
    ([1, 1, 0], 0.0, [0.0, 0.0, 2 * 16 / 3 - 1]),  # min_size 0: inclusion is vacuous
]


@pytest.mark.parametrize("tags,min_size,expected", TAG_CASES)
def test_tag_penalty_values(tags, min_size, expected) -> None:
    logits = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    tags_t = torch.tensor([tags])
    none = tag_constraint_loss(logits, tags_t, min_size=min_size, reduction="none")
    torch.testing.assert_close(none, torch.tensor([expected], dtype=torch.float64))
    known = sum(v != -1 for v in tags)
    mean = tag_constraint_loss(logits, tags_t, min_size=min_size)
    assert mean.item() == pytest.approx(sum(expected) / max(known, 1))


def test_tags_are_measured_against_the_floor_of_a_large_region() -> None:
    # 2000 voxels (40 x 50): floor f = max(1, 1e-3 * 2000) = 2; class 1 has p = 1/2000 everywhere, V = 1
    logits = torch.zeros(1, 2, 40, 50, dtype=torch.float64)
    logits[:, 1] = math.log((1 / 2000) / (1 - 1 / 2000))
    absent = tag_constraint_loss(logits, torch.tensor([[-1, 0]]), reduction="none")
    assert absent[0, 1].item() == pytest.approx((1 / 2) ** 2, rel=1e-9)  # z = V / f = 1/2
    present = tag_constraint_loss(logits, torch.tensor([[-1, 1]]), min_size=4.0, reduction="none")
    assert present[0, 1].item() == pytest.approx(((4 - 1) / 4) ** 2, rel=1e-9)  # z = (4 - 1) / max(4, 2)
    small = tag_constraint_loss(logits, torch.tensor([[-1, 1]]), min_size=1.5, reduction="none")
    assert small[0, 1].item() == pytest.approx(((1.5 - 1) / 2) ** 2, rel=1e-9)  # m = 1.5 below the floor 2


def test_tag_log_barrier_values() -> None:
    logits = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    tags = torch.tensor([[1, 0, -1]])
    value = tag_constraint_loss(logits, tags, min_size=8.0, method="log_barrier", t=5.0, reduction="none")
    # present: z = (8 - 16/3) / 8 = 1/3; absent: z = (16/3) / 1 (both in the linear part of the barrier)
    expected_present = log_barrier(torch.tensor(1 / 3, dtype=torch.float64), 5.0).item()
    expected_absent = log_barrier(torch.tensor(16 / 3, dtype=torch.float64), 5.0).item()
    assert value[0, 0].item() == pytest.approx(expected_present, rel=1e-12)
    assert value[0, 1].item() == pytest.approx(expected_absent, rel=1e-12)
    assert value[0, 2].item() == 0.0
    assert expected_present == pytest.approx(5.0 / 3 + (2 * math.log(5.0) + 1) / 5.0)
    assert expected_absent == pytest.approx(5.0 * 16 / 3 + (2 * math.log(5.0) + 1) / 5.0)


def test_tags_are_size_constraints() -> None:
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(4, 3, 5, 6, dtype=torch.float64, generator=g)
    groups = torch.tensor([0, 1, 1, 0])
    tags = torch.tensor([[1, 0, -1], [0, 1, 1]])
    for method in ("penalty", "log_barrier"):
        value = tag_constraint_loss(logits, tags, groups, min_size=20.0, method=method, t=3.0)
        lower = torch.where(tags == 1, 20.0, 0.0).double()
        upper = torch.where(tags == 0, 0.0, math.inf).double()
        expected = size_constraint_loss(logits, lower, upper, tags >= 0, groups, 2, method, 3.0)
        assert value.item() == pytest.approx(expected.item(), rel=1e-12)


def test_tags_with_groups_and_module() -> None:
    # two slices of one volume + one other volume; class 1 absent in volume 0
    logits = torch.zeros(3, 2, 2, 2)
    groups = torch.tensor([0, 0, 1])
    tags = torch.tensor([[1, 0], [-1, 1]])
    none = TagConstraintLoss(reduction="none")(logits, tags, groups)
    assert none.shape == (2, 2)
    # volume 0: 8 voxels, V = 4 per class, floor 1; absent class 1: z = 4 / 1 -> 2 * 4 - 1 = 7
    assert none[0, 1].item() == pytest.approx(7.0)
    assert none[0, 0].item() == 0.0 and none[1].abs().sum().item() == 0.0


def test_gradcheck_float64() -> None:
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(3, 3, 4, 5, dtype=torch.float64, generator=g, requires_grad=True)
    tags = torch.tensor([[1, 0, -1], [0, 1, 1]])
    groups = torch.tensor([1, 0, 1])
    for method in ("penalty", "log_barrier"):
        assert torch.autograd.gradcheck(
            lambda x, m=method: tag_constraint_loss(x, tags, groups, min_size=12.0, method=m, t=2.0), (logits,))


def test_tags_extreme_and_empty() -> None:
    logits = torch.full((2, 2, 2, 3, 3), -1e4)
    logits[:, 0] = 1e4
    logits.requires_grad_()
    for method in ("penalty", "log_barrier"):
        value = tag_constraint_loss(logits, torch.tensor([[1, 1], [0, -1]]), method=method)
        (grad,) = torch.autograd.grad(value, logits)
        assert torch.isfinite(value) and torch.isfinite(grad).all()


@pytest.mark.parametrize(
    "tags,error,match",
    [
        (torch.tensor([[1, 0]]), ValueError, r"tags must have shape \(G, C\) = \(2, 3\), got \(1, 2\)"),
        (torch.tensor([[1, 0, 2], [1, 1, 1]]), ValueError, "1 \\(present\\), 0 \\(absent\\) or -1"),
        (torch.ones(2, 3), TypeError, "integer tensor"),
        ([[1, 0, 1], [1, 1, 1]], TypeError, "torch.Tensor"),
    ],
)
def test_ill_shape(tags, error, match) -> None:
    with pytest.raises(error, match=match):
        tag_constraint_loss(torch.zeros(2, 3, 3, 3), tags)


def test_ill_opts() -> None:
    tags = torch.ones(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="min_size must be a float >= 0"):
        tag_constraint_loss(torch.zeros(1, 2, 3, 3), tags, min_size=-1.0)
    with pytest.raises(ValueError, match="method must be one of"):
        TagConstraintLoss(method="hinge")
