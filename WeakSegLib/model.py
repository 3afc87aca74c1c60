"""A trained model: a folder with ``model.json`` (config, plan, preprocessing, classes, training
summary) and ``weights.pt`` (a plain state dict, written atomically, loaded with
``torch.load(weights_only=True)`` so a model file can never execute code).

Inference runs through :mod:`WeakSegLib.inference` (sliding window, flip test-time augmentation,
ensembling, largest-component post-processing); ``Model.predict`` is its entry point for one model.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import torch

from WeakSegLib.config import TrainConfig
from WeakSegLib.data.dataset import ClassInfo
from WeakSegLib.data.volume import Volume
from WeakSegLib.inference.postprocessing import keep_largest_component
from WeakSegLib.inference.predictor import Prediction, Predictor, predict_ensemble
from WeakSegLib.jobs.protocol import MODEL_JSON
from WeakSegLib.networks.planning import Plan, build_network
from WeakSegLib.transforms.preprocessing import Preprocessing
from WeakSegLib.utils import atomic_write_json, resolve_device

logger = logging.getLogger(__name__)

WEIGHTS = "weights.pt"
FORMAT_VERSION = 1

# Inference names, re-exported: ``from WeakSegLib.model import predict_ensemble`` and ``WeakSegLib.Prediction``.
__all__ = ["Model", "Prediction", "keep_largest_component", "predict_ensemble", "save_state_dict_atomic"]


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

    def predictor(self, sw_batch_size: int = 4, overlap: float = 0.25) -> Predictor:
        """The sliding-window predictor of this model's network (bf16 as the training config asked)."""
        bf16 = self.config.bf16 if self.config is not None else None
        return Predictor(self.network, self.plan, self.device, bf16, sw_batch_size, overlap)

    def network_probabilities(self, image: torch.Tensor, tta: bool = False, sw_batch_size: int = 4,
                              overlap: float = 0.25) -> torch.Tensor:
        """(C_in, z, y, x) on the network grid -> softmax probabilities (K, z, y, x); leaves the network in eval."""
        self.network.eval()
        return self.predictor(sw_batch_size, overlap).probabilities(image, tta=tta)

    def predict(self, volume: Volume, tta: bool = False, return_probabilities: bool = False,
                largest_component: bool = False) -> Prediction:
        """Labels (and optionally probabilities) of ``volume`` on its own grid (see :func:`predict_ensemble`)."""
        return predict_ensemble([self], volume, tta, return_probabilities, largest_component)
