"""Tests of the entropy minimisation loss."""

from __future__ import annotations

import math

import pytest
import torch

from WeakSegLib.losses import EntropyLoss, entropy_loss

H_QUARTER = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))


def _logits() -> torch.Tensor:
    # voxel 0: p = (1/2, 1/2); voxel 1: p = (1/4, 3/4)
    return torch.tensor([[[[0.0, 0.0]], [[0.0, math.log(3.0)]]]], dtype=torch.float64)


ENTROPY_CASES = [
    (None, "mean", (math.log(2) + H_QUARTER) / 2),
    (None, "sum", math.log(2) + H_QUARTER),
    ([[[True, False]]], "mean", math.log(2)),
    ([[[False, True]]], "sum", H_QUARTER),
    ([[[False, False]]], "mean", 0.0),
]


@pytest.mark.parametrize("mask,reduction,expected", ENTROPY_CASES)
def test_values(mask, reduction, expected) -> None:
    mask_t = None if mask is None else torch.tensor(mask)
    assert entropy_loss(_logits(), mask_t, reduction).item() == pytest.approx(expected)


def test_none_map_3d_and_module() -> None:
    logits = torch.zeros(2, 3, 2, 2, 2, dtype=torch.float64)
    mask = torch.zeros(2, 1, 2, 2, 2, dtype=torch.bool)
    mask[0, 0, 0, 0, 0] = True
    out = EntropyLoss(reduction="none")(logits, mask)
    assert out.shape == (2, 2, 2, 2)
    assert out.sum().item() == pytest.approx(math.log(3))


def test_extreme_logits_zero_entropy() -> None:
    logits = torch.tensor([[[[1e4]], [[-1e4]]]], requires_grad=True)
    value = entropy_loss(logits)
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize(
    "mask,error,match",
    [
        (
            torch.ones(1, 3, 2, dtype=torch.bool),
            ValueError,
            r"\(B, \*spatial\) = \(1, 1, 2\).*got \(1, 3, 2\)",
        ),
        (torch.ones(1, 1, 2), TypeError, "bool tensor"),
    ],
)
def test_ill_shape(mask, error, match) -> None:
    with pytest.raises(error, match=match):
        entropy_loss(_logits(), mask)


def test_ill_opts() -> None:
    with pytest.raises(ValueError, match="reduction must be one of"):
        EntropyLoss(reduction="all")
