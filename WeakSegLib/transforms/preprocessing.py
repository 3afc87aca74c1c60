"""Intensity normalisation and resampling between the image grid and the network grid.

* MR (and anything not CT): z-score per image and channel, statistics over the voxels between the
  0.5th and 99.5th percentile (robust to bright artefacts), as nnU-Net does for MR.
* CT: clip to the dataset's 0.5-99.5th percentile window, then z-score with dataset statistics.

Resampling to the target spacing is done with ``torch.nn.functional.interpolate`` on the whole
extent (``align_corners=False``), so going back to the original grid is the inverse scaling of the
same extent: a prediction returns on exactly the input volume's voxel grid.  In 2D plans the slice
axis is never resampled.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from WeakSegLib.data.volume import Volume


@dataclass
class Preprocessing:
    modality: str = "MR"
    dims: int = 3
    target_spacing_zyx: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    ct_window: list[float] | None = None          # (low, high) HU, CT only
    ct_mean: float = 0.0
    ct_std: float = 1.0
    channel_names: list[str] | None = None

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Preprocessing:
        return cls(**data)

    # ------------------------------------------------------------------ intensities
    def normalise(self, channels: np.ndarray) -> np.ndarray:
        """(C, z, y, x) array -> float32 normalised copy."""
        out = np.empty(channels.shape, np.float32)
        for c, arr in enumerate(channels.astype(np.float32)):
            if self.modality.upper() == "CT" and self.ct_window is not None:
                arr = np.clip(arr, self.ct_window[0], self.ct_window[1])
                out[c] = (arr - self.ct_mean) / max(self.ct_std, 1e-6)
            else:
                lo, hi = np.percentile(arr, [0.5, 99.5])
                inside = arr[(arr >= lo) & (arr <= hi)]
                inside = inside if inside.size else arr.ravel()
                std = float(inside.std())
                out[c] = (np.clip(arr, lo, hi) - float(inside.mean())) / (std if std > 1e-6 else 1.0)
        return out

    def fit_ct(self, volumes: list[Volume]) -> None:
        """Dataset CT window (0.5-99.5th percentiles) and statistics, from a subsample of voxels."""
        rng = np.random.default_rng(0)
        samples = []
        for v in volumes:
            flat = v.channels_first().reshape(v.num_channels, -1)[0]
            samples.append(rng.choice(flat, size=min(flat.size, 200_000), replace=False))
        allv = np.concatenate(samples)
        lo, hi = np.percentile(allv, [0.5, 99.5])
        clipped = np.clip(allv, lo, hi)
        self.ct_window = [float(lo), float(hi)]
        self.ct_mean = float(clipped.mean())
        self.ct_std = float(clipped.std())

    # ------------------------------------------------------------------ grids
    def network_shape(self, shape_zyx: tuple[int, int, int], spacing_zyx: tuple[float, float, float]
                      ) -> tuple[int, int, int]:
        out = []
        for axis, (n, s, t) in enumerate(zip(shape_zyx, spacing_zyx, self.target_spacing_zyx)):
            if self.dims == 2 and axis == 0:
                out.append(int(n))
            else:
                out.append(max(1, int(round(n * s / t))))
        return tuple(out)

    def to_network(self, volume: Volume) -> torch.Tensor:
        """Volume -> normalised (C, z, y, x) float tensor on the network grid."""
        arr = torch.from_numpy(self.normalise(volume.channels_first()))
        return resize(arr, self.network_shape(volume.shape, volume.geometry.spacing_zyx), "trilinear")

    def labels_to_network(self, labels: np.ndarray, shape_zyx, spacing_zyx) -> torch.Tensor:
        t = torch.from_numpy(labels.astype(np.int64))
        return resize(t[None], self.network_shape(shape_zyx, spacing_zyx), "nearest")[0].long()

    def strokes_to_network(self, labels: np.ndarray, shape_zyx, spacing_zyx) -> torch.Tensor:
        """Sparse labels (UNKNOWN = -1 where nothing was drawn) on the network grid, strokes kept whole.

        A network voxel takes class c when any image voxel it covers is c and none is another class
        (UNKNOWN where two classes meet). Nearest-neighbour resampling to a coarser grid breaks a thin
        stroke into dots; this keeps it connected. Dense masks should use :meth:`labels_to_network`.
        """
        shape = tuple(int(s) for s in self.network_shape(shape_zyx, spacing_zyx))
        t = torch.from_numpy(labels.astype(np.int64))
        classes = [int(c) for c in torch.unique(t) if int(c) >= 0]
        out = torch.full(shape, -1, dtype=torch.long)
        if not classes:
            return out
        onehot = torch.stack([(t == c) for c in classes]).float()[None]
        covered = F.interpolate(onehot, size=shape, mode="area")[0] > 0
        single = covered.sum(0) == 1
        which = torch.tensor(classes)[covered.float().argmax(0)]
        out[single] = which[single]
        return out


def resize(tensor: torch.Tensor, shape_zyx, mode: str) -> torch.Tensor:
    """Resize a (C, z, y, x) tensor to ``shape_zyx`` (no-op when equal). ``mode``: trilinear | nearest."""
    shape_zyx = tuple(int(s) for s in shape_zyx)
    if tuple(tensor.shape[1:]) == shape_zyx:
        return tensor
    dtype = tensor.dtype
    x = tensor[None].float()
    if mode == "nearest":
        out = F.interpolate(x, size=shape_zyx, mode="nearest-exact")
        return out[0].to(dtype)
    return F.interpolate(x, size=shape_zyx, mode="trilinear", align_corners=False)[0].to(dtype)
