"""Random data augmentation of training batches, drawn from one seeded generator.

Spatial (patch batches only): a flip of each spatial axis (p = 0.5 each; in-plane only for 2D
slices), then with p = 0.3 a rotation of up to ±15° in the last two axes and an isotropic
scaling in [0.85, 1.15].  Intensity (every batch): a per-item scale in [0.85, 1.15] and shift in
[-0.1, 0.1], Gaussian noise (p = 0.2, σ up to 0.1) and a gamma in [0.7, 1.5] on the item's
min-max range (p = 0.2).  Labels follow the spatial transforms (nearest neighbour; voxels that
come from outside the image are unknown).  The parameters drawn are returned, so a batch records
how it was augmented.  The order of the draws is part of the contract: a seeded run draws the
same numbers, and a resumed run continues the same stream.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["random_uniform", "random_int", "augment", "affine_warp"]


def random_uniform(generator: torch.Generator) -> float:
    """One draw of U[0, 1) from ``generator``."""
    return float(torch.rand((), generator=generator))


def random_int(generator: torch.Generator, n: int) -> int:
    """One integer drawn uniformly from ``0 .. n - 1`` (0 when ``n <= 1``)."""
    return int(torch.randint(0, max(int(n), 1), (), generator=generator))


def augment(image: torch.Tensor, labels: torch.Tensor | None, pseudo: torch.Tensor | None,
            generator: torch.Generator, spatial: bool) -> tuple[torch.Tensor, torch.Tensor | None,
                                                                torch.Tensor | None, dict]:
    """Augment a batch: spatial transforms (``spatial``) then intensity transforms.

    Args:
        image: (B, C, *spatial) float images.
        labels, pseudo: (B, *spatial) int64 label maps (-1 = unknown); required (``labels``) when
            ``spatial``, else returned unchanged.
        generator: the seeded generator every draw comes from.
        spatial: apply the flips, rotation and scaling (patch batches); False keeps the geometry
            (volume batches, whose boxes and centroids must keep their meaning).

    Returns:
        ``(image, labels, pseudo, params)``: the augmented (contiguous) image, the label maps moved
        with it, and the parameters drawn.
    """
    gen = generator
    x = image
    params: dict = {}
    spatial_dims = list(range(2, x.ndim))
    if spatial:
        # Flips (in-plane only for 2D slices; every axis for 3D patches).
        flip_axes = [d for d in spatial_dims if random_uniform(gen) < 0.5]
        params["flip_axes"] = flip_axes
        if flip_axes:
            x = torch.flip(x, flip_axes)
            labels = torch.flip(labels, [d - 1 for d in flip_axes])
            if pseudo is not None:
                pseudo = torch.flip(pseudo, [d - 1 for d in flip_axes])
        # Small rotation (in the last two axes) and isotropic scaling, p = 0.3.
        if random_uniform(gen) < 0.3:
            angle = (random_uniform(gen) * 2 - 1) * math.radians(15)
            zoom = 0.85 + random_uniform(gen) * 0.3
            params.update(rotation_deg=math.degrees(angle), scale=zoom)
            x, labels, pseudo = affine_warp(x, labels, pseudo, angle, zoom)
    # Intensity: multiplicative scale, additive shift, gamma, Gaussian noise.
    b = x.shape[0]
    scale = 1 + (torch.rand(b, generator=gen) * 2 - 1) * 0.15
    shift = (torch.rand(b, generator=gen) * 2 - 1) * 0.1
    shape = (b,) + (1,) * (x.ndim - 1)
    x = x * scale.view(shape).to(x.device) + shift.view(shape).to(x.device)
    params.update(intensity_scale=scale.tolist(), intensity_shift=shift.tolist())
    if random_uniform(gen) < 0.2:
        sigma = random_uniform(gen) * 0.1
        x = x + torch.randn(x.shape, generator=gen).to(x.device) * sigma
        params["noise_sigma"] = sigma
    if random_uniform(gen) < 0.2:
        gamma = 0.7 + random_uniform(gen) * 0.8
        lo = x.amin(dim=tuple(range(1, x.ndim)), keepdim=True)
        hi = x.amax(dim=tuple(range(1, x.ndim)), keepdim=True)
        rng = (hi - lo).clamp_min(1e-6)
        x = ((x - lo) / rng).pow(gamma) * rng + lo
        params["gamma"] = gamma
    return x.contiguous(), labels, pseudo, params


def affine_warp(x: torch.Tensor, labels: torch.Tensor | None, pseudo: torch.Tensor | None, angle: float,
                zoom: float) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Rotate by ``angle`` (radians) in the last two axes and scale by ``zoom``.

    ``x``: (B, C, y, x) or (B, C, z, y, x), bilinear; ``labels`` / ``pseudo``: (B, *spatial) int64,
    nearest neighbour, with voxels from outside the image set to -1 (unknown).
    """
    b = x.shape[0]
    c, s = math.cos(angle) / zoom, math.sin(angle) / zoom
    if x.ndim == 4:
        theta = torch.tensor([[c, -s, 0.0], [s, c, 0.0]], dtype=x.dtype, device=x.device).expand(b, 2, 3)
    else:
        # affine_grid orders (x, y, z) = (last, ..., first): rotate in the (x, y) plane.
        theta = torch.tensor([[c, -s, 0, 0], [s, c, 0, 0], [0, 0, 1.0 / zoom, 0]], dtype=x.dtype,
                             device=x.device).expand(b, 3, 4)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def warp_labels(lab):
        if lab is None:
            return None
        shifted = (lab + 1).unsqueeze(1).float()   # 0 = unknown, so padding stays unknown
        out = F.grid_sample(shifted, grid, mode="nearest", padding_mode="zeros", align_corners=False)
        return out[:, 0].long() - 1

    return x, warp_labels(labels), warp_labels(pseudo)
