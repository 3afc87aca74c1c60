"""Tests of the partial cross-entropy and partial Dice losses."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from WeakSegLib.losses import (
    PartialCrossEntropyLoss,
    PartialDiceLoss,
    partial_cross_entropy,
    partial_dice_loss,
)

LN3 = math.log(3.0)


def _tiny() -> tuple[torch.Tensor, torch.Tensor]:
    # voxel 0: p = (1/4, 3/4), label 1;  voxel 1: p = (1/2, 1/2), label 0;  voxel 2: unknown
    logits = torch.tensor([[[[0.0, 0.0, 5.0]], [[LN3, 0.0, -5.0]]]], dtype=torch.float64)
    labels = torch.tensor([[[1, 0, -1]]])
    return logits, labels


CE_CASES = [
    # (class_weights, reduction, expected)
    (None, "mean", (math.log(4 / 3) + math.log(2)) / 2),
    (None, "sum", math.log(4 / 3) + math.log(2)),
    ([1.0, 2.0], "mean", (2 * math.log(4 / 3) + math.log(2)) / 3),
    ([1.0, 2.0], "sum", 2 * math.log(4 / 3) + math.log(2)),
]


@pytest.mark.parametrize("class_weights,reduction,expected", CE_CASES)
def test_partial_ce_values(class_weights, reduction, expected) -> None:
    logits, labels = _tiny()
    value = partial_cross_entropy(logits, labels, class_weights=class_weights, reduction=reduction)
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_partial_ce_none_and_module() -> None:
    logits, labels = _tiny()
    out = partial_cross_entropy(logits, labels, reduction="none")
    torch.testing.assert_close(
        out, torch.tensor([[[math.log(4 / 3), math.log(2), 0.0]]], dtype=torch.float64)
    )
    module = PartialCrossEntropyLoss(class_weights=[1.0, 2.0])
    assert module(logits, labels.unsqueeze(1)).item() == pytest.approx(CE_CASES[2][2])


def test_partial_ce_matches_torch_and_means_over_annotated_only() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 4, 5, generator=g)
    labels = torch.randint(-1, 3, (2, 4, 5), generator=g)
    expected = F.cross_entropy(logits, labels, ignore_index=-1)
    torch.testing.assert_close(partial_cross_entropy(logits, labels), expected)
    weights = torch.tensor([0.5, 1.0, 2.0])
    expected_w = F.cross_entropy(logits, labels, weight=weights, ignore_index=-1)
    torch.testing.assert_close(partial_cross_entropy(logits, labels, class_weights=weights), expected_w)


@pytest.mark.parametrize("shape", [(2, 2, 3, 3), (2, 2, 2, 3, 3)])
def test_all_unknown_is_zero_and_connected(shape) -> None:
    logits = torch.randn(shape, requires_grad=True)
    labels = torch.full((shape[0], *shape[2:]), -1)
    for fn in (partial_cross_entropy, partial_dice_loss):
        value = fn(logits, labels)
        assert value.item() == 0.0
        value.backward()
        assert torch.isfinite(logits.grad).all()
        logits.grad = None


def test_partial_dice_values() -> None:
    logits, labels = _tiny()
    smooth = 1e-5
    # annotated voxels 0 and 1; p1 = (3/4, 1/2), y1 = (1, 0); p0 = (1/4, 1/2), y0 = (0, 1)
    dice1 = (2 * 0.75 + smooth) / (1.25 + 1 + smooth)
    dice0 = (2 * 0.5 + smooth) / (0.75 + 1 + smooth)
    value = partial_dice_loss(logits, labels, smooth=smooth)
    assert value.item() == pytest.approx(((1 - dice0) + (1 - dice1)) / 2, rel=1e-10)
    no_bg = partial_dice_loss(logits, labels, include_background=False, reduction="none")
    assert no_bg.shape == (1, 1)
    assert no_bg.item() == pytest.approx(1 - dice1, rel=1e-10)


def test_partial_dice_mixed_batch_ignores_unannotated_items() -> None:
    logits, labels = _tiny()
    batch_logits = torch.cat([logits, torch.randn_like(logits)])
    batch_labels = torch.cat([labels, torch.full_like(labels, -1)])
    torch.testing.assert_close(
        partial_dice_loss(batch_logits, batch_labels), partial_dice_loss(logits, labels)
    )
    per_item = partial_dice_loss(batch_logits, batch_labels, reduction="none")
    assert per_item[1].abs().sum().item() == 0.0
    assert PartialDiceLoss()(batch_logits, batch_labels).item() == pytest.approx(
        partial_dice_loss(logits, labels).item()
    )


def test_empty_class_is_finite() -> None:
    logits = torch.randn(1, 3, 3, 3, dtype=torch.float64, requires_grad=True)
    labels = torch.zeros(1, 3, 3, dtype=torch.long)  # classes 1, 2 never annotated
    for fn in (partial_cross_entropy, partial_dice_loss):
        value = fn(logits, labels)
        (grad,) = torch.autograd.grad(value, logits)
        assert torch.isfinite(value) and torch.isfinite(grad).all()


@pytest.mark.parametrize(
    "logits,labels,error,match",
    [
        (
            torch.zeros(2, 3, 4, 4),
            torch.zeros(2, 4, 5, dtype=torch.long),
            ValueError,
            r"\(2, 4, 4\).*got \(2, 4, 5\)",
        ),
        (torch.zeros(2, 3, 4, 4), torch.zeros(3, 4, 4, dtype=torch.long), ValueError, r"got \(3, 4, 4\)"),
        (torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long), ValueError, r"\(B, C, H, W\)"),
        (torch.zeros(2, 3, 4, 4), torch.zeros(2, 4, 4), TypeError, "integer tensor"),
        (torch.zeros(2, 3, 4, 4), torch.full((2, 4, 4), 5), ValueError, "found 5"),
    ],
)
def test_ill_shape(logits, labels, error, match) -> None:
    for fn in (partial_cross_entropy, partial_dice_loss):
        with pytest.raises(error, match=match):
            fn(logits, labels)


def test_ill_opts() -> None:
    logits, labels = _tiny()
    with pytest.raises(ValueError, match="reduction must be one of"):
        partial_cross_entropy(logits, labels, reduction="avg")
    with pytest.raises(ValueError, match=r"class_weights must have shape \(C,\) = \(2,\), got \(3,\)"):
        partial_cross_entropy(logits, labels, class_weights=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match=">= 0"):
        partial_cross_entropy(logits, labels, class_weights=[1.0, -1.0])
    with pytest.raises(ValueError, match="smooth must be a float > 0"):
        partial_dice_loss(logits, labels, smooth=0.0)
    with pytest.raises(ValueError, match="include_background=False needs at least 2 classes"):
        partial_dice_loss(logits[:, :1], torch.zeros_like(labels), include_background=False)
    with pytest.raises(ValueError, match="reduction must be one of"):
        PartialDiceLoss(reduction="avg")
    with pytest.raises(TypeError, match="ignore_index must be an int"):
        PartialCrossEntropyLoss(ignore_index=1.5)
