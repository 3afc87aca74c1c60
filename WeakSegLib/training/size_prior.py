"""The network's starting class shares from size ranges (``TrainConfig.size_prior_init``).

From the usual initialisation every class gets about ``1 / K`` of the volume: for a heart structure
tens of times its size range, the state from which the size term drives every structure towards zero
and the few annotated voxels must pull it back (ACDC clicks + sizes: near-zero Dice for the first few
hundred iterations; docs/benchmarks.md, clicks). Setting the output layer's bias so that the untrained
network predicts each class's expected share is the prior-probability initialisation of Lin et al.
(ICCV 2017), with the priors taken from the size ranges.
"""

from __future__ import annotations

import torch

from WeakSegLib.networks.planning import Plan
from WeakSegLib.training.data import PreparedCase


def expected_shares(cases: list[PreparedCase], num_classes: int) -> torch.Tensor | None:
    """(K,) float64 shares of the volume, or None when no case has a size range.

    A class with ranges gets the mean over those cases of its range's midpoint over the volume; the
    classes without one, background included, share the rest equally (at most 90 % goes to the ranged
    classes, at least 1e-4 to every class).
    """
    by_class: dict[int, list[float]] = {}
    for case in cases:
        volume_ml = case.voxel_ml * case.image[0].numel()
        for c, (lo, hi) in case.size_bounds.items():
            if 0 < c < num_classes:
                by_class.setdefault(c, []).append(0.5 * (lo + hi) / volume_ml)
    if not by_class:
        return None
    prior = torch.zeros(num_classes, dtype=torch.float64)
    for c, values in by_class.items():
        prior[c] = sum(values) / len(values)
    known = prior.sum().clamp(max=0.9)
    prior = prior * (known / prior.sum().clamp(min=1e-12))
    rest = [c for c in range(num_classes) if c not in by_class]
    prior[rest] = (1.0 - known) / len(rest)
    prior = prior.clamp(min=1e-4)
    return prior / prior.sum()


def calibration_input(case: PreparedCase, plan: Plan, device: torch.device) -> torch.Tensor:
    """A prepared case as one network input: 2D its slices (16 evenly spaced at most), 3D its centre
    (at most one patch), so that the calibration's memory stays that of a training step or so."""
    image = case.image.to(device)
    if plan.dims == 2:
        z = torch.linspace(0, image.shape[1] - 1, min(image.shape[1], 16)).round().long().unique()
        return image[:, z.to(image.device)].permute(1, 0, 2, 3)
    window = []
    for n, p in zip(image.shape[1:], plan.patch_size):
        size = min(n, p)
        window.append(slice((n - size) // 2, (n - size) // 2 + size))
    return image[(slice(None), *window)][None]


def calibrate_output_bias(network: torch.nn.Module, shares: torch.Tensor, image: torch.Tensor,
                          rounds: int = 3) -> torch.Tensor:
    """Set the output layer's bias so that the mean softmax over ``image`` is ``shares`` (K,).

    The bias starts at ``log(shares)`` and is corrected ``rounds`` times by the log-ratio of wanted to
    measured mean probabilities (the random weights' spread inflates the small classes otherwise).
    ``image``: (B, C, *spatial) network input; it is padded to a multiple of the network's total stride
    and the padding is left out of the mean. Returns the measured shares.
    """
    out = network.output_block.conv.conv
    strides = torch.tensor([list(s) for s in network.strides]).prod(0).tolist()
    spatial = image.shape[2:]
    pad = []
    for n, s in zip(reversed(spatial), reversed(strides)):
        pad += [0, (-n) % s]
    x = torch.nn.functional.pad(image, pad)
    crop = (slice(None), slice(None), *(slice(0, n) for n in spatial))
    target = torch.log(shares.to(out.bias)).float()

    def mean_softmax() -> torch.Tensor:
        return torch.softmax(network(x).float()[crop], 1).transpose(0, 1).flatten(1).mean(1)

    with torch.no_grad():
        out.bias.copy_(target)
        for _ in range(rounds):
            out.bias.add_(target - torch.log(mean_softmax().clamp(min=1e-8)))
        return mean_softmax()


def init_from_size_ranges(network: torch.nn.Module, cases: list[PreparedCase], plan: Plan,
                          device: torch.device) -> torch.Tensor | None:
    """Calibrate ``network``'s output bias to the cases' expected shares; returns them, or None (no ranges)."""
    shares = expected_shares(cases, plan.num_classes)
    if shares is not None:
        case = next(c for c in cases if c.size_bounds)
        calibrate_output_bias(network, shares, calibration_input(case, plan, device))
    return shares
