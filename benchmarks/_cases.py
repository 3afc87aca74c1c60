"""What the no-training benchmark scripts share: the training patients' cases they look at."""

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
