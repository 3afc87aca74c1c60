"""Per-class offsets of a model's log-probabilities, chosen on volumes with complete masks.

Weak labels (scribbles, clicks) say which class the voxels deep inside each structure belong to, and
rarely where its border lies: on ACDC the myocardium's scribbles run 4 mm inside both of its borders,
the background's and the LV's 10-15 mm away, and the border the masks draw is often not the image's
strongest edge (the papillary muscles belong to the LV cavity, epicardial fat to the background).  A
network trained on such labels places the borders consistently, but too far out for some classes (the
myocardium a fifth too thick).  Adding a constant to one class's log-probability moves all of its
borders to another level of confidence; :func:`choose_class_offsets` picks one offset per class that
maximises the mean Dice on volumes with complete masks, or best matches their volumes (coordinate
ascent on a grid), and
:func:`apply_class_offsets` applies them.  The offsets are stored in the model folder (``weakseg
calibrate``) and used by every prediction of that model.  They need complete masks of about two dozen
volumes, drawn once for a kind of image (on ACDC, offsets chosen on 2-4 volumes made the test Dice
worse); choose them on volumes other than those the result is reported on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from WeakSegLib.evaluation.metrics import dice
from WeakSegLib.inference.postprocessing import keep_largest_component

__all__ = ["DEFAULT_OFFSET_GRID", "MIN_CALIBRATION_VOLUMES", "apply_class_offsets", "choose_class_offsets", "mean_dice"]

DEFAULT_OFFSET_GRID = tuple(np.round(np.arange(-3.0, 1.0001, 0.25), 2))
# Fewer calibration volumes than this get a warning: on ACDC, 24 volumes (12 patients) gave the gain,
# 12 volumes a part of it, and 2-4 volumes lowered the Dice of the test volumes.
MIN_CALIBRATION_VOLUMES = 20


def apply_class_offsets(probabilities, offsets: Sequence[float], axis: int = 0):
    """Softmax of ``log(probabilities) + offsets`` along the class ``axis`` (a torch tensor or numpy array,
    returned as the same type)."""
    if isinstance(probabilities, torch.Tensor):
        shape = [1] * probabilities.dim()
        shape[axis] = -1
        shift = torch.as_tensor(np.asarray(offsets, np.float32), device=probabilities.device).reshape(shape)
        return torch.softmax(torch.log(probabilities.float().clamp_min(1e-12)) + shift, dim=axis)
    array = np.asarray(probabilities, np.float32)
    shape = [1] * array.ndim
    shape[axis] = -1
    logits = np.log(np.clip(array, 1e-12, None)) + np.asarray(offsets, np.float32).reshape(shape)
    logits -= logits.max(axis=axis, keepdims=True)
    e = np.exp(logits)
    return e / e.sum(axis=axis, keepdims=True)


def _labels(log_probabilities: np.ndarray, offsets: np.ndarray, largest_component: bool | str) -> np.ndarray:
    labels = (log_probabilities + offsets).argmax(-1).astype(np.int16)
    return keep_largest_component(labels, largest_component) if largest_component else labels


def _scores(log_probabilities: Sequence[np.ndarray], truths: Sequence[np.ndarray], offsets: Sequence[float],
            classes: Sequence[int], largest_component: bool | str) -> tuple[float, float]:
    """(mean Dice over volumes and ``classes``, mean over ``classes`` of |median relative volume error|)."""
    offsets = np.asarray(offsets, np.float32)
    scores, errors = [], []
    for logp, truth in zip(log_probabilities, truths):
        labels = _labels(logp, offsets, largest_component)
        per_class = dice(labels, truth, list(classes))
        scores.append(np.mean([per_class[c] for c in classes]))
        errors.append([np.sum(labels == c) / np.sum(truth == c) - 1 if np.any(truth == c) else np.nan
                       for c in classes])
    medians = np.nanmedian(np.asarray(errors, float), axis=0) if errors else np.array([np.nan])
    return float(np.mean(scores)), float(np.nanmean(np.abs(medians))) if np.any(np.isfinite(medians)) else 0.0


def mean_dice(log_probabilities: Sequence[np.ndarray], truths: Sequence[np.ndarray], offsets: Sequence[float],
              classes: Sequence[int], largest_component: bool | str = False) -> float:
    """Mean over volumes of the mean Dice over ``classes`` of the labels with ``offsets``."""
    return _scores(log_probabilities, truths, offsets, classes, largest_component)[0]


def choose_class_offsets(probabilities: Sequence[np.ndarray], truths: Sequence[np.ndarray],
                         classes: Sequence[int] | None = None, largest_component: bool | str = False,
                         grid: Sequence[float] = DEFAULT_OFFSET_GRID, rounds: int = 2,
                         objective: str = "dice") -> dict:
    """Offsets of each foreground class's log-probability that fit the complete masks of these volumes.

    ``probabilities``: per volume (z, y, x, K) softmax; ``truths``: per volume (z, y, x) class ids, the
    complete masks; ``classes``: those scored (default 1..K-1); the background's offset stays 0.
    ``objective``: ``"dice"`` maximises the mean Dice; ``"volume"`` minimises the mean over classes of
    the absolute median relative volume error (for volumes and masses, e.g. the myocardium's).
    Coordinate ascent: each class in turn takes the grid value that scores best with the others fixed,
    ``rounds`` times over; a change must gain more than 1e-4 (ties keep 0).  Returns ``{"offsets",
    "objective", "dice_before", "dice_after", "volume_error_before", "volume_error_after", "volumes"}``.
    """
    if objective not in ("dice", "volume"):
        raise ValueError(f"objective must be 'dice' or 'volume', got {objective!r}.")
    if not probabilities or len(probabilities) != len(truths):
        raise ValueError(f"Calibration needs volumes with complete masks: got {len(probabilities)} probability "
                         f"maps and {len(truths)} masks.")
    num_classes = probabilities[0].shape[-1]
    classes = list(range(1, num_classes)) if classes is None else list(classes)
    logs = []
    for p, t in zip(probabilities, truths):
        if p.shape[:3] != t.shape or p.shape[-1] != num_classes:
            raise ValueError(f"A probability map {p.shape} does not match its mask {t.shape} with {num_classes} "
                             f"classes.")
        logs.append(np.log(np.clip(np.asarray(p, np.float32), 1e-12, None)))
    def score(scores: tuple[float, float]) -> float:
        return scores[0] if objective == "dice" else -scores[1]

    offsets = np.zeros(num_classes, np.float32)
    before = after = _scores(logs, truths, offsets, classes, largest_component)
    best = score(before)
    for _ in range(rounds):
        changed = False
        for c in classes:
            for value in grid:
                if value == offsets[c]:
                    continue
                trial = offsets.copy()
                trial[c] = value
                scores = _scores(logs, truths, trial, classes, largest_component)
                if score(scores) > best + 1e-4:
                    best, after, offsets, changed = score(scores), scores, trial, True
        if not changed:
            break
    return {"offsets": [float(v) for v in offsets], "objective": objective, "dice_before": before[0],
            "dice_after": after[0], "volume_error_before": before[1], "volume_error_after": after[1],
            "volumes": len(logs)}
