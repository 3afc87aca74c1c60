"""A trained model: a folder with ``model.json`` (config, plan, preprocessing, classes, training
summary) and ``weights.pt`` (a plain state dict, written atomically, loaded with
``torch.load(weights_only=True)`` so a model file can never execute code).

Inference: sliding-window (MONAI) over the network grid, optional flip test-time augmentation,
ensembling of several models (probabilities averaged), per-class probabilities, optional
largest-connected-component post-processing, output on the input volume's exact voxel grid.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .dataset import ClassInfo
from .training.config import Plan, TrainConfig
from .training.planning import build_network
from .training.preprocessing import Preprocessing, resize
from .utils import atomic_write_json, resolve_device
from .volume import Volume

logger = logging.getLogger(__name__)

MODEL_JSON = "model.json"
WEIGHTS = "weights.pt"
FORMAT_VERSION = 1


@dataclass
class Prediction:
    labels: Volume                       # int16 label map on the input grid
    probabilities: Volume | None = None  # (z, y, x, C) float32 on the input grid


def save_state_dict_atomic(state: dict, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


class Model:
    """Network + plan + preprocessing + classes. ``Model.load(path).predict(volume)``."""

    def __init__(self, network: torch.nn.Module, plan: Plan, preprocessing: Preprocessing,
                 classes: list[ClassInfo], config: TrainConfig | None = None, summary: dict | None = None):
        self.network = network
        self.plan = plan
        self.preprocessing = preprocessing
        self.classes = classes
        self.config = config
        self.summary = summary or {}

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    # ------------------------------------------------------------------ persistence
    def metadata(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "classes": [c.to_dict() for c in self.classes],
            "plan": self.plan.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "config": None if self.config is None else self.config.to_dict(),
            "summary": self.summary,
        }

    def save(self, folder: str | os.PathLike) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.network.state_dict().items()}
        save_state_dict_atomic(state, folder / WEIGHTS)
        atomic_write_json(folder / MODEL_JSON, self.metadata())
        return folder

    @classmethod
    def load(cls, folder: str | os.PathLike, device: str = "cpu") -> Model:
        folder = Path(folder)
        meta_path = folder / MODEL_JSON
        if not meta_path.exists():
            raise FileNotFoundError(f"'{folder}' is not a WeakSeg model folder (no {MODEL_JSON}). Train one with "
                                    f"'weakseg train' or point to the folder it wrote.")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as exc:
            raise ValueError(f"'{meta_path}' is corrupted (invalid JSON: {exc}).") from None
        if meta.get("format_version", 0) > FORMAT_VERSION:
            raise ValueError(f"Model '{folder}' was written by a newer WeakSeg (format {meta['format_version']}); "
                             f"upgrade WeakSegLib.")
        plan = Plan.from_dict(meta["plan"])
        network = build_network(plan)
        try:
            state = torch.load(folder / WEIGHTS, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise FileNotFoundError(f"Model '{folder}' has no {WEIGHTS}.") from None
        except Exception as exc:  # noqa: BLE001 - any unpickling error means a bad file
            raise ValueError(f"Could not load weights from '{folder / WEIGHTS}': {exc}") from None
        network.load_state_dict(state)
        network.to(resolve_device(device)).eval()
        classes = [ClassInfo(c["id"], c["name"], tuple(c["color"])) for c in meta["classes"]]
        config = TrainConfig.from_dict(meta["config"]) if meta.get("config") else None
        return cls(network, plan, Preprocessing.from_dict(meta["preprocessing"]), classes, config,
                   meta.get("summary", {}))

    # ------------------------------------------------------------------ inference
    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def to(self, device: str | torch.device) -> Model:
        self.network.to(resolve_device(device) if isinstance(device, str) else device)
        return self

    @torch.no_grad()
    def network_probabilities(self, image: torch.Tensor, tta: bool = False, sw_batch_size: int = 4,
                              overlap: float = 0.25) -> torch.Tensor:
        """(C_in, z, y, x) on the network grid -> softmax probabilities (K, z, y, x)."""
        from monai.inferers import sliding_window_inference

        device = self.device
        self.network.eval()
        use_bf16 = device.type == "cuda" and (self.config is None or self.config.bf16)

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
                if self.plan.dims == 2:
                    slices = x.permute(1, 0, 2, 3)  # (z, C, y, x)
                    out = sliding_window_inference(slices, self.plan.patch_size, max(sw_batch_size, 8),
                                                   self.network, overlap=overlap, mode="gaussian")
                    return torch.softmax(out.float(), 1).permute(1, 0, 2, 3)
                out = sliding_window_inference(x[None], self.plan.patch_size, sw_batch_size, self.network,
                                               overlap=overlap, mode="gaussian")
                return torch.softmax(out.float(), 1)[0]

        x = image.to(device)
        probs = run(x)
        if tta:
            axes = [2, 3] if self.plan.dims == 2 else [1, 2, 3]
            flips = [[a] for a in axes] + ([axes[-2:]] if len(axes) >= 2 else [])
            for f in flips:
                probs += torch.flip(run(torch.flip(x, f)), f)
            probs /= 1 + len(flips)
        return probs

    def predict(self, volume: Volume, tta: bool = False, return_probabilities: bool = False,
                largest_component: bool = False) -> Prediction:
        return predict_ensemble([self], volume, tta, return_probabilities, largest_component)


def _check_compatible(models: Sequence[Model], volume: Volume) -> None:
    first = models[0]
    for m in models[1:]:
        if m.class_names != first.class_names:
            raise ValueError(f"Models to ensemble must share classes: {first.class_names} vs {m.class_names}.")
    if volume.num_channels != first.plan.in_channels:
        raise ValueError(f"The model expects {first.plan.in_channels} channel(s) "
                         f"({first.preprocessing.channel_names}), the image has {volume.num_channels}.")


def predict_ensemble(models: Sequence[Model], volume: Volume, tta: bool = False,
                     return_probabilities: bool = False, largest_component: bool = False) -> Prediction:
    """Average the probabilities of several models (each with its own preprocessing) on ``volume``."""
    if not models:
        raise ValueError("predict_ensemble needs at least one model.")
    _check_compatible(models, volume)
    volume.check_finite()
    total = None
    for model in models:
        image = model.preprocessing.to_network(volume)
        probs = model.network_probabilities(image, tta=tta).cpu()
        probs = resize(probs, volume.shape, "trilinear")  # back onto the input grid
        total = probs if total is None else total + probs
    probs = total / len(models)
    labels = probs.argmax(0).numpy().astype(np.int16)
    if largest_component:
        labels = keep_largest_component(labels)
    prob_vol = None
    if return_probabilities:
        prob_vol = Volume(np.ascontiguousarray(probs.permute(1, 2, 3, 0).numpy().astype(np.float32)),
                          volume.geometry, models[0].class_names)
    return Prediction(Volume(labels, volume.geometry), prob_vol)


def keep_largest_component(labels: np.ndarray) -> np.ndarray:
    """Per foreground class, keep only the largest 3D connected component (others -> background)."""
    from scipy import ndimage

    out = labels.copy()
    for c in np.unique(labels):
        if c == 0:
            continue
        comp, n = ndimage.label(labels == c)
        if n > 1:
            sizes = ndimage.sum_labels(np.ones_like(comp), comp, index=np.arange(1, n + 1))
            keep = int(np.argmax(sizes)) + 1
            out[(comp != keep) & (comp > 0)] = 0
    return out
