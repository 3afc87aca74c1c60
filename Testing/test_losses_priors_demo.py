"""Demonstration that a global size prior fixes what scribbles alone cannot.

A 64 x 64 image contains a disc of known area A (radius 14: A = 613 px). The only annotation is
one pixel per class (one inside the disc, one in the background). We optimise a free logits
tensor directly with Adam:

* partial cross-entropy alone only acts on the two scribbled pixels: every other pixel keeps
  p = 1/2, the predicted foreground size stays near 64 * 64 / 2 = 2048, far outside
  [0.9 A, 1.1 A];
* adding the size constraint 0.9 A <= sum_p s_1 <= 1.1 A (penalty or log-barrier) brings the
  predicted size inside the bounds. Each side is relative to its bound, so a small disc (radius 6,
  A = 113 px, under 3 % of the image) is held as firmly as the large one: exceeding the upper bound
  by 50 % costs 0.25 for both, where normalising by the image size would cost
  (0.5 * 1.1 A / 4096)^2 = 0.0068 for the large disc and 0.00023 for the small one.
"""

from __future__ import annotations

import pytest
import torch

from WeakSegLib.losses import LogBarrierSchedule, partial_cross_entropy, size_constraint_loss, size_penalty

SIZE = 64
RADIUS = 14
STEPS = 300


def _problem(radius: int = RADIUS) -> tuple[torch.Tensor, float]:
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    disc = (yy - SIZE // 2) ** 2 + (xx - SIZE // 2) ** 2 <= radius**2
    labels = torch.full((1, SIZE, SIZE), -1, dtype=torch.long)
    labels[0, SIZE // 2, SIZE // 2] = 1  # foreground scribble (inside the disc)
    labels[0, 3, 3] = 0  # background scribble
    assert bool(disc[SIZE // 2, SIZE // 2]) and not bool(disc[3, 3])
    return labels, float(disc.sum())


def _optimise(method: str | None, radius: int = RADIUS) -> float:
    labels, area = _problem(radius)
    generator = torch.Generator().manual_seed(0)
    logits = (1e-3 * torch.randn(1, 2, SIZE, SIZE, generator=generator)).requires_grad_()
    optimiser = torch.optim.Adam([logits], lr=0.1)
    active = torch.tensor([[False, True]])  # constrain the foreground class only
    schedule = LogBarrierSchedule(t0=5.0, factor=1.01, t_max=20.0)
    for _ in range(STEPS):
        optimiser.zero_grad()
        loss = partial_cross_entropy(logits, labels)
        if method is not None:
            loss = loss + size_constraint_loss(
                logits, 0.9 * area, 1.1 * area, active, method=method, t=schedule.t
            )
        loss.backward()
        optimiser.step()
        schedule.step()
    with torch.no_grad():
        return float(torch.softmax(logits, 1)[0, 1].sum())


def test_disc_area_is_about_600() -> None:
    _, area = _problem()
    assert 550 <= area <= 650
    assert _problem(6)[1] == 113.0


def test_partial_ce_alone_misses_the_size() -> None:
    _, area = _problem()
    size = _optimise(None)
    assert not 0.9 * area <= size <= 1.1 * area
    assert size > 1.5 * area  # stays at ~50 % of the image


@pytest.mark.parametrize("radius", [RADIUS, 6])
@pytest.mark.parametrize("method", ["penalty", "log_barrier"])
def test_size_constraint_reaches_the_bounds(method: str, radius: int) -> None:
    _, area = _problem(radius)
    size = _optimise(method, radius)
    assert 0.9 * area <= size <= 1.1 * area, (method, size, area)


def test_missing_the_bound_by_the_same_ratio_costs_the_same_for_both_discs() -> None:
    # sizes 2048 (the prediction of partial CE alone, half the image) and 1.5 * 1.1 A: with the relative
    # formulation only the ratio to the bound matters (floor max(1, 4.096) is below both bounds);
    # z = (2048 - 1.1 A) / (1.1 A) > 1 is in the linear part, 2z - 1; z = 0.5 costs 0.25
    logits = torch.zeros(1, 2, SIZE, SIZE, dtype=torch.float64)  # soft size 2048 per class
    active = torch.tensor([[False, True]])
    for radius in (RADIUS, 6):
        _, area = _problem(radius)
        upper = 1.1 * area
        z = (2048 - upper) / upper
        value = size_constraint_loss(logits, 0.9 * area, upper, active)
        assert value.item() == pytest.approx(2 * z - 1, rel=1e-12)
        excess = torch.tensor([[0.0, 1.5 * upper]], dtype=torch.float64)
        assert size_penalty(excess, 0.9 * area, upper, active, region_size=SIZE * SIZE).item() == \
            pytest.approx(0.5**2, rel=1e-12)
