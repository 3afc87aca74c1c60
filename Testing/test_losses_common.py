"""Properties every loss of WeakSegLib.losses must have, checked on one table of cases.

* float64 ``gradcheck`` on tiny 2D and 3D inputs;
* finite values and gradients for extreme logits (+-1e4, float32);
* every reduction gives the documented kind of output; the modules match the functions.
"""

from __future__ import annotations

import pytest
import torch

import WeakSegLib.losses as L

SHAPES = {"2d": (2, 3, 3, 4), "3d": (2, 3, 2, 3, 3)}


def _labels(shape: tuple[int, ...], unknown_item: bool = True) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    labels = torch.randint(-1, shape[1], (shape[0], *shape[2:]), generator=g)
    if unknown_item:
        labels[-1] = -1  # mixed batch: the last item is not annotated at all
    return labels


def _boxes(shape: tuple[int, ...]) -> list:
    nd = len(shape) - 2
    return [[(1, (0,) * nd, (2,) * nd), (2, (1,) * nd, tuple(shape[2:]))], []]


def _model(x: torch.Tensor) -> torch.Tensor:
    # a fixed, non-equivariant "network": channel mix + a coordinate ramp
    ramp = torch.linspace(0.0, 1.0, x.shape[-1], dtype=x.dtype)
    mixed = torch.stack([x[:, 0] + x[:, 1], x[:, 1] - x[:, 2], x[:, 2] * 0.5], dim=1)
    return mixed + ramp


# name -> callable(logits) -> loss (scalar with reduction="mean")
CASES = {
    "partial_ce": lambda x, r="mean": L.partial_cross_entropy(x, _labels(x.shape), reduction=r),
    "partial_ce_weighted": lambda x, r="mean": L.partial_cross_entropy(
        x, _labels(x.shape), class_weights=[0.2, 1.0, 3.0], reduction=r
    ),
    "partial_dice": lambda x, r="mean": L.partial_dice_loss(x, _labels(x.shape), reduction=r),
    "size_penalty": lambda x, r="mean": L.size_constraint_loss(x, 2.0, 6.0, reduction=r),
    "size_barrier": lambda x, r="mean": L.size_constraint_loss(
        x, 2.0, 6.0, method="log_barrier", reduction=r
    ),
    "size_groups": lambda x, r="mean": L.size_constraint_loss(
        x, 3.0, 9.0, groups=torch.tensor([0, 0]), method="log_barrier", reduction=r
    ),
    "tags": lambda x, r="mean": L.tag_constraint_loss(
        x, torch.tensor([[1, 0, -1], [1, 1, 0]]), min_size=2.0, reduction=r
    ),
    "tags_barrier": lambda x, r="mean": L.tag_constraint_loss(
        x, torch.tensor([[1, 0, -1], [1, 1, 0]]), method="log_barrier", reduction=r
    ),
    "box_emptiness": lambda x, r="mean": L.box_emptiness_loss(x, _boxes(x.shape), reduction=r),
    "box_tightness": lambda x, r="mean": L.box_tightness_loss(
        x, _boxes(x.shape), band_width=2, box_size_bounds=(0.2, 0.8), reduction=r
    ),
    "box_size": lambda x, r="mean": L.box_size_loss(x, _boxes(x.shape), 0.3, 0.6, reduction=r),
    "box_size_barrier": lambda x, r="mean": L.box_size_loss(
        x, _boxes(x.shape), 0.3, 0.6, method="log_barrier", reduction=r
    ),
    "relative_bound": lambda x, r="mean": L.relative_bound_loss(
        torch.softmax(x, 1).sum(tuple(range(2, x.ndim))), torch.tensor([[0.0, 2.0, 0.0], [1.0, 4.0, 0.5]]),
        torch.tensor([[3.0, 5.0, 0.0], [9.0, 4.0, 1.0]]), value_max=9.0, method="log_barrier", reduction=r
    ),
    "box_tightness_penalty": lambda x, r="mean": L.box_tightness_loss(
        x, _boxes(x.shape), band_width=1, method="penalty", reduction=r
    ),
    "class_ratio": lambda x, r="mean": L.class_ratio_kl_loss(x, [0.5, 0.3, 0.2], reduction=r),
    "centroid": lambda x, r="mean": L.centroid_constraint_loss(
        x, 1.0, 2.0, spacing=[1.5] * (x.ndim - 2), method="log_barrier", reduction=r
    ),
    "spread": lambda x, r="mean": L.spread_constraint_loss(x, 0.5, 0.6, reduction=r),
    "entropy": lambda x, r="mean": L.entropy_loss(x, mask=_labels(x.shape) < 0, reduction=r),
    "smile_sigmoid": lambda x, r="mean": L.SmileLoss("sigmoid", reduction=r)(
        x, _labels(x.shape), torch.tensor([[True, False, False], [False, False, True]])
    ),
    "smile_softmax": lambda x, r="mean": L.SmileLoss("softmax", reduction=r)(
        x, _labels(x.shape), torch.tensor([[True, False, False], [False, False, True]])
    ),
    "consistency_kl": lambda x, r="mean": L.consistency_loss(
        x, x.flip(-1), "kl", detach_target=False, reduction=r
    ),
    "consistency_mse": lambda x, r="mean": L.consistency_loss(
        x, x.flip(-1), "mse", detach_target=False, reduction=r
    ),
    "equivariance": lambda x, r="mean": L.equivariance_loss(_model, x, L.flip((-1,)), reduction=r),
    "cross_modal": lambda x, r="mean": L.cross_modal_equivariance_loss(
        _model, x, L.flip((-1,)), [[0], [1, 2]], reduction=r
    ),
    "non_adjacency": lambda x, r="mean": L.non_adjacency_loss(x, [(0, 2), (2, 0)], reduction=r),
    "dice_ce": lambda x, r="mean": L.dice_ce_loss(x, _labels(x.shape), reduction=r),
    "crf": lambda x, r="mean": L.crf_loss(
        x, torch.linspace(0, 1, x[:, :1].numel(), dtype=x.dtype).reshape(x[:, :1].shape), radius=1,
        sigma_intensity=0.5, reduction=r
    ),
}

PARAMS = [(name, dim) for name in CASES for dim in SHAPES]


@pytest.mark.parametrize("name,dim", PARAMS)
def test_gradcheck(name: str, dim: str) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(SHAPES[dim], dtype=torch.float64, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(CASES[name], (x,), eps=1e-6, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("name,dim", PARAMS)
def test_extreme_logits_finite(name: str, dim: str) -> None:
    g = torch.Generator().manual_seed(5)
    x = (torch.randn(SHAPES[dim], generator=g).sign() * 1e4).requires_grad_()
    value = CASES[name](x)
    (grad,) = torch.autograd.grad(value, x)
    assert torch.isfinite(value).all(), value
    assert torch.isfinite(grad).all()


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("reduction", ["sum", "none"])
def test_reductions(name: str, reduction: str) -> None:
    g = torch.Generator().manual_seed(9)
    x = torch.randn(SHAPES["2d"], generator=g).requires_grad_()
    value = CASES[name](x, reduction)
    assert torch.isfinite(value).all()
    if reduction == "sum":
        assert value.ndim == 0
    else:
        assert value.ndim >= 1
        value.sum().backward()
        assert torch.isfinite(x.grad).all()


def test_public_api_is_flat() -> None:
    for name in L.__all__:
        assert hasattr(L, name), name
    assert len(set(L.__all__)) == len(L.__all__)


def test_losses_import_only_torch() -> None:
    import ast
    from pathlib import Path

    folder = Path(L.__file__).parent
    allowed = {"torch", "math", "typing", "logging", "collections", "itertools", "__future__"}
    for path in folder.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                roots = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                module = node.module or ""
                if module == "WeakSegLib.losses" or module.startswith("WeakSegLib.losses."):
                    continue  # the subpackage's own modules
                roots = {module.split(".")[0]}
            else:
                continue
            assert roots <= allowed, (path.name, roots)


@pytest.mark.parametrize("name", ["size_penalty", "partial_dice", "dice_ce", "centroid", "class_ratio"])
def test_half_precision_large_volume_does_not_overflow(name: str) -> None:
    # 64 ** 3 voxels, ~87000 per class: more than float16 can count (max 65504)
    logits = torch.zeros(1, 3, 64, 64, 64, dtype=torch.float16, requires_grad=True)
    value = CASES[name](logits)
    (grad,) = torch.autograd.grad(value, logits)
    assert value.dtype == torch.float32 and grad.dtype == torch.float16
    assert torch.isfinite(value) and torch.isfinite(grad).all()
