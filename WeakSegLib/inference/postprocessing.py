"""Post-processing of predicted label maps: connected components.

Two rules (``largest_component``, as the CLI's ``--largest-component [class|object]`` spells them):

- ``"class"`` (or ``True``): each foreground class keeps its largest 3D connected component.
- ``"object"``: the foreground classes together are taken as one object (the heart's RV, myocardium
  and LV touch each other): first the largest connected component of all foreground voxels is found,
  then each class keeps its largest component that lies in that object; a class with no component
  there (a separate organ) keeps its largest component anywhere.  This removes a class's stray blob
  away from the object even when the blob is larger than the class's true region (nnU-Net's
  post-processing likewise considers the whole foreground first, then each class).
"""

from __future__ import annotations

import numpy as np

__all__ = ["COMPONENT_RULES", "component_rule", "keep_largest_component"]

COMPONENT_RULES = ("class", "object")


def component_rule(largest_component: bool | str | None) -> str | None:
    """The rule named by ``largest_component``: None (keep everything), "class" or "object"."""
    if largest_component is None or largest_component is False:
        return None
    if largest_component is True:
        return "class"
    if largest_component in COMPONENT_RULES:
        return str(largest_component)
    raise ValueError(f"largest_component '{largest_component}' is not a rule; use one of "
                     f"{', '.join(COMPONENT_RULES)} (or True / False).")


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    comp, n = ndimage.label(mask)
    sizes = ndimage.sum_labels(np.ones_like(comp), comp, index=np.arange(1, n + 1)) if n else np.zeros(0)
    return comp, np.asarray(sizes)


def keep_largest_component(labels: np.ndarray, rule: bool | str | None = "class") -> np.ndarray:
    """Keep each foreground class's largest 3D connected component (others -> background).

    Args:
        labels: (z, y, x) integer label map, 0 = background.
        rule: "class" (or True) or "object" (see the module's description); None / False copies.

    Returns:
        A new (z, y, x) label map of the same dtype.
    """
    from scipy import ndimage

    rule = component_rule(rule)
    out = labels.copy()
    if rule is None:
        return out
    obj = None
    if rule == "object":
        comp, sizes = _components(labels > 0)
        if sizes.size:
            obj = comp == int(np.argmax(sizes)) + 1
    for c in np.unique(labels):
        if c == 0:
            continue
        comp, sizes = _components(labels == c)
        if sizes.size < 2:
            continue
        score = sizes
        if obj is not None:
            inside = ndimage.maximum(obj, comp, index=np.arange(1, sizes.size + 1)).astype(bool)
            if inside.any():
                score = np.where(inside, sizes, -1)
        keep = int(np.argmax(score)) + 1
        out[(comp != keep) & (comp > 0)] = 0
    return out
