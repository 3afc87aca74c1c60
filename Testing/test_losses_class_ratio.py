"""Tests of the class-ratio KL prior."""

from __future__ import annotations

import math

import pytest
import torch

from WeakSegLib.losses import ClassRatioLoss, class_ratio_kl_loss

RATIO_CASES = [
    # prior, expected KL for uniform predictions over 2 classes
    ([0.25, 0.75], 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)),
    ([0.5, 0.5], 0.0),
    ([1.0, 3.0], 0.5 * math.log(2.0) + 0.5 * math.log(2.0 / 3.0)),  # normalised internally
]


@pytest.mark.parametrize("prior,expected", RATIO_CASES)
def test_values(prior, expected) -> None:
    logits = torch.zeros(1, 2, 2, 2, dtype=torch.float64)
    assert class_ratio_kl_loss(logits, prior).item() == pytest.approx(expected, abs=1e-7)


def test_per_region_prior_and_groups() -> None:
    logits = torch.zeros(3, 2, 2, 2, dtype=torch.float64)
    prior = torch.tensor([[0.5, 0.5], [0.25, 0.75]])
    none = class_ratio_kl_loss(logits, prior, groups=torch.tensor([0, 0, 1]), reduction="none")
    assert none.shape == (2,)
    assert none[0].item() == pytest.approx(0.0, abs=1e-7)
    assert none[1].item() == pytest.approx(RATIO_CASES[0][1], abs=1e-7)
    module = ClassRatioLoss(prior=[0.25, 0.75], reduction="sum")
    assert module(logits).item() == pytest.approx(3 * RATIO_CASES[0][1], abs=1e-6)


def test_empty_class_and_zero_prior_are_finite() -> None:
    logits = torch.full((1, 3, 2, 2), -1e4)
    logits[:, 0] = 1e4
    logits.requires_grad_()
    value = class_ratio_kl_loss(logits, [0.0, 0.5, 0.5])
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()


def test_minimiser_matches_prior() -> None:
    logits = torch.zeros(1, 3, 4, 4, requires_grad=True)
    optimiser = torch.optim.Adam([logits], lr=0.1)
    prior = torch.tensor([0.6, 0.3, 0.1])
    for _ in range(150):
        optimiser.zero_grad()
        class_ratio_kl_loss(logits, prior).backward()
        optimiser.step()
    proportions = torch.softmax(logits, 1).mean((0, 2, 3))
    torch.testing.assert_close(proportions, prior, atol=1e-2, rtol=0)


@pytest.mark.parametrize(
    "prior,error,match",
    [
        ([0.5, 0.5], ValueError, r"prior must have shape \(C,\) = \(3,\) or \(G, C\) = \(2, 3\), got \(2,\)"),
        (torch.ones(4, 3), ValueError, r"got \(4, 3\)"),
        ([0.5, -0.5, 1.0], ValueError, "finite and >= 0"),
        ([0.0, 0.0, 0.0], ValueError, "positive sum"),
        (None, ValueError, "prior is required"),
    ],
)
def test_ill_shape(prior, error, match) -> None:
    with pytest.raises(error, match=match):
        class_ratio_kl_loss(torch.zeros(2, 3, 2, 2), prior)


def test_ill_opts() -> None:
    with pytest.raises(ValueError, match="eps must be a float > 0"):
        class_ratio_kl_loss(torch.zeros(1, 2, 2, 2), [0.5, 0.5], eps=0.0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        ClassRatioLoss(reduction="batchmean")
