"""Tests of the consistency / equivariance regularisers and their transforms."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from WeakSegLib.losses import (
    ConsistencyLoss,
    CrossModalEquivarianceLoss,
    EquivarianceLoss,
    consistency_loss,
    cross_modal_equivariance_loss,
    equivariance_loss,
    flip,
    rot90,
    scale,
)


def _pair(shape=(2, 3, 3, 4)) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.randn(shape, dtype=torch.float64, generator=g), torch.randn(
        shape, dtype=torch.float64, generator=g
    )


@pytest.mark.parametrize("shape", [(2, 3, 3, 4), (1, 2, 2, 3, 3)])
def test_mse_and_kl_match_torch(shape) -> None:
    a, b = _pair(shape)
    mse = consistency_loss(a, b, "mse")
    torch.testing.assert_close(mse, F.mse_loss(torch.softmax(a, 1), torch.softmax(b, 1)))
    kl = consistency_loss(a, b, "kl")
    voxels = shape[0] * torch.Size(shape[2:]).numel()
    expected = (
        F.kl_div(torch.log_softmax(a, 1), torch.log_softmax(b, 1), log_target=True, reduction="sum") / voxels
    )
    torch.testing.assert_close(kl, expected)
    assert consistency_loss(a, a, "kl").item() == pytest.approx(0.0, abs=1e-12)


def test_mask_detach_and_module() -> None:
    a, b = _pair()
    a.requires_grad_()
    b.requires_grad_()
    mask = torch.zeros(2, 3, 4, dtype=torch.bool)
    mask[0, 1, 2] = True
    value = ConsistencyLoss("kl")(a, b, mask)
    value.backward()
    assert b.grad is None and a.grad is not None
    per_voxel = consistency_loss(a, b, "kl", reduction="none")
    assert value.item() == pytest.approx(per_voxel[0, 1, 2].item())
    both = consistency_loss(a, b, "mse", detach_target=False)
    both.backward()
    assert b.grad is not None
    empty = consistency_loss(a, b, mask=torch.zeros_like(mask))
    assert empty.item() == 0.0


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x * 3.0


def _ramp(x: torch.Tensor) -> torch.Tensor:
    # adds a left-to-right ramp to the first class only: not flip / rotation equivariant
    ramp = torch.zeros_like(x)
    ramp[:, 0] = torch.linspace(0.0, 2.0, x.shape[-1], dtype=x.dtype)
    return x + ramp


TRANSFORMS = {
    "flip": flip((-1,)),
    "flip2": flip((2, 3)),
    "rot90": rot90(1),
    "rot270": rot90(-1, (2, 3)),
    "scale": scale(2.0),
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_equivariant_model_gives_zero(name) -> None:
    x, _ = _pair((1, 2, 4, 4))
    transform = TRANSFORMS[name]
    assert equivariance_loss(_identity, x, transform).item() == pytest.approx(0.0, abs=1e-12)
    if name != "scale":  # bilinear down(up(x)) != x: the scale inverse is only approximate
        inverse = transform.inverse()
        assert equivariance_loss(_identity, x, transform, inverse, kind="kl").item() == pytest.approx(
            0.0, abs=1e-10
        )


@pytest.mark.parametrize("name", ["flip", "rot90"])
def test_non_equivariant_model_is_penalised(name) -> None:
    x, _ = _pair((1, 2, 4, 4))
    assert equivariance_loss(_ramp, x, TRANSFORMS[name]).item() > 1e-4
    assert EquivarianceLoss(TRANSFORMS[name], kind="kl")(_ramp, x).item() > 1e-4


def test_transforms_round_trip_3d() -> None:
    x = torch.randn(1, 2, 2, 4, 4)
    for transform in (flip((-3,)), rot90(1, (3, 4))):
        torch.testing.assert_close(transform.inverse()(transform(x)), x)
    up = scale(2.0)(x)
    assert up.shape == (1, 2, 4, 8, 8) and scale(2.0).inverse()(up).shape == x.shape


def test_cross_modal_equivariance() -> None:
    def model(x: torch.Tensor) -> torch.Tensor:  # depends on the channel sum only
        s = x.sum(1)
        return torch.stack([s, -s], 1)

    same = torch.randn(1, 1, 4, 4).repeat(1, 2, 1, 1)
    assert cross_modal_equivariance_loss(model, same, flip((-1,)), [[0], [1]]).item() == pytest.approx(0.0)
    different = torch.randn(1, 2, 4, 4, requires_grad=True)
    value = CrossModalEquivarianceLoss(flip((-1,)), [[0], [1]])(model, different)
    value.backward()
    assert value.item() > 1e-4 and torch.isfinite(different.grad).all()
    none = cross_modal_equivariance_loss(model, different, flip((-1,)), [[0], [1]], reduction="none")
    assert none.shape == (1, 4, 4)


def test_ill_shape() -> None:
    a, b = _pair()
    with pytest.raises(ValueError, match=r"same shape, got \(2, 3, 3, 4\) and \(2, 3, 3, 3\)"):
        consistency_loss(a, b[..., :3])
    with pytest.raises(ValueError, match=r"mask must have shape \(B, \*spatial\) = \(2, 3, 4\)"):
        consistency_loss(a, b, mask=torch.ones(2, 4, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="transform dims must index spatial dims"):
        flip((1,))(a)
    with pytest.raises(ValueError, match="different shapes"):
        equivariance_loss(_identity, torch.randn(1, 2, 5, 5), scale(0.5), scale(2.0))
    with pytest.raises(ValueError, match="channel index 3 out of range"):
        cross_modal_equivariance_loss(_identity, torch.randn(1, 2, 4, 4), flip((-1,)), [[0], [3]])


def test_ill_opts() -> None:
    with pytest.raises(ValueError, match="kind must be one of"):
        ConsistencyLoss(kind="l1")
    with pytest.raises(ValueError, match="scale factor must be a float > 0"):
        scale(0.0)
    with pytest.raises(ValueError, match="rot90 needs exactly 2 dims"):
        rot90(1, (2,))
    with pytest.raises(TypeError, match="model must be callable"):
        equivariance_loss("net", torch.zeros(1, 2, 2, 2), flip((-1,)))
    with pytest.raises(ValueError, match="at least 2 non-empty groups"):
        CrossModalEquivarianceLoss(flip((-1,)), [[0]])
