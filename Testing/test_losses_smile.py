"""Tests of SMILE targets and loss (missing annotations)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from WeakSegLib.losses import SmileLoss, smile_loss, smile_targets


def test_targets_follow_the_rules() -> None:
    labels = torch.tensor([[[0, 1], [-1, 2]]])  # (1, 2, 2)
    complete = torch.tensor([[False, True, False]])
    targets, weights = smile_targets(labels, complete)
    assert targets.shape == weights.shape == (1, 3, 2, 2)
    flat_t = targets.reshape(3, 4).tolist()
    flat_w = weights.reshape(3, 4).tolist()
    assert flat_t == [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1]]
    # incomplete classes: unknown voxel unsupervised; complete class 1: every voxel supervised
    assert flat_w == [[1, 1, 0, 1], [1, 1, 1, 1], [1, 1, 0, 1]]


def test_targets_3d_with_channel_and_all_unknown() -> None:
    labels = torch.full((2, 1, 2, 2, 2), -1)
    labels[0, 0, 0, 0, 0] = 1
    complete = torch.tensor([[False, False], [True, False]])
    targets, weights = smile_targets(labels, complete)
    assert targets.shape == (2, 2, 2, 2, 2)
    assert weights[0].sum().item() == 2  # the single labelled voxel, for both classes
    assert weights[1, 0].sum().item() == 8 and weights[1, 1].sum().item() == 0


def test_loss_sigmoid_matches_weighted_bce() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 3, 3, dtype=torch.float64, generator=g)
    labels = torch.randint(-1, 3, (2, 3, 3), generator=g)
    complete = torch.tensor([[True, False, False], [False, False, True]])
    targets, weights = smile_targets(labels, complete)
    targets, weights = targets.double(), weights.double()
    expected = []
    for c in range(3):
        num = F.binary_cross_entropy_with_logits(
            logits[:, c], targets[:, c], weight=weights[:, c], reduction="sum"
        )
        den = weights[:, c].sum()
        expected.append((num / den).item() if den > 0 else 0.0)
    none = smile_loss(logits, targets, weights, reduction="none")
    torch.testing.assert_close(none, torch.tensor(expected, dtype=torch.float64))
    assert smile_loss(logits, targets, weights, reduction="sum").item() == pytest.approx(sum(expected))
    supervised = sum(1 for c in range(3) if weights[:, c].sum() > 0)
    assert smile_loss(logits, targets, weights).item() == pytest.approx(sum(expected) / supervised)


def test_loss_softmax_matches_direct_formula() -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 2, 3, dtype=torch.float64, generator=g)
    targets = torch.randint(0, 2, logits.shape, generator=g).double()
    weights = torch.ones_like(targets)
    p = torch.softmax(logits, 1)
    bce = -(targets * p.log() + (1 - targets) * (1 - p).log())
    expected = bce.sum((0, 2, 3)) / 6
    torch.testing.assert_close(smile_loss(logits, targets, weights, "softmax", "none"), expected)


def test_uniform_logits_give_ln2_and_normalisation_by_supervised_count() -> None:
    logits = torch.zeros(1, 2, 4, 4)
    labels = torch.full((1, 4, 4), -1)
    labels[0, 0, 0] = 1  # a single annotated voxel
    value = SmileLoss()(logits, labels, torch.tensor([[False, False]]))
    # normalised by the 1 supervised voxel, not by the 16 voxels
    assert value.item() == pytest.approx(math.log(2.0))


def test_no_supervision_is_zero_and_connected() -> None:
    logits = torch.randn(2, 2, 3, 3, requires_grad=True)
    value = SmileLoss()(logits, torch.full((2, 3, 3), -1), torch.zeros(2, 2, dtype=torch.bool))
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(logits.grad).all()


@pytest.mark.parametrize("activation", ["sigmoid", "softmax"])
def test_extreme_logits_finite_and_correct(activation) -> None:
    logits = torch.tensor([[[[1e4]], [[-1e4]]]], requires_grad=True)  # certain class 0
    targets = torch.tensor([[[[0.0]], [[1.0]]]])  # ... but labelled class 1
    value = smile_loss(logits, targets, torch.ones_like(targets), activation)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
    assert value.item() == pytest.approx(1e4 if activation == "sigmoid" else 2e4, rel=1e-4)


@pytest.mark.parametrize(
    "targets_shape,weights_shape,match",
    [
        (
            (1, 3, 2, 2),
            (1, 2, 2, 2),
            r"targets must have the shape of logits .* = \(1, 2, 2, 2\), got \(1, 3, 2, 2\)",
        ),
        ((1, 2, 2, 2), (1, 2, 2), r"weights must have the shape of logits"),
    ],
)
def test_ill_shape(targets_shape, weights_shape, match) -> None:
    with pytest.raises(ValueError, match=match):
        smile_loss(torch.zeros(1, 2, 2, 2), torch.zeros(targets_shape), torch.zeros(weights_shape))


def test_ill_shape_targets_and_module() -> None:
    with pytest.raises(ValueError, match=r"complete must have shape \(B, C\) with B=1, got \(2, 3\)"):
        smile_targets(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(2, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="complete must be a bool tensor"):
        smile_targets(torch.zeros(1, 2, 2, dtype=torch.long), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"complete must have shape \(B, C\) = \(1, 2\), got \(1, 3\)"):
        SmileLoss()(
            torch.zeros(1, 2, 2, 2),
            torch.zeros(1, 2, 2, dtype=torch.long),
            torch.zeros(1, 3, dtype=torch.bool),
        )
    with pytest.raises(ValueError, match="found 4"):
        smile_targets(torch.full((1, 2, 2), 4), torch.zeros(1, 3, dtype=torch.bool))


def test_ill_opts() -> None:
    with pytest.raises(ValueError, match="activation must be one of"):
        SmileLoss(activation="relu")
    with pytest.raises(ValueError, match="'softmax' needs at least 2 classes"):
        smile_loss(torch.zeros(1, 1, 2, 2), torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2), "softmax")
    with pytest.raises(ValueError, match="weights must be >= 0"):
        smile_loss(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, 2), -torch.ones(1, 2, 2, 2))


# ------------------------------------------------------------------ marginal CE + Dice on complete classes
def test_marginal_equals_dice_ce_when_every_class_is_complete() -> None:
    from WeakSegLib.losses import dice_ce_loss, marginal_dice_ce_loss

    torch.manual_seed(0)
    logits = torch.randn(3, 4, 6, 7)
    labels = torch.randint(0, 4, (3, 6, 7))
    complete = torch.ones(3, 4, dtype=torch.bool)
    assert torch.allclose(marginal_dice_ce_loss(logits, labels, complete), dice_ce_loss(logits, labels), atol=1e-6)


def test_marginal_by_hand_unknown_voxels_cost_the_merged_probability() -> None:
    from WeakSegLib.losses import marginal_dice_ce_loss

    # One item, 3 classes, 2 voxels: voxel 0 annotated as class 1 (complete), voxel 1 unknown.
    logits = torch.tensor([[[0.0, 1.0], [2.0, 0.5], [-1.0, 0.0]]]).unsqueeze(-1)   # (1, 3, 2, 1)
    labels = torch.tensor([[[1], [-1]]])
    complete = torch.tensor([[False, True, False]])
    p = torch.softmax(logits[0, :, :, 0], dim=0)                                    # (3, 2)
    ce = (-math.log(p[1, 0]) - math.log(p[0, 1] + p[2, 1])) / 2                     # merged = {bg, class 2}
    dice = (2 * p[1, 0] + 1e-5) / (p[1, :].sum() + 1 + 1e-5)                          # class 1, complete
    value = marginal_dice_ce_loss(logits, labels, complete, dice_weight=0.5)
    assert value.item() == pytest.approx(float(ce + 0.5 * (1 - dice)), rel=1e-5)
    assert marginal_dice_ce_loss(logits, labels, complete, dice_weight=0).item() == pytest.approx(float(ce), rel=1e-5)


def test_marginal_does_not_decide_between_background_and_a_missing_class() -> None:
    from WeakSegLib.losses import marginal_dice_ce_loss

    # All voxels unknown, class 1 complete (absent here): the loss only pushes class 1 down; its
    # gradient does not change the ratio of background to the missing class 2.
    logits = torch.zeros(1, 3, 4, 4, requires_grad=True)
    labels = torch.full((1, 4, 4), -1)
    complete = torch.tensor([[False, True, False]])
    marginal_dice_ce_loss(logits, labels, complete, dice_weight=0).backward()
    g = logits.grad[0]
    assert torch.all(g[1] > 0) and torch.allclose(g[0], g[2])


def test_marginal_ignores_unknown_voxels_when_every_class_is_complete_and_is_finite() -> None:
    from WeakSegLib.losses import marginal_dice_ce_loss

    logits = torch.tensor([[[80.0, -80.0], [-80.0, 80.0]]]).unsqueeze(-1).requires_grad_(True)   # (1, 2, 2, 1)
    labels = torch.tensor([[[0], [-1]]])
    complete = torch.ones(1, 2, dtype=torch.bool)          # nothing can explain an unknown voxel: ignored
    value = marginal_dice_ce_loss(logits, labels, complete, dice_weight=0)
    value.backward()
    assert value.item() == pytest.approx(0.0, abs=1e-6)
    assert torch.isfinite(logits.grad).all()
    nothing = marginal_dice_ce_loss(logits, torch.full((1, 2, 1), -1), complete, dice_weight=0)
    assert nothing.item() == 0.0                           # no supervised voxel: 0, not NaN


def test_marginal_3d_and_errors() -> None:
    from WeakSegLib.losses import marginal_dice_ce_loss

    logits = torch.randn(2, 3, 3, 4, 5, requires_grad=True)
    labels = torch.randint(-1, 3, (2, 3, 4, 5))
    complete = torch.tensor([[True, True, True], [False, False, True]])
    value = marginal_dice_ce_loss(logits, labels.clamp_min(0) * (labels != 1) - (labels == 1).long(), complete)
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match=r"complete must have shape \(B, C\)"):
        marginal_dice_ce_loss(logits, labels, complete[:, :2])
    with pytest.raises(TypeError, match="bool"):
        marginal_dice_ce_loss(logits, labels, complete.float())
    with pytest.raises(ValueError, match="dice_weight"):
        marginal_dice_ce_loss(logits, labels, complete, dice_weight=-1)
