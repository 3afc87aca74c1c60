"""The pairwise (CRF) regularised loss: hand values, the gate, spacing, and that it moves a boundary to an edge."""

from __future__ import annotations

import math

import pytest
import torch

from WeakSegLib.losses import CRFLoss, crf_loss, crf_offsets, partial_cross_entropy


def _onehot_logits(labels: torch.Tensor, k: int, scale: float = 30.0) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels, k).movedim(-1, 1).float() * scale


def test_offsets_are_one_half_of_the_window():
    assert crf_offsets(2, 1) == [(0, 1), (1, -1), (1, 0), (1, 1)]
    assert len(crf_offsets(3, 2)) == (5 ** 3 - 1) // 2
    assert crf_offsets(3, (0, 1, 1)) == [(0, 0, 1), (0, 1, -1), (0, 1, 0), (0, 1, 1)]
    with pytest.raises(ValueError, match="radius"):
        crf_offsets(2, 0)
    with pytest.raises(ValueError, match="radius"):
        crf_offsets(3, (1, 1))


def test_hand_value_two_by_one_image():
    # Two voxels, one pair, certain and different labels: w = exp(-d^2/2s^2) * ws, energy per voxel
    # = w * 1 / (2 * ws) ... normalised by the window's spatial sum (both halves) = 2 * ws.
    labels = torch.tensor([[[0, 1]]])
    logits = _onehot_logits(labels, 2, 50.0)
    image = torch.tensor([[[[0.0, 0.3]]]])
    value = crf_loss(logits, image, radius=(0, 1), sigma_intensity=0.3, sigma_spatial=1.0, reduction="sum")
    expected = math.exp(-0.5) * 2 / 2        # total over the pair x (2 / (2 ws)) with ws cancelling
    assert value.item() == pytest.approx(expected, rel=1e-5)
    per_voxel = crf_loss(logits, image, radius=(0, 1), sigma_intensity=0.3, sigma_spatial=1.0, reduction="none")
    assert torch.allclose(per_voxel, torch.full((1, 1, 2), expected / 2))
    # A pair in the middle of a longer row lands on its two voxels only (diagonal offsets included).
    image3 = torch.zeros(1, 1, 3, 3)
    labels3 = torch.zeros(1, 3, 3, dtype=torch.long)
    labels3[0, 2, 2] = 1
    energy = crf_loss(_onehot_logits(labels3, 2, 50.0), image3, radius=1, reduction="none")[0]
    touched = energy > 1e-6
    assert touched[1:, 1:].all() and not touched[0].any() and not touched[:, 0].any()
    # Same label everywhere: no energy.
    same = crf_loss(_onehot_logits(torch.zeros(1, 1, 2, dtype=torch.long), 2, 50.0), image, radius=(0, 1))
    assert same.item() == pytest.approx(0.0, abs=1e-6)


def test_value_is_in_unit_interval_and_none_sums_to_sum():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 9, 11, generator=g)
    image = torch.randn(2, 2, 9, 11, generator=g)
    for radius in (1, 2, 3):
        mean = crf_loss(logits, image, radius=radius)
        assert 0.0 <= mean.item() <= 1.0
        per_voxel = crf_loss(logits, image, radius=radius, reduction="none")
        assert per_voxel.shape == (2, 9, 11)
        assert per_voxel.sum().item() == pytest.approx(crf_loss(logits, image, radius=radius, reduction="sum").item(),
                                                       rel=1e-5)
        assert per_voxel.sum().item() / per_voxel.numel() == pytest.approx(mean.item(), rel=1e-5)


def test_boundary_on_an_edge_costs_less_than_a_boundary_in_a_flat_region():
    image = torch.zeros(1, 1, 16, 16)
    image[..., 8:] = 2.0                                       # a vertical edge between columns 7 and 8
    on_edge = torch.zeros(1, 16, 16, dtype=torch.long)
    on_edge[..., 8:] = 1
    off_edge = torch.zeros(1, 16, 16, dtype=torch.long)
    off_edge[..., 4:] = 1
    a = crf_loss(_onehot_logits(on_edge, 2), image, sigma_intensity=0.3)
    b = crf_loss(_onehot_logits(off_edge, 2), image, sigma_intensity=0.3)
    assert a.item() < 1e-3 < b.item()


def test_mask_gate_drops_pairs_and_spacing_weighs_thick_slices_less():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 2, 4, 6, 6, generator=g)
    image = torch.zeros(1, 1, 4, 6, 6)
    mask = torch.zeros(1, 4, 6, 6, dtype=torch.bool)
    assert crf_loss(logits, image, radius=1, mask=mask).item() == 0.0
    mask[:, :3] = True
    gated = crf_loss(logits, image, radius=1, mask=mask, reduction="none")
    assert (gated[:, 3:] == 0).all() and (gated[:, 1] > 0).any()
    # Labels that change only across slices: with 5 mm slices and 1 mm in-plane the between-slice
    # pairs weigh far less than with isotropic voxels.
    labels = torch.zeros(1, 4, 6, 6, dtype=torch.long)
    labels[:, 2:] = 1
    lg = _onehot_logits(labels, 2)
    iso = crf_loss(lg, image, radius=1, spacing=(1.0, 1.0, 1.0), sigma_spatial=1.0)
    thick = crf_loss(lg, image, radius=1, spacing=(5.0, 1.0, 1.0), sigma_spatial=1.0)
    assert thick.item() < 0.01 * iso.item()


def test_gradient_moves_a_boundary_to_the_edge():
    """pCE on two scribbles leaves the boundary anywhere; + CRF puts it on the intensity edge."""
    torch.manual_seed(0)
    image = torch.zeros(1, 1, 1, 24)
    image[..., 14:] = 2.0
    labels = torch.full((1, 1, 24), -1)
    labels[..., 1] = 0
    labels[..., 22] = 1
    results = {}
    for weight in (0.0, 5.0):
        logits = torch.zeros(1, 2, 1, 24, requires_grad=True)
        opt = torch.optim.Adam([logits], lr=0.1)
        for _ in range(300):
            loss = partial_cross_entropy(logits, labels) + weight * crf_loss(logits, image, radius=(0, 2),
                                                                              sigma_intensity=0.3)
            opt.zero_grad()
            loss.backward()
            opt.step()
        results[weight] = logits.detach().argmax(1)[0, 0]
    expected = (torch.arange(24) >= 14).long()
    assert (results[5.0] == expected).all()
    assert not (results[0.0] == expected).all()


def test_errors_say_what_is_wrong():
    logits = torch.randn(1, 2, 4, 4)
    with pytest.raises(ValueError, match="image must have shape"):
        crf_loss(logits, torch.randn(1, 1, 4, 5))
    with pytest.raises(TypeError, match="image must be a floating point"):
        crf_loss(logits, torch.zeros(1, 1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="sigma_intensity"):
        crf_loss(logits, torch.randn(1, 1, 4, 4), sigma_intensity=0.0)
    with pytest.raises(ValueError, match="spacing"):
        crf_loss(logits, torch.randn(1, 1, 4, 4), spacing=(1.0,))


def test_module_matches_function():
    g = torch.Generator().manual_seed(2)
    logits, image = torch.randn(2, 3, 5, 5, generator=g), torch.randn(2, 1, 5, 5, generator=g)
    module = CRFLoss(radius=2, sigma_intensity=0.4, sigma_spatial=2.0, spacing=(1.0, 2.0))
    assert module(logits, image).item() == pytest.approx(
        crf_loss(logits, image, 2, 0.4, 2.0, (1.0, 2.0)).item())
