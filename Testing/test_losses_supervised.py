"""Tests of the fully supervised Dice + CE loss with an ignore label."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from WeakSegLib.losses import DiceCELoss, dice_ce_loss


def _reference(logits, labels, include_background, smooth=1e-5, ignore_index=-1):
    """Straightforward re-implementation: batch Dice over labelled voxels + torch CE."""
    num_classes = logits.shape[1]
    valid = labels != ignore_index
    probs = torch.softmax(logits, 1).movedim(1, -1)[valid]  # (N, C)
    onehot = F.one_hot(labels[valid], num_classes).double()
    dice = (2 * (probs * onehot).sum(0) + smooth) / (probs.sum(0) + onehot.sum(0) + smooth)
    terms = 1 - dice
    if not include_background:
        terms = terms[1:]
    ce = F.cross_entropy(logits, labels, ignore_index=ignore_index)
    return ce, terms


@pytest.mark.parametrize("shape", [(2, 3, 4, 4), (2, 3, 2, 3, 3)])
@pytest.mark.parametrize("include_background", [False, True])
def test_matches_reference(shape, include_background) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(shape, dtype=torch.float64, generator=g)
    labels = torch.randint(-1, 3, (shape[0], *shape[2:]), generator=g)
    ce, terms = _reference(logits, labels, include_background)
    value = dice_ce_loss(logits, labels, include_background=include_background)
    assert value.item() == pytest.approx((ce + terms.mean()).item(), rel=1e-10)
    weighted = dice_ce_loss(
        logits, labels, dice_weight=0.5, ce_weight=2.0, include_background=include_background
    )
    assert weighted.item() == pytest.approx((2 * ce + 0.5 * terms.mean()).item(), rel=1e-10)
    none = dice_ce_loss(logits, labels, include_background=include_background, reduction="none")
    torch.testing.assert_close(none, torch.cat([ce.reshape(1), terms]))
    total = dice_ce_loss(logits, labels, include_background=include_background, reduction="sum")
    assert total.item() == pytest.approx((ce + terms.sum()).item(), rel=1e-10)


def test_perfect_prediction_and_module() -> None:
    labels = torch.tensor([[[0, 1], [2, -1]]])
    logits = 50.0 * F.one_hot(labels.clamp(min=0), 3).movedim(-1, 1).double()
    assert DiceCELoss()(logits, labels).item() == pytest.approx(0.0, abs=1e-6)


def test_all_ignored_is_zero_not_nan() -> None:
    logits = torch.randn(2, 3, 3, 3, requires_grad=True)
    value = dice_ce_loss(logits, torch.full((2, 3, 3), -1))
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_ignored_voxels_do_not_matter() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 4, 4, dtype=torch.float64, generator=g)
    labels = torch.randint(0, 3, (1, 4, 4), generator=g)
    labels[0, :2] = -1
    changed = logits.clone()
    changed[0, :, :2] = 100.0 * torch.randn(3, 2, 4, dtype=torch.float64, generator=g)
    torch.testing.assert_close(dice_ce_loss(logits, labels), dice_ce_loss(changed, labels))


def test_ill_shape() -> None:
    with pytest.raises(ValueError, match=r"\(B, \*spatial\) = \(1, 4, 4\).*got \(1, 4, 3\)"):
        dice_ce_loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="include_background=False needs at least 2 classes"):
        dice_ce_loss(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))


@pytest.mark.parametrize(
    "kwargs,error,match",
    [
        ({"dice_weight": -1.0}, ValueError, "dice_weight must be a float >= 0"),
        ({"ce_weight": "1"}, ValueError, "ce_weight must be a float >= 0"),
        ({"smooth": 0.0}, ValueError, "smooth must be a float > 0"),
        ({"reduction": "elementwise"}, ValueError, "reduction must be one of"),
        ({"ignore_index": None}, TypeError, "ignore_index must be an int"),
    ],
)
def test_ill_opts(kwargs, error, match) -> None:
    with pytest.raises(error, match=match):
        DiceCELoss(**kwargs)
