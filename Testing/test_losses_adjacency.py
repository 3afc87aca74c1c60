"""Tests of the non-adjacency prior."""

from __future__ import annotations

import pytest
import torch

from WeakSegLib.losses import NonAdjacencyLoss, non_adjacency_loss, soft_adjacency


def _strip(layout: list[int], num_classes: int = 3) -> torch.Tensor:
    """Nearly one-hot float64 logits of a 1 x N strip with the given class layout."""
    onehot = torch.nn.functional.one_hot(torch.tensor(layout), num_classes).T.double()
    return (60.0 * onehot).reshape(1, num_classes, 1, len(layout))


ADJACENCY_CASES = [
    # layout, kernel_size, pair, expected A_ij (n = 4 voxels)
    ([0, 1, 1, 2], 3, (0, 1), 1 / 4),
    ([0, 1, 1, 2], 3, (1, 0), 1 / 4),
    ([0, 1, 1, 2], 3, (0, 2), 0.0),
    ([0, 1, 1, 2], 5, (0, 2), 0.0),
    ([0, 1, 1, 2], 7, (0, 2), 1 / 4),
    ([0, 1, 1, 2], 1, (0, 1), 0.0),  # no dilation: disjoint supports never overlap
    ([1, 1, 1, 1], 3, (0, 2), 0.0),  # empty classes
]


@pytest.mark.parametrize("layout,kernel_size,pair,expected", ADJACENCY_CASES)
def test_values(layout, kernel_size, pair, expected) -> None:
    value = non_adjacency_loss(_strip(layout), [pair], kernel_size=kernel_size)
    assert value.item() == pytest.approx(expected, abs=1e-12)


def test_3d_matrix_pairs_and_module() -> None:
    logits = torch.zeros(1, 3, 1, 1, 4, dtype=torch.float64)
    logits[0, :, 0, 0] = _strip([0, 1, 1, 2])[0, :, 0]
    matrix = torch.zeros(3, 3, dtype=torch.bool)
    matrix[0, 2] = matrix[0, 1] = True
    none = NonAdjacencyLoss(matrix, reduction="none")(logits)
    assert none.shape == (1, 2)
    torch.testing.assert_close(none, torch.tensor([[0.25, 0.0]], dtype=torch.float64))
    A = soft_adjacency(torch.softmax(logits, 1))
    assert A.shape == (1, 3, 3) and A[0, 1, 2].item() == pytest.approx(0.25)


def test_no_pairs_is_zero() -> None:
    logits = torch.randn(2, 3, 3, 3, requires_grad=True)
    value = non_adjacency_loss(logits, [])
    value.backward()
    assert value.item() == 0.0
    assert non_adjacency_loss(logits, [], reduction="none").shape == (2, 0)


def test_minimising_separates_classes() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 3, 6, 6, generator=g).requires_grad_()
    optimiser = torch.optim.Adam([logits], lr=0.2)
    start = non_adjacency_loss(logits, [(0, 2), (2, 0)]).item()
    for _ in range(50):
        optimiser.zero_grad()
        non_adjacency_loss(logits, [(0, 2), (2, 0)]).backward()
        optimiser.step()
    assert non_adjacency_loss(logits, [(0, 2), (2, 0)]).item() < 0.2 * start


@pytest.mark.parametrize(
    "pairs,error,match",
    [
        ([(0, 3)], ValueError, r"forbidden pair \(0, 3\) has a class outside \[0, 2\]"),
        ([(1, 1)], ValueError, "pairs a class with itself"),
        ([(0,)], TypeError, r"sequence of \(i, j\) class pairs"),
        (torch.zeros(2, 2, dtype=torch.bool), ValueError, r"shape \(C, C\) = \(3, 3\), got \(2, 2\)"),
    ],
)
def test_ill_shape(pairs, error, match) -> None:
    with pytest.raises(error, match=match):
        non_adjacency_loss(torch.zeros(1, 3, 3, 3), pairs)


def test_ill_opts() -> None:
    with pytest.raises(ValueError, match="kernel_size must be an odd int >= 1"):
        non_adjacency_loss(torch.zeros(1, 3, 3, 3), [(0, 1)], kernel_size=2)
    with pytest.raises(ValueError, match="kernel_size must be an odd int >= 1"):
        NonAdjacencyLoss([(0, 1)], kernel_size=-1)
    with pytest.raises(ValueError, match="reduction must be one of"):
        NonAdjacencyLoss([(0, 1)], reduction="max")
