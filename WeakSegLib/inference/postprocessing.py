"""Post-processing of predicted label maps."""

from __future__ import annotations

import numpy as np

__all__ = ["keep_largest_component"]


def keep_largest_component(labels: np.ndarray) -> np.ndarray:
    """Per foreground class, keep only the largest 3D connected component (others -> background).

    Args:
        labels: (z, y, x) integer label map, 0 = background.

    Returns:
        A new (z, y, x) label map of the same dtype.
    """
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
