"""What the benchmark scripts share: the training patients' cases they look at, and box-annotated datasets."""

from __future__ import annotations

import json


def training_cases(data, groups_from: str | None, max_groups: int) -> list:
    """Cases with ground truth of the first ``max_groups`` groups: all groups (sorted), or the 'train'
    groups of the split JSON ``groups_from`` (training patients only)."""
    groups = sorted({c.group for c in data.cases})
    if groups_from:
        with open(groups_from) as f:
            groups = json.load(f)["train"]
    chosen = set(groups[:max_groups])
    return [c for c in data.cases if c.group in chosen and c.ground_truth is not None]


def boxed_dataset(data, groups: set[str], per_slice: bool = False):
    """The cases of ``groups`` with tight boxes simulated from their ground truth as their only annotation
    (one 3D box per object, or one per object and slice)."""
    from WeakSegLib.data.dataset import Case, Dataset
    from WeakSegLib.data.simulate import simulate_boxes

    cases = [Case(c.id, c.image, simulate_boxes(c.ground_truth, data.num_classes, per_slice=per_slice),
                  c.ground_truth, c.group) for c in data.cases if c.group in groups]
    return Dataset(data.classes, cases, data.channels, data.modality, dict(data.priors), data.name, data.root)
