"""Data-parallel training with ``torchrun`` (PyTorch DDP), detected from the environment.

* ``torchrun --nproc-per-node N -m WeakSegLib train ...`` sets ``WORLD_SIZE``/``RANK``/``LOCAL_RANK``;
  WeakSeg then initialises the process group itself: NCCL on CUDA (one GPU per local rank), gloo on
  the CPU, with a timeout so a dead rank fails the job instead of hanging it.
* Cases are sharded by rank (round-robin over cases, never splitting a volume), so a volume-level
  constraint is always computed on a whole volume by the rank that holds it.
* Normalisation: the network uses instance norm, which is per sample, so there is no batch-norm
  statistic to synchronise; results do not depend on how the batch is split across ranks.
* Only rank 0 writes checkpoints, the model, logs and the progress stream.
Without ``WORLD_SIZE`` > 1 everything is a no-op and the single-process path is unchanged.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 600


@dataclass
class DistributedContext:
    enabled: bool = False
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None

    @classmethod
    def from_environment(cls, device: str = "auto") -> DistributedContext:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank = int(os.environ["RANK"])
        local = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = torch.cuda.is_available() and os.environ.get("WEAKSEG_DDP_DEVICE", device) != "cpu"
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(local)
            dev = torch.device("cuda", local)
        else:
            dev = torch.device("cpu")
        if not dist.is_initialized():
            timeout = datetime.timedelta(seconds=int(os.environ.get("WEAKSEG_DDP_TIMEOUT", DEFAULT_TIMEOUT_S)))
            dist.init_process_group(backend=backend, timeout=timeout)
        logger.info("DDP: rank %d/%d (local %d), backend %s", rank, world, local, backend)
        return cls(True, rank, world, local, dev)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, items: list) -> list:
        """This rank's share of the cases (round-robin; every rank gets at least one)."""
        if not self.enabled:
            return list(items)
        if len(items) < self.world_size:
            raise ValueError(f"{len(items)} case(s) cannot be sharded over {self.world_size} processes: use at "
                             f"most {len(items)} processes (--nproc-per-node) or add cases.")
        return [c for i, c in enumerate(items) if i % self.world_size == self.rank]

    def wrap(self, network: torch.nn.Module) -> torch.nn.Module:
        if not self.enabled:
            return network
        # Broadcast rank 0's initial weights so every rank starts identical.
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.local_rank] if self.device is not None and self.device.type == "cuda" else None
        return DistributedDataParallel(network, device_ids=ids)

    @staticmethod
    def unwrap(network: torch.nn.Module) -> torch.nn.Module:
        return network.module if hasattr(network, "module") else network

    def any(self, flag: bool) -> bool:
        if not self.enabled:
            return bool(flag)
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def all_finite(self, value: torch.Tensor) -> bool:
        finite = bool(torch.isfinite(value.detach()).all())
        return not self.any(not finite)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def shutdown(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
