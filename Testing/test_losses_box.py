"""Tests of the bounding-box priors (emptiness, tightness, size inside the box)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from WeakSegLib.losses import (
    BoxEmptinessLoss,
    BoxTightnessLoss,
    box_emptiness_loss,
    box_mil_loss,
    box_region_loss,
    box_size_loss,
    box_tightness_loss,
    log_barrier,
    relative_bound_loss,
    smooth_max,
)


def _logits_with_p1(p1: float, shape: tuple[int, ...]) -> torch.Tensor:
    """Two-class logits whose class-1 probability is ``p1`` everywhere."""
    logits = torch.zeros(shape, dtype=torch.float64)
    logits[:, 1] = math.log(p1 / (1 - p1))
    return logits


def test_emptiness_values() -> None:
    logits = _logits_with_p1(0.5, (1, 2, 4, 4))
    boxes = [[(1, (0, 0), (2, 2))]]
    # 12 voxels outside the box, each with p1 = 0.5 -> z = 6 / 16
    assert box_emptiness_loss(logits, boxes).item() == pytest.approx((6 / 16) ** 2)
    barrier = box_emptiness_loss(logits, boxes, method="log_barrier", t=5.0)
    assert barrier.item() == pytest.approx(log_barrier(torch.tensor(6 / 16), 5.0).item())
    none = BoxEmptinessLoss(reduction="none")(logits, boxes)
    assert none.shape == (1, 2) and none[0, 0].item() == 0.0


def test_emptiness_union_of_boxes_and_mixed_batch() -> None:
    logits = _logits_with_p1(0.5, (2, 2, 4, 4))
    boxes = [[(1, (0, 0), (2, 2)), (1, (1, 1), (3, 3))], []]  # union: 7 voxels
    none = box_emptiness_loss(logits, boxes, reduction="none")
    assert none[0, 1].item() == pytest.approx((9 * 0.5 / 16) ** 2)
    assert none[1].abs().sum().item() == 0.0
    # the item without box does not dilute the mean
    assert box_emptiness_loss(logits, boxes).item() == pytest.approx(none[0, 1].item())


def test_no_box_at_all_is_zero() -> None:
    logits = torch.randn(2, 2, 4, 4, requires_grad=True)
    for fn in (box_emptiness_loss, box_tightness_loss):
        value = fn(logits, [[], []])
        value.backward()
        assert value.item() == 0.0 and torch.isfinite(logits.grad).all()


TIGHTNESS_CASES = [
    # p1, method, expected mean over the 5 bands of a 3 x 5 box with band_width 2
    # rows: bands of 2 and 1 rows (5 voxels per row); columns: bands of 2, 2, 1 columns (3 per column)
    (0.1, "penalty", (2 * 0.5**2 + 3 * 0.7**2) / 5),
    (0.5, "penalty", 0.0),
    (0.5, "log_barrier", (-2 * math.log(1.5) - 3 * math.log(0.5)) / 5.0 / 5),
    (0.1, "log_barrier", (2 * (5.0 * 0.5) + 3 * (5.0 * 0.7) + 5 * (2 * math.log(5.0) + 1) / 5.0) / 5),
]


@pytest.mark.parametrize("p1,method,expected", TIGHTNESS_CASES)
def test_tightness_values_2d(p1, method, expected) -> None:
    logits = _logits_with_p1(p1, (1, 2, 4, 6))
    boxes = [[(1, (0, 0), (3, 5))]]
    value = box_tightness_loss(logits, boxes, band_width=2, method=method, t=5.0)
    assert value.item() == pytest.approx(expected, rel=1e-10, abs=1e-14)
    total = box_tightness_loss(logits, boxes, band_width=2, method=method, t=5.0, reduction="sum")
    assert total.item() == pytest.approx(5 * expected, rel=1e-10, abs=1e-14)


def test_tightness_band_wider_than_box() -> None:
    logits = _logits_with_p1(0.1, (1, 2, 4, 6))
    # 3 x 5 box with band_width 8: one band of 3 rows (bound 3) and one of 5 columns (bound 5)
    value = box_tightness_loss(
        logits, [[(1, (0, 0), (3, 5))]], band_width=8, method="penalty", reduction="sum"
    )
    assert value.item() == pytest.approx(0.5**2 + 0.7**2, rel=1e-10)


def test_tightness_3d_per_slice_and_axis() -> None:
    g = torch.Generator().manual_seed(0)
    volume = torch.randn(1, 2, 2, 4, 6, dtype=torch.float64, generator=g)
    box3d = [[(1, (0, 0, 0), (2, 3, 5))]]
    value3d = box_tightness_loss(volume, box3d, band_width=2, reduction="sum")
    per_slice = sum(
        box_tightness_loss(volume[:, :, k], [[(1, (0, 0), (3, 5))]], band_width=2, reduction="sum")
        for k in range(2)
    )
    torch.testing.assert_close(value3d, per_slice)
    # slicing along another axis == moving that axis first
    moved = volume.permute(0, 1, 3, 2, 4)
    box_moved = [[(1, (0, 0, 0), (3, 2, 5))]]
    torch.testing.assert_close(
        box_tightness_loss(moved, box_moved, band_width=2, axis=1, reduction="sum"), value3d
    )


def test_tight_box_around_object_is_satisfied() -> None:
    logits = torch.zeros((1, 2, 8, 8), dtype=torch.float64)
    logits[0, 1] = -20.0
    logits[0, 1, 2:6, 3:7] = 20.0  # object exactly fills the box
    boxes = [[(1, (2, 3), (6, 7))]]
    assert box_tightness_loss(logits, boxes, band_width=2, method="penalty").item() == pytest.approx(
        0.0, abs=1e-12
    )
    assert box_emptiness_loss(logits, boxes).item() == pytest.approx(0.0, abs=1e-12)


def test_box_size_loss_and_module_option() -> None:
    logits = _logits_with_p1(0.1, (1, 2, 4, 6))
    boxes = [[(1, (0, 0), (3, 5))]]
    # V = 1.5 in A = 15 voxels (floor max(1, 0.015) = 1); lower 0.5 * 15 = 7.5 -> z = (7.5 - 1.5) / 7.5 = 0.8;
    # upper 0.9 * 15 = 13.5 is satisfied
    size = box_size_loss(logits, boxes, 0.5, 0.9)
    assert size.item() == pytest.approx(0.8**2)
    module = BoxTightnessLoss(band_width=2, method="penalty", box_size_bounds=(0.5, 0.9))
    tight = box_tightness_loss(logits, boxes, band_width=2, method="penalty")
    assert module(logits, boxes).item() == pytest.approx(tight.item() + 0.64)
    none = module.__class__(band_width=2, method="penalty", reduction="none")(logits, boxes)
    assert none.shape == (1, 2)


def test_box_size_values_reductions_and_floor() -> None:
    logits = _logits_with_p1(0.9, (2, 2, 4, 6))
    boxes = [[(1, (0, 0), (3, 5)), (1, (0, 0), (2, 2))], [(0, (1, 1), (3, 3))]]
    # box 1: V = 13.5 in A = 15, upper 0.5 * 15 = 7.5: z = (13.5 - 7.5) / 7.5 = 0.8 -> 0.64
    # box 2: V = 3.6 in A = 4, upper 2 is above the floor 1: z = (3.6 - 2) / 2 = 0.8 -> 0.64
    # box 3 (class 0, p0 = 0.1): V = 0.4 in A = 4, lower 0.1 * 4 = 0.4: z = 0 -> 0
    none = box_size_loss(logits, boxes, 0.1, 0.5, reduction="none")
    torch.testing.assert_close(none, torch.tensor([[0.0, 1.28], [0.0, 0.0]], dtype=torch.float64))
    assert box_size_loss(logits, boxes, 0.1, 0.5, reduction="sum").item() == pytest.approx(1.28)
    assert box_size_loss(logits, boxes, 0.1, 0.5).item() == pytest.approx(1.28 / 3)
    # a lower bound below the floor: 0.2 * 4 = 0.8 < 1, z = (0.8 - 0.4) / 1 = 0.4 -> 0.16
    floor = box_size_loss(logits, [[], [(0, (1, 1), (3, 3))]], 0.2, 1.0)
    assert floor.item() == pytest.approx(0.4**2)
    # log-barrier of box 1 with lo = 0.5: z_low = (7.5 - 13.5) / 7.5 = -0.8, hi = 1 is vacuous
    barrier = box_size_loss(logits, [[(1, (0, 0), (3, 5))], []], 0.5, 1.0, method="log_barrier", t=5.0)
    assert barrier.item() == pytest.approx(-math.log(0.8) / 5.0, rel=1e-12)
    # lo = 0 and hi = 1 are vacuous: exactly 0; no box at all: 0, connected to the graph
    assert box_size_loss(logits, boxes, 0.0, 1.0, method="log_barrier").item() == 0.0
    x = logits.clone().requires_grad_()
    empty = box_size_loss(x, [[], []], 0.1, 0.5)
    assert empty.item() == 0.0 and empty.requires_grad
    assert box_size_loss(x, [[], []], 0.1, 0.5, reduction="none").shape == (2, 2)


def _trainer_box_fill(vol: torch.Tensor, boxes: list, lo: float, hi: float, method: str, t: float) -> torch.Tensor:
    """The box fill term as the training objective writes it with relative_bound_loss (bounds of the whole volume)."""
    probs = torch.softmax(vol, 1)
    n_voxels = float(vol[0, 0].numel())
    sizes, lower, upper = [], [], []
    for c, start, stop in boxes:
        area = float(math.prod(b - a for a, b in zip(start, stop)))
        sizes.append(probs[(0, c, *(slice(a, b) for a, b in zip(start, stop)))].sum())
        lower.append(lo * area)
        upper.append(hi * area if hi < 1.0 else n_voxels)
    sizes_t = torch.stack(sizes)[None]
    lower_t = torch.tensor([lower], dtype=vol.dtype)
    upper_t = torch.tensor([upper], dtype=vol.dtype)
    active = torch.ones_like(sizes_t, dtype=torch.bool)
    return relative_bound_loss(sizes_t, lower_t, upper_t, active, n_voxels, method=method, t=t)


@pytest.mark.parametrize("method", ["penalty", "log_barrier"])
@pytest.mark.parametrize("lo,hi", [(0.15, 0.9), (0.3, 1.0), (0.6, 0.7)])
def test_box_size_loss_equals_the_trainer_box_fill_for_boxes_over_1000_voxels(lo, hi, method) -> None:
    # 12 x 20 x 20 = 4800 voxels: volume floor 4.8; boxes of 1200, 1600 and 1100 voxels (box floors 1.2, 1.6,
    # 1.1), every lo * A >= 165 is above both floors, so the two formulations give the same value
    g = torch.Generator().manual_seed(11)
    vol = (2.0 * torch.randn(1, 3, 12, 20, 20, dtype=torch.float64, generator=g)).requires_grad_()
    boxes = [(1, (0, 0, 0), (10, 12, 10)), (2, (2, 4, 4), (12, 20, 14)), (1, (1, 1, 1), (11, 11, 12))]
    value = box_size_loss(vol, [boxes], lo, hi, method, 5.0)
    expected = _trainer_box_fill(vol, boxes, lo, hi, method, 5.0)
    assert value.item() == pytest.approx(expected.item(), rel=1e-12, abs=1e-15)
    (grad,) = torch.autograd.grad(value, vol)
    (grad_expected,) = torch.autograd.grad(expected, vol)
    torch.testing.assert_close(grad, grad_expected, rtol=1e-10, atol=1e-15)
    # and by hand, box by box
    probs = torch.softmax(vol.detach(), 1)[0]
    costs = []
    for c, start, stop in boxes:
        area = math.prod(b - a for a, b in zip(start, stop))
        v = float(probs[(c, *(slice(a, b) for a, b in zip(start, stop)))].sum())
        zs = [(lo * area - v) / (lo * area)] + ([(v - hi * area) / (hi * area)] if hi < 1 else [])
        if method == "penalty":
            costs.append(sum(max(z, 0) ** 2 if z <= 1 else 2 * z - 1 for z in zs))
        else:
            costs.append(sum(-math.log(-z) / 5 if z <= -1 / 25 else 5 * z + (2 * math.log(5) + 1) / 5 for z in zs))
    assert value.item() == pytest.approx(sum(costs) / 3, rel=1e-10)


def test_box_size_loss_gradcheck_float64() -> None:
    g = torch.Generator().manual_seed(12)
    logits = torch.randn(2, 3, 3, 5, 6, dtype=torch.float64, generator=g, requires_grad=True)
    boxes = [[(1, (0, 0, 0), (2, 4, 5)), (2, (1, 1, 1), (3, 5, 6))], [(1, (0, 1, 0), (3, 3, 3))]]
    for method in ("penalty", "log_barrier"):
        for reduction in ("mean", "none"):
            assert torch.autograd.gradcheck(
                lambda x, m=method, r=reduction: box_size_loss(x, boxes, 0.3, 0.6, m, 3.0, r), (logits,))


@dataclass(frozen=True)
class _Box:
    class_id: int
    start: tuple
    stop: tuple


def test_accepts_box_objects() -> None:
    logits = torch.randn(1, 2, 2, 4, 4, dtype=torch.float64)
    tuples = [[(1, (0, 1, 1), (1, 3, 4))]]
    objects = [[_Box(1, (0, 1, 1), (1, 3, 4))]]
    torch.testing.assert_close(box_tightness_loss(logits, objects), box_tightness_loss(logits, tuples))
    torch.testing.assert_close(box_emptiness_loss(logits, objects), box_emptiness_loss(logits, tuples))


@pytest.mark.parametrize(
    "boxes,error,match",
    [
        ([[(1, (0, 0), (2, 2))]], ValueError, "expected length B=2, got 1"),
        ([[(1, (0, 0, 0), (2, 2, 2))], []], ValueError, "must have 2 indices"),
        ([[(1, (0, 0), (5, 2))], []], ValueError, r"0 <= start < stop <= spatial shape \(4, 4\)"),
        ([[(1, (2, 2), (2, 3))], []], ValueError, "start < stop"),
        ([[(3, (0, 0), (2, 2))], []], ValueError, r"class_id must be in \[0, 1\], got 3"),
        ([[(1, (0, 0))], []], TypeError, r"\(class_id, start, stop\)"),
        ("boxes", TypeError, "must be a list"),
    ],
)
def test_ill_shape(boxes, error, match) -> None:
    logits = torch.zeros(2, 2, 4, 4)
    for fn in (box_emptiness_loss, box_tightness_loss, lambda x, b: box_size_loss(x, b, 0.1, 0.9)):
        with pytest.raises(error, match=match):
            fn(logits, boxes)


def test_ill_opts() -> None:
    logits = torch.zeros(1, 2, 4, 4)
    boxes = [[(1, (0, 0), (2, 2))]]
    with pytest.raises(ValueError, match="band_width must be an int >= 1"):
        box_tightness_loss(logits, boxes, band_width=0)
    with pytest.raises(ValueError, match=r"axis must be an int in \[0, 1\]"):
        box_tightness_loss(logits, boxes, axis=2)
    with pytest.raises(ValueError, match="0 <= lo_frac <= hi_frac"):
        box_tightness_loss(logits, boxes, box_size_bounds=(0.8, 0.2))
    with pytest.raises(TypeError, match=r"pair \(lo_frac, hi_frac\)"):
        BoxTightnessLoss(box_size_bounds=0.5)
    with pytest.raises(ValueError, match=r"lo_frac and hi_frac must satisfy 0 <= lo_frac <= hi_frac, got \(-0.1"):
        box_size_loss(logits, boxes, -0.1, 0.5)
    with pytest.raises(ValueError, match="0 <= lo_frac <= hi_frac"):
        box_size_loss(logits, boxes, 0.6, 0.5)
    with pytest.raises(TypeError, match="lo_frac and hi_frac must be a pair"):
        box_size_loss(logits, boxes, "a", 0.5)
    with pytest.raises(ValueError, match="method must be one of"):
        box_size_loss(logits, boxes, 0.1, 0.5, method="hinge")
    with pytest.raises(ValueError, match="t must be a finite positive"):
        box_size_loss(logits, boxes, 0.1, 0.5, method="log_barrier", t=0.0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        box_size_loss(logits, boxes, 0.1, 0.5, reduction="max")
    with pytest.raises(ValueError, match="method must be one of"):
        BoxEmptinessLoss(method="lagrangian")


def test_tightness_volume_granularity_asks_every_plane_to_meet_the_object() -> None:
    """A tight 3D box around an object that is small on its end slices: 'slice' penalises those slices'
    empty lines, 'volume' (every plane of the box meets the object) does not; 'auto' picks by thickness."""
    probs = torch.zeros(1, 2, 3, 4, 4, dtype=torch.float64)
    probs[0, 1, :, 1:3, 1:3] = 1.0          # a 2x2 core through all 3 slices
    probs[0, 1, 1] = 1.0                    # the middle slice fills the whole 4x4 box
    probs[0, 0] = 1.0 - probs[0, 1]
    logits = torch.log(probs.clamp(1e-12, 1.0))
    box = [[(1, (0, 0, 0), (3, 4, 4))]]
    kwargs = {"band_width": 1, "method": "penalty", "reduction": "sum"}
    # slice granularity: rows/cols 0 and 3 of slices 0 and 2 are empty -> 8 violated lines of z = 1
    assert box_tightness_loss(logits, box, granularity="slice", **kwargs).item() == pytest.approx(8.0, abs=1e-6)
    # volume granularity: every plane (3 + 4 + 4) holds object voxels
    assert box_tightness_loss(logits, box, granularity="volume", **kwargs).item() == pytest.approx(0.0, abs=1e-6)
    assert box_tightness_loss(logits, box, granularity="auto", **kwargs).item() == pytest.approx(0.0, abs=1e-6)
    # an empty end plane is penalised: z = 1 for the plane z=0 (band width 1)
    probs2 = probs.clone()
    probs2[0, 1, 0] = 0.0
    probs2[0, 0, 0] = 1.0
    logits2 = torch.log(probs2.clamp(1e-12, 1.0))
    assert box_tightness_loss(logits2, box, granularity="volume", **kwargs).item() == pytest.approx(1.0, abs=1e-6)
    # one-slice-thick boxes: auto == slice
    thin = [[(1, (0, 0, 0), (1, 4, 4))]]
    torch.testing.assert_close(box_tightness_loss(logits, thin, granularity="auto", **kwargs),
                               box_tightness_loss(logits, thin, granularity="slice", **kwargs))
    with pytest.raises(ValueError, match="granularity"):
        box_tightness_loss(logits, box, granularity="planes")


def test_box_region_energy_hand_values_and_the_image_split_is_its_minimum() -> None:
    """Two-phase energy in a 1x4 box of intensities [0, 0, 2, 2] (variance 1): a constant prediction
    costs 1, the split along the intensity edge 0, a half-right split in between (hand value)."""
    image = torch.tensor([0.0, 0.0, 2.0, 2.0], dtype=torch.float64).view(1, 1, 1, 4)
    box = [[(1, (0, 0), (1, 4))]]

    def logits(p1: list[float]) -> torch.Tensor:
        p = torch.tensor(p1, dtype=torch.float64).clamp(1e-9, 1 - 1e-9).view(1, 1, 4)
        return torch.log(torch.cat([1 - p, p]).unsqueeze(0))

    assert box_region_loss(logits([0.5] * 4), image, box, eps=0).item() == pytest.approx(1.0)
    assert box_region_loss(logits([0, 0, 1, 1]), image, box, eps=0).item() == pytest.approx(0.0, abs=1e-6)
    assert box_region_loss(logits([1, 1, 0, 0]), image, box, eps=0).item() == pytest.approx(0.0, abs=1e-6)
    # object = voxels 1..3 (intensities 0, 2, 2): mean 4/3, squared deviations 16/9, 4/9, 4/9 -> 8/3;
    # background = voxel 0 alone: 0; energy (8/3) / 4 voxels / variance 1 = 2/3
    assert box_region_loss(logits([0, 1, 1, 1]), image, box, eps=0).item() == pytest.approx(2 / 3, abs=1e-6)
    # outside the box nothing counts; "none" puts the box under its (item, class)
    wide = torch.cat([image, torch.full((1, 1, 1, 2), 9.0, dtype=torch.float64)], -1)
    lg = torch.cat([logits([0, 0, 1, 1]), torch.zeros(1, 2, 1, 2, dtype=torch.float64)], -1)
    table = box_region_loss(lg, wide, box, reduction="none", eps=0)
    assert table.shape == (1, 2) and table[0, 1].item() == pytest.approx(0.0, abs=1e-6) and table[0, 0] == 0
    assert box_region_loss(lg, wide, [[]]).item() == 0.0
    with pytest.raises(ValueError, match="image must be"):
        box_region_loss(lg, image, box)


def test_box_region_gradient_pulls_the_box_voxels_like_the_object_into_it_and_gradcheck_float64() -> None:
    torch.manual_seed(0)
    image = torch.zeros(1, 1, 4, 6, 6, dtype=torch.float64)
    image[0, 0, 1:3, 2:5, 2:5] = 3.0                       # a bright object inside the box
    logits = torch.zeros(1, 2, 4, 6, 6, dtype=torch.float64)
    logits[0, 1, 1:3, 2:4, 2:4] = 4.0                      # a prediction that covers part of it
    logits.requires_grad_(True)
    box = [[(1, (0, 1, 1), (4, 6, 6))]]
    box_region_loss(logits, image, box).backward()
    g = logits.grad[0, 1]
    # descending the loss raises the object logit on the bright voxels not yet predicted, lowers it on dark ones
    assert g[1, 4, 4] < 0 and g[0, 1, 1] > 0
    small = (torch.randn(1, 2, 2, 3, 3, dtype=torch.float64) * 0.5).requires_grad_(True)
    img = torch.randn(1, 2, 2, 3, 3, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: box_region_loss(x, img, [[(1, (0, 0, 0), (2, 3, 3))]]), (small,))


def test_smooth_max_lies_between_the_mean_and_the_max() -> None:
    x = torch.tensor([0.0, 0.2, 1.0], dtype=torch.float64)
    w = torch.exp(2.0 * x)
    assert smooth_max(x, 2.0).item() == pytest.approx((x * w).sum().item() / w.sum().item())
    assert smooth_max(x, 1e-9).item() == pytest.approx(x.mean().item())
    assert smooth_max(x, 200.0).item() == pytest.approx(1.0)


def test_box_mil_hand_values_2d() -> None:
    """A 2 x 3 box: 2 row bags and 3 column bags, each costs -log(smooth max of its class-1 probabilities)."""
    p = torch.full((1, 2, 4, 5), 0.1, dtype=torch.float64)
    p[0, 1, 1, 1] = 0.9                      # one confident voxel on row 1 and column 1 of the box
    p[0, 0] = 1 - p[0, 1]
    logits = torch.log(p)
    boxes = [[(1, (1, 1), (3, 4))]]
    alpha = 4.0

    def bag(values):
        return -math.log(smooth_max(torch.tensor(values, dtype=torch.float64), alpha).item())

    rows = [bag([0.9, 0.1, 0.1]), bag([0.1, 0.1, 0.1])]
    cols = [bag([0.9, 0.1]), bag([0.1, 0.1]), bag([0.1, 0.1])]
    expected = sum(rows + cols)
    assert box_mil_loss(logits, boxes, alpha=alpha, reduction="sum").item() == pytest.approx(expected)
    assert box_mil_loss(logits, boxes, alpha=alpha).item() == pytest.approx(expected / 5)
    none = box_mil_loss(logits, boxes, alpha=alpha, reduction="none")
    assert none.shape == (1, 2) and none[0, 0].item() == 0.0 and none[0, 1].item() == pytest.approx(expected)


def test_box_mil_3d_planes_and_slices() -> None:
    """A thick 3D box: every plane is a bag (3 + 4 + 4 here), met by a confident core through all slices;
    per slice the empty rows and columns of the end slices are bags that cost."""
    probs = torch.full((1, 2, 3, 4, 4), 1e-6, dtype=torch.float64)
    probs[0, 1, :, 1:3, 1:3] = 1.0 - 1e-6     # a 2x2 core through the 3 slices
    probs[0, 1, 1] = 1.0 - 1e-6               # and the middle slice fills the box: every plane meets the object
    probs[0, 0] = 1.0 - probs[0, 1]
    logits = torch.log(probs)
    box = [[(1, (0, 0, 0), (3, 4, 4))]]
    volume = box_mil_loss(logits, box, reduction="sum", granularity="volume")
    assert volume.item() < 11 * 0.1                        # 11 plane bags, each nearly met
    assert box_mil_loss(logits, box, reduction="sum").item() == pytest.approx(volume.item())   # auto: thick
    per_slice = box_mil_loss(logits, box, reduction="sum", granularity="slice")
    assert per_slice.item() > 8 * 5.0                      # rows/cols 0 and 3 of the end slices: 8 empty bags
    emptier = probs.clone()
    emptier[0, 1, 0] = 1e-6                                # the first plane loses the object
    emptier[0, 0] = 1.0 - emptier[0, 1]
    assert box_mil_loss(torch.log(emptier), box, reduction="sum").item() > volume.item() + 5.0
    with pytest.raises(ValueError, match="alpha"):
        box_mil_loss(logits, box, alpha=0.0)
    with pytest.raises(ValueError, match="granularity"):
        box_mil_loss(logits, box, granularity="planes")


def test_box_mil_gradcheck_float64_and_no_box() -> None:
    torch.manual_seed(0)
    logits = torch.randn(1, 2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    for granularity in ("slice", "volume"):
        assert torch.autograd.gradcheck(
            lambda x, g=granularity: box_mil_loss(x, [[(1, (0, 1, 1), (2, 4, 4))]], granularity=g), (logits,))
    empty = torch.randn(2, 2, 4, 4, requires_grad=True)
    value = box_mil_loss(empty, [[], []])
    value.backward()
    assert value.item() == 0.0 and torch.isfinite(empty.grad).all()
