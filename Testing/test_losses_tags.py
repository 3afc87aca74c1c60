"""Tests of the image-tag (presence / absence) constraints."""

from __future__ import annotations

import math

import pytest
import torch

from WeakSegLib.losses import TagConstraintLoss, log_barrier, tag_constraint_loss

# uniform logits (1, 3, 4, 4): every class has soft size 16/3 in 16 voxels
TAG_CASES = [
    # tags, min_size, expected "none" row
    ([1, 0, -1], 1.0, [0.0, (1 / 3) ** 2, 0.0]),
    ([1, 1, 1], 8.0, [((8 - 16 / 3) / 16) ** 2] * 3),
    ([-1, -1, -1], 1.0, [0.0, 0.0, 0.0]),
    ([0, 0, 0], 1.0, [(1 / 3) ** 2] * 3),
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


def test_tag_log_barrier_values() -> None:
    logits = torch.zeros(1, 3, 4, 4, dtype=torch.float64)
    tags = torch.tensor([[1, 0, -1]])
    value = tag_constraint_loss(logits, tags, min_size=8.0, method="log_barrier", t=5.0, reduction="none")
    expected_present = log_barrier(torch.tensor((8 - 16 / 3) / 16), 5.0).item()
    expected_absent = log_barrier(torch.tensor(1 / 3), 5.0).item()
    assert value[0, 0].item() == pytest.approx(expected_present)
    assert value[0, 1].item() == pytest.approx(expected_absent)
    assert value[0, 2].item() == 0.0
    assert expected_absent == pytest.approx(5.0 / 3 + (2 * math.log(5.0) + 1) / 5.0)


def test_tags_with_groups_and_module() -> None:
    # two slices of one volume + one other volume; class 1 absent in volume 0
    logits = torch.zeros(3, 2, 2, 2)
    groups = torch.tensor([0, 0, 1])
    tags = torch.tensor([[1, 0], [-1, 1]])
    none = TagConstraintLoss(reduction="none")(logits, tags, groups)
    assert none.shape == (2, 2)
    assert none[0, 1].item() == pytest.approx((4 / 8) ** 2)
    assert none[0, 0].item() == 0.0 and none[1].abs().sum().item() == 0.0


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
