"""Demonstration that a global size prior fixes what scribbles alone cannot.

A 64 x 64 image contains a disc of known area A (radius 14: A = 613 px). The only annotation is
one pixel per class (one inside the disc, one in the background). We optimise a free logits
tensor directly with Adam:

* partial cross-entropy alone only acts on the two scribbled pixels: every other pixel keeps
  p = 1/2, the predicted foreground size stays near 64 * 64 / 2 = 2048, far outside
  [0.9 A, 1.1 A];
* adding the size constraint 0.9 A <= sum_p s_1 <= 1.1 A (penalty or log-barrier) brings the
  predicted size inside the bounds.
"""

from __future__ import annotations

import pytest
import torch

from WeakSegLib.losses import LogBarrierSchedule, partial_cross_entropy, size_constraint_loss

SIZE = 64
RADIUS = 14
STEPS = 300


def _problem() -> tuple[torch.Tensor, float]:
    yy, xx = torch.meshgrid(torch.arange(SIZE), torch.arange(SIZE), indexing="ij")
    disc = (yy - SIZE // 2) ** 2 + (xx - SIZE // 2) ** 2 <= RADIUS**2
    labels = torch.full((1, SIZE, SIZE), -1, dtype=torch.long)
    labels[0, SIZE // 2, SIZE // 2] = 1  # foreground scribble (inside the disc)
    labels[0, 3, 3] = 0  # background scribble
    assert bool(disc[SIZE // 2, SIZE // 2]) and not bool(disc[3, 3])
    return labels, float(disc.sum())


def _optimise(method: str | None) -> float:
    labels, area = _problem()
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


def test_partial_ce_alone_misses_the_size() -> None:
    _, area = _problem()
    size = _optimise(None)
    assert not 0.9 * area <= size <= 1.1 * area
    assert size > 1.5 * area  # stays at ~50 % of the image


@pytest.mark.parametrize("method", ["penalty", "log_barrier"])
def test_size_constraint_reaches_the_bounds(method: str) -> None:
    _, area = _problem()
    size = _optimise(method)
    assert 0.9 * area <= size <= 1.1 * area, (method, size, area)
