"""Planning from the data, the nnU-Net way (simplified).

* 2D when the slice spacing (array axis 0) exceeds the in-plane spacing by ``anisotropy_threshold``
  (ACDC: 5-10 mm slices vs 1.5 mm pixels), else 3D.
* Target spacing: the median spacing of the cases, per axis.
* Patch size: the median image size on the target grid, capped by a voxel budget that depends on the
  device (larger on CUDA), rounded to a multiple of the network's total downsampling.
* Depth and strides: an axis is downsampled while its feature map stays >= 4 voxels and its spacing
  is not much coarser than the finest axis (anisotropic axes are pooled later, kernels of 1 there).
* Filters double per level from a base (16 on CPU, 32 on CUDA), capped at 320.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass

import numpy as np

from WeakSegLib.config import TrainConfig
from WeakSegLib.data.dataset import Dataset

logger = logging.getLogger(__name__)

_MAX_LEVELS = 6
_MIN_FEATURE = 4


@dataclass
class Plan:
    """What planning decided from the data (saved with the model)."""

    dims: int
    patch_size: list[int]                 # 2D: (y, x); 3D: (z, y, x), network grid voxels
    batch_size: int
    target_spacing_zyx: list[float]       # network grid spacing; in 2D the z entry is unused
    filters: list[int]
    strides: list[list[int]]
    kernels: list[list[int]]
    in_channels: int
    num_classes: int

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Plan:
        return cls(**data)


def _topology(patch: list[int], spacing: list[float]) -> tuple[list[list[int]], list[list[int]]]:
    """Strides and kernels per level for a patch with the given spacing (nnU-Net-like)."""
    size = list(patch)
    sp = list(spacing)
    strides = [[1] * len(patch)]
    kernels = [[3 if s <= 2 * min(sp) else 1 for s in sp]]
    for _ in range(_MAX_LEVELS - 1):
        st = []
        for i in range(len(size)):
            ok = size[i] // 2 >= _MIN_FEATURE and sp[i] <= 2 * min(sp)
            st.append(2 if ok else 1)
        if all(s == 1 for s in st):
            break
        size = [n // s for n, s in zip(size, st)]
        sp = [a * s for a, s in zip(sp, st)]
        strides.append(st)
        kernels.append([3 if s <= 2 * min(sp) else 1 for s in sp])
    return strides, kernels


def _round_to(n: float, multiple: int) -> int:
    return max(multiple, int(math.floor(n / multiple)) * multiple)


def plan_training(dataset: Dataset, config: TrainConfig, device_type: str = "cpu") -> Plan:
    if not dataset.cases:
        raise ValueError("Cannot plan training on an empty dataset: add cases with annotations.")
    spacings = np.array([c.image.geometry.spacing_zyx for c in dataset.cases])
    shapes = np.array([c.image.shape for c in dataset.cases])
    median_spacing = np.median(spacings, axis=0)
    if config.target_spacing is not None:
        target = [float(config.target_spacing[2]), float(config.target_spacing[1]), float(config.target_spacing[0])]
    else:
        target = [float(s) for s in median_spacing]
    in_plane = min(target[1], target[2])
    dims = config.dims or (2 if target[0] / in_plane >= config.anisotropy_threshold else 3)
    # Median shape on the target grid.
    net_shapes = np.array([[n * s / t for n, s, t in zip(sh, sp, target)] for sh, sp in zip(shapes, spacings)])
    median_shape = np.median(net_shapes, axis=0)
    gpu = device_type == "cuda"
    if dims == 2:
        cap = 384 if gpu else 160
        patch = [min(int(median_shape[1]), cap), min(int(median_shape[2]), cap)]
        spacing_for_topology = target[1:]
        batch = 32 if gpu else 8
    else:
        budget = (160 * 160 * 128) if gpu else (48 * 96 * 96)
        patch = [float(x) for x in median_shape]
        while np.prod(patch) > budget:
            # Shrink the axis with the largest physical extent first (keeps the field of view balanced).
            extents = [p * t for p, t in zip(patch, target)]
            i = int(np.argmax(extents))
            patch[i] *= 0.9
        patch = [int(p) for p in patch]
        spacing_for_topology = target
        batch = 2
    whole_volume = False
    if config.patch_size is None and _global_only(dataset, config):
        # Tags and sizes only: the network learns from whole-volume batches alone. Instance normalisation
        # then takes its statistics over whole volumes, so the prediction window must hold whole volumes
        # too (a smaller window gives other statistics and an empty prediction). One window per volume
        # when that costs at most 4x the planned patch.
        whole = [int(math.ceil(x)) for x in net_shapes.max(axis=0)[3 - dims:]]
        if np.prod(whole) <= 4 * np.prod(patch):
            patch, batch, whole_volume = whole, 1, True
            logger.info("Tags and sizes only: one prediction window per volume (%s).", whole)
    if config.patch_size is not None:
        if len(config.patch_size) != dims:
            raise ValueError(f"patch_size must have {dims} entries for a {dims}D plan, got {config.patch_size}.")
        patch = [int(p) for p in config.patch_size]
    strides, kernels = _topology(patch, spacing_for_topology)
    total = np.prod(np.array(strides), axis=0)
    if whole_volume:
        patch = [int(math.ceil(p / t) * t) for p, t in zip(patch, total)]       # rounded up: holds every volume
    else:
        patch = [_round_to(p, int(t)) for p, t in zip(patch, total)]
    base = config.base_filters or (32 if gpu else 16)
    filters = [min(base * 2**i, 320) for i in range(len(strides))]
    if config.batch_size is not None:
        batch = int(config.batch_size)
    plan = Plan(dims=dims, patch_size=patch, batch_size=batch, target_spacing_zyx=target, filters=filters,
                strides=strides, kernels=kernels, in_channels=dataset.cases[0].image.num_channels,
                num_classes=dataset.num_classes)
    logger.info("Plan: %dD, patch %s, batch %d, spacing (z,y,x) %s, filters %s", dims, patch, batch,
                [round(t, 3) for t in target], filters)
    return plan


def _global_only(dataset: Dataset, config: TrainConfig) -> bool:
    """Every annotated case carries only global annotations (tags, sizes, centroid ranges): no voxel label, no box."""
    if config.objective != "auto":
        return False
    annotated = [c.annotation for c in dataset.cases if c.annotation is not None]
    if not annotated:
        return False
    return all(a.num_annotated_voxels() == 0 and not a.boxes and not a.complete_classes for a in annotated)


def build_network(plan: Plan):
    """MONAI DynUNet (nnU-Net's architecture) from a plan."""
    from monai.networks.nets import DynUNet

    return DynUNet(
        spatial_dims=plan.dims,
        in_channels=plan.in_channels,
        out_channels=plan.num_classes,
        kernel_size=plan.kernels,
        strides=plan.strides,
        upsample_kernel_size=plan.strides[1:],
        filters=plan.filters,
        norm_name=("INSTANCE", {"affine": True}),
        deep_supervision=False,
        res_block=False,
    )
