"""Tests of the soft shape moments and the centroid / spread constraints."""

from __future__ import annotations

import pytest
import torch

from WeakSegLib.losses import (
    CentroidConstraintLoss,
    SpreadConstraintLoss,
    centroid_constraint_loss,
    log_barrier,
    soft_moments,
    spread_constraint_loss,
)


def test_moments_of_two_points_with_spacing() -> None:
    probs = torch.zeros(1, 1, 3, 4, dtype=torch.float64)
    probs[0, 0, 1, 2] = 1.0
    probs[0, 0, 1, 0] = 1.0
    m = soft_moments(probs, spacing=(2.0, 0.5))
    assert m["volume"].item() == pytest.approx(2.0)
    assert m["volume_mm"].item() == pytest.approx(2.0 * 2.0 * 0.5)
    torch.testing.assert_close(m["centroid"][0, 0], torch.tensor([2.0, 0.5], dtype=torch.float64))
    torch.testing.assert_close(m["spread"][0, 0], torch.tensor([0.0, 0.25], dtype=torch.float64))


def test_moments_over_groups_of_slices() -> None:
    probs = torch.zeros(2, 1, 3, 4, dtype=torch.float64)
    probs[0, 0, 0, 0] = 1.0
    probs[1, 0, 2, 3] = 1.0
    m = soft_moments(probs, groups=torch.tensor([0, 0]))
    torch.testing.assert_close(m["centroid"][0, 0], torch.tensor([1.0, 1.5], dtype=torch.float64))
    torch.testing.assert_close(m["spread"][0, 0], torch.tensor([1.0, 2.25], dtype=torch.float64))


def test_moments_3d_match_direct_formula() -> None:
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(1, 2, 2, 3, 4, dtype=torch.float64, generator=g), 1)
    spacing = (3.0, 1.0, 0.5)
    m = soft_moments(probs, spacing=spacing)
    grid = torch.meshgrid(
        *[torch.arange(n, dtype=torch.float64) * s for n, s in zip((2, 3, 4), spacing, strict=True)],
        indexing="ij",
    )
    for c in range(2):
        w = probs[0, c]
        mass = w.sum()
        for d in range(3):
            mu = (w * grid[d]).sum() / mass
            var = (w * (grid[d] - mu) ** 2).sum() / mass
            assert m["centroid"][0, c, d].item() == pytest.approx(mu.item(), rel=1e-6)
            assert m["spread"][0, c, d].item() == pytest.approx(var.item(), rel=1e-6)


def test_empty_class_moments_are_zero_not_nan() -> None:
    probs = torch.zeros(1, 2, 3, 3)
    probs[:, 0] = 1.0
    m = soft_moments(probs)
    assert torch.isfinite(m["centroid"]).all() and m["centroid"][0, 1].abs().sum() == 0
    assert torch.isfinite(m["spread"]).all()


# uniform logits (1, 2, 4, 4): centroid (1.5, 1.5), spread (1.25, 1.25), extent 4 per axis
CONSTRAINT_CASES = [
    # kind, lower, upper, expected none[0, 1]
    ("centroid", [2.0, 0.0], [3.0, 3.0], [((2.0 - 1.5) / 4) ** 2, 0.0]),
    ("centroid", [0.0, 0.0], [1.0, 1.0], [((1.5 - 1.0) / 4) ** 2] * 2),
    ("spread", [0.0, 0.0], [1.0, 2.0], [((1.25 - 1.0) / 16) ** 2, 0.0]),
    ("spread", [2.0, 0.0], [2.0, 2.0], [((2.0 - 1.25) / 16) ** 2, 0.0]),
]


@pytest.mark.parametrize("kind,lower,upper,expected", CONSTRAINT_CASES)
def test_constraint_values(kind, lower, upper, expected) -> None:
    fn = centroid_constraint_loss if kind == "centroid" else spread_constraint_loss
    logits = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    active = torch.tensor([[False, True]])
    none = fn(logits, torch.tensor(lower), torch.tensor(upper), active, reduction="none")
    assert none.shape == (1, 2, 2)
    torch.testing.assert_close(none[0, 1], torch.tensor(expected, dtype=torch.float64))
    assert none[0, 0].abs().sum().item() == 0.0
    mean = fn(logits, torch.tensor(lower), torch.tensor(upper), active)
    assert mean.item() == pytest.approx(sum(expected) / 2)


def test_centroid_log_barrier_and_spacing() -> None:
    logits = torch.zeros(1, 2, 4, 4, dtype=torch.float64)
    # spacing (2, 1): centroid (3.0, 1.5) mm, extent (8, 4) mm
    value = centroid_constraint_loss(
        logits,
        torch.tensor([4.0, 0.0]),
        torch.tensor([5.0, 1.0]),
        spacing=(2.0, 1.0),
        method="log_barrier",
        t=5.0,
        reduction="none",
    )
    expected_d0 = log_barrier(torch.tensor((4.0 - 3.0) / 8), 5.0) + log_barrier(
        torch.tensor((3.0 - 5.0) / 8), 5.0
    )
    expected_d1 = log_barrier(torch.tensor((1.5 - 1.0) / 4), 5.0)
    assert value[0, 0, 0].item() == pytest.approx(expected_d0.item())
    assert value[0, 0, 1].item() == pytest.approx(expected_d1.item())
    # an upper bound >= the last voxel coordinate (3 * 2 mm) always holds: skipped
    vacuous = centroid_constraint_loss(
        logits, 0.0, torch.tensor([6.0, 3.0]), spacing=(2.0, 1.0), method="log_barrier", reduction="none"
    )
    assert vacuous.abs().sum().item() == 0.0


def test_modules_and_empty_class_gradients() -> None:
    logits = torch.full((2, 2, 2, 3, 3), -1e4)
    logits[:, 0] = 1e4
    logits.requires_grad_()
    for module in (
        CentroidConstraintLoss(method="log_barrier"),
        SpreadConstraintLoss(spacing=(1.0, 2.0, 2.0)),
    ):
        value = module(logits, 1.0, 2.0)
        (grad,) = torch.autograd.grad(value, logits)
        assert torch.isfinite(value) and torch.isfinite(grad).all()


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        (
            {"lower": torch.zeros(3)},
            ValueError,
            r"lower must be broadcastable to \(2, 2, 2\), got shape \(3,\)",
        ),
        ({"spacing": (1.0,)}, ValueError, "expected 2, got 1"),
        ({"spacing": (1.0, -1.0)}, ValueError, "finite and > 0"),
        ({"active": torch.ones(2, 3, dtype=torch.bool)}, ValueError, "active must be broadcastable"),
        ({"lower": 3.0, "upper": 1.0}, ValueError, "lower must be <= upper"),
    ],
)
def test_ill_shape(kwargs, error, match) -> None:
    args = {"lower": 0.0, "upper": 1.0} | kwargs
    with pytest.raises(error, match=match):
        centroid_constraint_loss(torch.zeros(2, 2, 3, 3), **args)


def test_ill_opts() -> None:
    logits = torch.zeros(1, 2, 3, 3)
    with pytest.raises(ValueError, match="method must be one of"):
        spread_constraint_loss(logits, 0.0, 1.0, method="exact")
    with pytest.raises(ValueError, match="eps must be a float > 0"):
        soft_moments(torch.softmax(logits, 1), eps=0.0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        CentroidConstraintLoss(reduction="median")
