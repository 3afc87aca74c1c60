"""The mixed-precision policy of every network forward pass (training, learning modes, inference).

One rule, :func:`use_bf16`, decides whether a forward pass runs under bfloat16 autocast;
:func:`autocast` and :func:`autocast_forward` apply it.  Every forward in WeakSeg goes through
these, so changing the policy means editing :func:`use_bf16` alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

__all__ = ["use_bf16", "autocast", "autocast_forward"]


def use_bf16(device: torch.device | str, requested: bool) -> bool:
    """Whether a forward pass on ``device`` runs under bfloat16 autocast.

    ``requested`` is the user's wish (``TrainConfig.bf16``); it is honoured on CUDA devices.
    """
    return bool(requested) and torch.device(device).type == "cuda"


@contextlib.contextmanager
def autocast(device: torch.device | str, requested: bool) -> Iterator[None]:
    """``torch.autocast`` to bfloat16 on ``device`` when :func:`use_bf16` allows it, else a no-op."""
    device = torch.device(device)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16(device, requested)):
        yield


def autocast_forward(network: torch.nn.Module, x: torch.Tensor, device: torch.device | str,
                     bf16: bool) -> torch.Tensor:
    """``network(x)`` under the precision policy, returned as float32.

    Args:
        network: any module; ``x`` must already be on ``device``.
        x: (B, C, *spatial) input.
        device: the device the network runs on (decides the autocast device type).
        bf16: whether bfloat16 is requested (see :func:`use_bf16`).

    Returns:
        The network's output (B, K, *spatial) as float32.
    """
    with autocast(device, bf16):
        out = network(x)
    return out.float()
