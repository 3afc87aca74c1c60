"""Post-processing of predicted label maps: connected components.

Two rules (``largest_component``, as the CLI's ``--largest-component [class|object]`` spells them):

- ``"class"`` (or ``True``): each foreground class keeps its largest 3D connected component.
- ``"object"``: the foreground classes together are taken as one object (the heart's RV, myocardium
  and LV touch each other): first the connected component of all foreground voxels that holds most of
  every class is found (the largest geometric mean of its class sizes, not the largest size: a large
  blob of mostly one class, which a poorly trained model can make, must not win over the smaller
  object where the classes meet), then each class keeps its largest component that lies in that
  object; a class with no component there (a separate organ) keeps its largest component anywhere.
  This removes a class's stray blob away from the object even when the blob is larger than the
  class's true region (nnU-Net's post-processing likewise considers the whole foreground first, then
  each class).

Either rule can add what the user knows of the anatomy: a class that lies *inside* another (the LV's
blood pool inside the myocardium; the CLI's ``--inside LV:Myo``).  Such a class keeps, of its
components at least :data:`INSIDE_MIN_RELATIVE_SIZE` of its largest, the one whose in-plane border
(the voxels next to it on its own slice) belongs most to the enclosing class, instead of the largest.
On a cine-MRI end-systole with a dilated RV, part of the RV's cavity can be labelled LV in a piece
larger than the small true LV: the largest piece is the wrong one, the enclosed one is right.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["COMPONENT_RULES", "INSIDE_MIN_RELATIVE_SIZE", "ComponentRule", "component_rule",
           "keep_largest_component", "parse_inside", "rule_with_inside"]

COMPONENT_RULES = ("class", "object")
INSIDE_MIN_RELATIVE_SIZE = 0.1   # an enclosed class's candidates: components >= this fraction of its largest


@dataclass(frozen=True)
class ComponentRule:
    """A connected-component rule: ``scope`` "class" or "object", and ``inside``, pairs
    ``(inner, outer)`` of class ids where the inner class lies inside the outer one."""

    scope: str = "class"
    inside: tuple[tuple[int, int], ...] = ()

    def __post_init__(self) -> None:
        if self.scope not in COMPONENT_RULES:
            raise ValueError(f"Component rule '{self.scope}' is not a rule; use one of {', '.join(COMPONENT_RULES)}.")
        pairs = tuple((int(a), int(b)) for a, b in self.inside)
        for inner, outer in pairs:
            if inner <= 0 or outer <= 0 or inner == outer:
                raise ValueError(f"'inside' pairs name two different foreground classes (ids >= 1), got "
                                 f"({inner}, {outer}).")
        if len({inner for inner, _ in pairs}) != len(pairs):
            raise ValueError(f"A class can lie inside one other class only, got {list(pairs)}.")
        object.__setattr__(self, "inside", pairs)

    def to_json(self) -> str | dict:
        """``"class"`` / ``"object"``, or ``{"scope": ..., "inside": [[inner, outer], ...]}``."""
        if not self.inside:
            return self.scope
        return {"scope": self.scope, "inside": [list(p) for p in self.inside]}


def component_rule(largest_component) -> ComponentRule | None:
    """The rule named by ``largest_component``: None / False (keep everything), True or "class",
    "object", a :class:`ComponentRule`, or its JSON form (a dict with "scope" and "inside")."""
    if largest_component is None or largest_component is False:
        return None
    if largest_component is True:
        return ComponentRule("class")
    if isinstance(largest_component, ComponentRule):
        return largest_component
    if isinstance(largest_component, str) and largest_component in COMPONENT_RULES:
        return ComponentRule(largest_component)
    if isinstance(largest_component, dict) and set(largest_component) <= {"scope", "inside"}:
        return ComponentRule(largest_component.get("scope", "class"),
                             tuple(tuple(p) for p in largest_component.get("inside", ())))
    raise ValueError(f"largest_component '{largest_component}' is not a rule; use one of "
                     f"{', '.join(COMPONENT_RULES)} (or True / False).")


def parse_inside(specs: Sequence[str], class_names: Sequence[str]) -> tuple[tuple[int, int], ...]:
    """``["LV:Myo"]`` -> ``((3, 2),)``: each ``INNER:OUTER`` names two foreground classes by name
    (case-insensitive) or id, ``class_names`` listing the classes in id order (0 = background)."""
    lower = [n.lower() for n in class_names]
    pairs = []
    for spec in specs:
        parts = str(spec).split(":")
        if len(parts) != 2:
            raise ValueError(f"--inside '{spec}' must be INNER:OUTER, two classes (e.g. LV:Myo).")
        ids = []
        for part in parts:
            part = part.strip()
            if part.isdigit() and 0 < int(part) < len(class_names):
                ids.append(int(part))
            elif part.lower() in lower[1:]:
                ids.append(lower.index(part.lower(), 1))
            else:
                raise ValueError(f"--inside '{spec}': '{part}' is not a foreground class; the classes are "
                                 f"{', '.join(f'{i} {n}' for i, n in enumerate(class_names) if i)}.")
        pairs.append((ids[0], ids[1]))
    return ComponentRule("class", tuple(pairs)).inside


def rule_with_inside(largest_component: str | None, inside: Sequence[str], class_names: Sequence[str]):
    """``--largest-component`` and ``--inside`` -> the rule for :func:`keep_largest_component`: the
    ``largest_component`` value unchanged without ``inside``, else a :class:`ComponentRule` (scope "class"
    when ``largest_component`` is not given) naming the enclosed classes by id."""
    if not inside:
        return largest_component
    return ComponentRule(largest_component or "class", parse_inside(inside, class_names))


def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy import ndimage

    comp, n = ndimage.label(mask)
    sizes = ndimage.sum_labels(np.ones_like(comp), comp, index=np.arange(1, n + 1)) if n else np.zeros(0)
    return comp, np.asarray(sizes)


def _enclosure(labels: np.ndarray, comp: np.ndarray, n: int, outer: int) -> np.ndarray:
    """For components 1..n of ``comp``: the fraction of each one's in-plane border (4-neighbours on its
    own z slice, outside the component) that is labelled ``outer``."""
    from scipy import ndimage

    in_plane = np.zeros((1, 3, 3), bool)
    in_plane[0] = ndimage.generate_binary_structure(2, 1)
    fractions = np.zeros(n)
    for i, region in enumerate(ndimage.find_objects(comp)):
        if region is None:
            continue
        pad = tuple(slice(max(s.start - (0 if k == 0 else 1), 0), s.stop + (0 if k == 0 else 1))
                    for k, s in enumerate(region))
        mask = comp[pad] == i + 1
        border = ndimage.binary_dilation(mask, in_plane) & ~mask
        total = int(border.sum())
        fractions[i] = np.count_nonzero(labels[pad][border] == outer) / total if total else 0.0
    return fractions


def _main_object(labels: np.ndarray) -> np.ndarray | None:
    """The connected component of all foreground voxels that holds most of every class together: the
    one with the largest sum over the foreground classes of log(1 + its voxels of that class), i.e. the
    largest geometric mean of the class sizes (each plus one).  With one class this is the largest
    component; a blob that is mostly one class loses to a smaller object where the classes meet."""
    from scipy import ndimage

    comp, sizes = _components(labels > 0)
    if not sizes.size:
        return None
    index = np.arange(1, sizes.size + 1)
    score = np.zeros(sizes.size)
    for c in np.unique(labels[labels > 0]):
        score += np.log1p(ndimage.sum_labels(labels == c, comp, index=index))
    return comp == int(np.argmax(score)) + 1


def keep_largest_component(labels: np.ndarray, rule="class") -> np.ndarray:
    """Keep one 3D connected component per foreground class (others -> background).

    Args:
        labels: (z, y, x) integer label map, 0 = background.
        rule: "class" (or True), "object", or a :class:`ComponentRule` (see the module's description);
            None / False copies.

    Returns:
        A new (z, y, x) label map of the same dtype.
    """
    from scipy import ndimage

    rule = component_rule(rule)
    out = labels.copy()
    if rule is None:
        return out
    inside = dict(rule.inside)
    obj = None
    if rule.scope == "object":
        obj = _main_object(labels)
    for c in np.unique(labels):
        if c == 0:
            continue
        comp, sizes = _components(labels == c)
        if sizes.size < 2:
            continue
        score = sizes.astype(float)
        if obj is not None:
            in_object = ndimage.maximum(obj, comp, index=np.arange(1, sizes.size + 1)).astype(bool)
            if in_object.any():
                score = np.where(in_object, score, -1.0)
        if int(c) in inside:
            candidates = (score > 0) & (sizes >= INSIDE_MIN_RELATIVE_SIZE * score.max())
            enclosure = _enclosure(labels, comp, sizes.size, inside[int(c)])
            score = np.where(candidates, enclosure + 1e-9 * sizes / sizes.max(), -1.0)
        keep = int(np.argmax(score)) + 1
        out[(comp != keep) & (comp > 0)] = 0
    return out
