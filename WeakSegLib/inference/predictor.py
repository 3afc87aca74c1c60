"""The one predictor: a network's logits and probabilities on whole images of its grid.

Sliding window (MONAI's ``sliding_window_inference``, Gaussian blending, 25% overlap by
default): 3D plans slide a 3D window over the volume; 2D plans run the slices of the volume as
a batch and slide a 2D window over each.  Every window goes through the precision policy
(:func:`~WeakSegLib.networks.precision.autocast_forward`, float32 out), so windows are blended
in float32.  Optional flip test-time augmentation averages the probabilities of the image and
of its flips (each in-plane axis, every axis in 3D, and the last two together).

:func:`predict_ensemble` is the volume-level entry point: each model's own preprocessing onto
its grid, the probabilities of several models averaged on the input's grid, the arg-max label
map and optional largest-component post-processing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from WeakSegLib.data.volume import Volume
from WeakSegLib.inference.calibration import apply_class_offsets
from WeakSegLib.inference.postprocessing import component_rule, keep_largest_component
from WeakSegLib.networks.precision import autocast_forward
from WeakSegLib.transforms.preprocessing import resize

if TYPE_CHECKING:
    from WeakSegLib.model import Model
    from WeakSegLib.networks.planning import Plan

__all__ = ["Prediction", "Predictor", "predict_ensemble"]


@dataclass
class Prediction:
    labels: Volume                       # int16 label map on the input grid
    probabilities: Volume | None = None  # (z, y, x, C) float32 on the input grid


@contextlib.contextmanager
def _eval_mode(network: torch.nn.Module) -> Iterator[None]:
    """The network in eval mode for the duration, then back in the mode it was in."""
    was_training = network.training
    network.eval()
    try:
        yield
    finally:
        network.train(was_training)


@dataclass
class Predictor:
    """Sliding-window inference of ``network`` (planned by ``plan``) on (C, z, y, x) images of its grid.

    ``device`` defaults to the device of the network's parameters; ``bf16`` is the precision
    request passed to the policy.  The network runs in eval mode and gets its mode back after.
    """

    network: torch.nn.Module
    plan: Plan
    device: torch.device | str | None = None
    bf16: bool | None = None
    sw_batch_size: int = 4      # windows per forward in 3D; 2D plans run at least 8 slices
    overlap: float = 0.25

    def __post_init__(self) -> None:
        if self.device is None:
            self.device = next(self.network.parameters()).device
        self.device = torch.device(self.device)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return autocast_forward(self.network, x, self.device, self.bf16)

    def _sliding_window(self, x: torch.Tensor) -> torch.Tensor:
        """Raw output of ``x`` (C, z, y, x): (z, K, y, x) slices in 2D plans, (1, K, z, y, x) in 3D."""
        from monai.inferers import sliding_window_inference

        if self.plan.dims == 2:
            return sliding_window_inference(x.permute(1, 0, 2, 3), self.plan.patch_size, max(self.sw_batch_size, 8),
                                            self._forward, overlap=self.overlap, mode="gaussian")
        return sliding_window_inference(x[None], self.plan.patch_size, self.sw_batch_size, self._forward,
                                        overlap=self.overlap, mode="gaussian")

    def _probabilities(self, x: torch.Tensor) -> torch.Tensor:
        out = self._sliding_window(x)
        if self.plan.dims == 2:
            return torch.softmax(out.float(), 1).permute(1, 0, 2, 3)
        return torch.softmax(out.float(), 1)[0]

    @torch.no_grad()
    def logits(self, image: torch.Tensor) -> torch.Tensor:
        """Logits (K, z, y, x) float32 of a (C, z, y, x) image on the network grid."""
        x = image.to(self.device)
        with _eval_mode(self.network):
            out = self._sliding_window(x)
        out = out.permute(1, 0, 2, 3) if self.plan.dims == 2 else out[0]
        return out.float()

    @torch.no_grad()
    def probabilities(self, image: torch.Tensor, tta: bool = False) -> torch.Tensor:
        """Softmax probabilities (K, z, y, x) of a (C, z, y, x) image; ``tta``: averaged over flips."""
        x = image.to(self.device)
        with _eval_mode(self.network):
            probs = self._probabilities(x)
            if tta:
                axes = [2, 3] if self.plan.dims == 2 else [1, 2, 3]
                flips = [[a] for a in axes] + ([axes[-2:]] if len(axes) >= 2 else [])
                for f in flips:
                    probs += torch.flip(self._probabilities(torch.flip(x, f)), f)
                probs /= 1 + len(flips)
        return probs


def _check_compatible(models: Sequence[Model], volume: Volume) -> None:
    first = models[0]
    for m in models[1:]:
        if m.class_names != first.class_names:
            raise ValueError(f"Models to ensemble must share classes: {first.class_names} vs {m.class_names}.")
    if volume.num_channels != first.plan.in_channels:
        raise ValueError(f"The model expects {first.plan.in_channels} channel(s) "
                         f"({first.preprocessing.channel_names}), the image has {volume.num_channels}.")


def predict_ensemble(models: Sequence[Model], volume: Volume, tta: bool = False,
                     return_probabilities: bool = False, largest_component: bool | str = False) -> Prediction:
    """Average the probabilities of several models (each with its own preprocessing) on ``volume``.

    Returns the int16 (z, y, x) label map on ``volume``'s grid and, with ``return_probabilities``,
    the (z, y, x, K) float32 probabilities.  A calibrated model's class offsets
    (:mod:`~WeakSegLib.inference.calibration`) are applied to its probabilities before averaging.
    ``largest_component``: False, True / "class" or "object" (:func:`keep_largest_component`).
    """
    component_rule(largest_component)
    if not models:
        raise ValueError("predict_ensemble needs at least one model.")
    _check_compatible(models, volume)
    volume.check_finite()
    total = None
    for model in models:
        image = model.preprocessing.to_network(volume)
        probs = model.network_probabilities(image, tta=tta).cpu()
        probs = resize(probs, volume.shape, "trilinear")  # back onto the input grid
        if model.class_offsets:
            probs = apply_class_offsets(probs, model.class_offsets, axis=0)
        total = probs if total is None else total + probs
    probs = total / len(models)
    labels = probs.argmax(0).numpy().astype(np.int16)
    if largest_component:
        labels = keep_largest_component(labels, largest_component)
    prob_vol = None
    if return_probabilities:
        prob_vol = Volume(np.ascontiguousarray(probs.permute(1, 2, 3, 0).numpy().astype(np.float32)),
                          volume.geometry, models[0].class_names)
    return Prediction(Volume(labels, volume.geometry), prob_vol)
