"""A simulated user who corrects a segmentation stroke by stroke (the protocol of interactive-segmentation benchmarks).

After each result the user paints one corrective stroke in the largest wrong region: the 2D connected
region (on one z slice) of voxels whose label differs from the ground truth, largest first; the stroke
is a disk of ``radius`` pixels around the region's innermost pixel (the farthest from the region's
border, as the click simulators of DeepIGeoS / NoC benchmarks place it), clipped to the region, with
the ground-truth label found there.  The method then recomputes the result from all the strokes so
far.  Reported: mean foreground Dice after 0, 1, ... corrections and the number of corrections to
reach a Dice (NoC@85, NoC@90; more than the budget counts as ``budget + 1``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from WeakSegLib.evaluation.metrics import dice


def corrective_stroke(labels: np.ndarray, truth: np.ndarray, radius: int = 3) -> tuple[np.ndarray, int] | None:
    """``(mask, label)`` of the stroke a user paints in the largest wrong 2D region of ``labels``, or None
    when ``labels`` equals ``truth``.  ``labels``, ``truth``: (z, y, x) class ids."""
    from scipy import ndimage

    wrong = labels != truth
    if not wrong.any():
        return None
    best = (0, None, None)
    for z in np.nonzero(wrong.any(axis=(1, 2)))[0]:
        # one region = one wrong label pair area: split by the true class so a stroke has one label
        for c in np.unique(truth[z][wrong[z]]):
            components, n = ndimage.label(wrong[z] & (truth[z] == c))
            if n == 0:
                continue
            sizes = np.bincount(components.ravel())[1:]
            k = int(np.argmax(sizes)) + 1
            if sizes[k - 1] > best[0]:
                best = (int(sizes[k - 1]), z, components == k)
    _, z, region = best
    inside = ndimage.distance_transform_edt(region)
    cy, cx = np.unravel_index(int(np.argmax(inside)), inside.shape)
    yy, xx = np.ogrid[: region.shape[0], : region.shape[1]]
    disk = ((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2) & region
    mask = np.zeros(labels.shape, bool)
    mask[z] = disk
    return mask, int(truth[z, cy, cx])


def simulate_corrections(segment: Callable[[np.ndarray], np.ndarray], truth: np.ndarray, seeds: np.ndarray,
                         classes: Sequence[int], corrections: int = 5, radius: int = 3) -> list[float]:
    """Mean Dice over ``classes`` after 0..``corrections`` corrective strokes.  ``segment(seeds)`` returns
    (z, y, x) labels from (z, y, x) seeds (-1 where unpainted); ``seeds`` are the user's first
    strokes (not modified)."""
    seeds = seeds.copy()
    scores = []
    for step in range(corrections + 1):
        labels = segment(seeds)
        per_class = dice(labels, truth, list(classes))
        scores.append(float(np.mean([per_class[c] for c in classes])))
        if step == corrections:
            break
        stroke = corrective_stroke(labels, truth, radius)
        if stroke is None:
            scores += [scores[-1]] * (corrections - step)
            break
        mask, label = stroke
        seeds[mask] = label
    return scores


def number_of_corrections(scores: Sequence[float], target: float) -> int:
    """NoC@target: the first number of corrections whose Dice reaches ``target`` (len(scores) if none)."""
    for k, score in enumerate(scores):
        if score >= target:
            return k
    return len(scores)


__all__ = ["corrective_stroke", "number_of_corrections", "simulate_corrections"]
