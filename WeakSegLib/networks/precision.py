"""The mixed-precision policy of every network forward pass (training, learning modes, inference).

One rule, :func:`use_bf16`, decides whether a forward pass runs under bfloat16 autocast;
:func:`autocast` and :func:`autocast_forward` apply it.  Every forward in WeakSeg goes through
these, so changing the policy means editing :func:`use_bf16` alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from WeakSegLib.utils import cpu_supports_bf16

__all__ = ["use_bf16", "autocast", "autocast_forward"]


def use_bf16(device: torch.device | str, requested: bool | None) -> bool:
    """Whether a forward pass on ``device`` runs under bfloat16 autocast.

    ``requested`` is ``TrainConfig.bf16``: ``None`` (the default) or ``True`` = on CUDA GPUs that support
    bfloat16 and on CPUs that compute it natively (AVX512-BF16 or AMX: 1.7x the float32 training rate on
    ACDC at the same Dice, docs/benchmarks.md); ``False`` = never.  CPUs that would emulate bf16, and
    MPS, stay float32.  Losses are always computed in float32 (:func:`autocast_forward` returns float32).
    """
    if requested is False:
        return False
    kind = torch.device(device).type
    if kind == "cuda":
        return not torch.cuda.is_available() or torch.cuda.is_bf16_supported()
    if kind == "cpu":
        return cpu_supports_bf16()
    return False


@contextlib.contextmanager
def autocast(device: torch.device | str, requested: bool | None) -> Iterator[None]:
    """``torch.autocast`` to bfloat16 on ``device`` when :func:`use_bf16` allows it, else a no-op."""
    device = torch.device(device)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16(device, requested)):
        yield


def autocast_forward(network: torch.nn.Module, x: torch.Tensor, device: torch.device | str,
                     bf16: bool | None) -> torch.Tensor:
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
