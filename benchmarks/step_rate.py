"""The training step that the throughput benchmarks time: planned DynUNet, float32 Dice + CE, AdamW.

Shared by ``cpu_throughput.py`` and ``gpu_check.py``; FLOPs per step come from ``torch.utils.flop_counter``.
"""

from __future__ import annotations

import time


def step_rate(plan, device: str = "cpu", bf16: bool = True, steps: int = 20, warmup: int = 3) -> dict:
    """Iterations/s, GFLOP per step and GFLOP/s of one training step of ``plan``'s network on ``device``,
    bf16 autocast as WeakSeg's precision policy allows it; peak GPU memory on CUDA."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from WeakSegLib.networks.planning import build_network
    from WeakSegLib.networks.precision import autocast_forward, use_bf16

    torch.manual_seed(0)
    dev = torch.device(device)
    net = build_network(plan).to(dev)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    x = torch.randn(plan.batch_size, plan.in_channels, *plan.patch_size, device=dev)
    y = torch.randint(0, plan.num_classes, (plan.batch_size, *plan.patch_size), device=dev)
    dims = tuple(range(2, 2 + len(plan.patch_size)))

    def step() -> None:
        logits = autocast_forward(net, x, dev, bf16)
        probs = logits.softmax(1)
        onehot = F.one_hot(y, plan.num_classes).movedim(-1, 1).float()
        inter = (probs * onehot).sum((0, *dims))
        dice = 1 - (2 * inter + 1e-5) / (probs.sum((0, *dims)) + onehot.sum((0, *dims)) + 1e-5)
        loss = F.cross_entropy(logits, y) + dice.mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    for _ in range(warmup):
        step()
    sync()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    its = steps / (time.perf_counter() - t0)
    result = {"device": str(dev), "bf16": use_bf16(dev, bf16), "patch": list(plan.patch_size),
              "batch": plan.batch_size, "filters": list(plan.filters), "iterations_per_s": round(its, 3),
              "gflop_per_step": round(flops / 1e9, 2), "gflop_per_s": round(its * flops / 1e9, 1)}
    if dev.type == "cuda":
        result["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(dev) / 2**30, 2)
    return result
