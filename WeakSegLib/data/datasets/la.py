"""LA (left atrium in LGE-MRI, the 2018 Atrial Segmentation Challenge): ``LA_<ID>.nii.gz`` + ``LA_<ID>_gt.nii.gz``."""

from __future__ import annotations

import os
import re
from pathlib import Path


def la_manifest(folder: str | os.PathLike) -> dict:
    """Manifest for the LA folder (``LA_<ID>.nii.gz`` + ``LA_<ID>_gt.nii.gz``: 0 background, 1 left atrium).

    One volume per patient, so each case is its own group.
    """
    folder = Path(folder)
    cases = []
    for img in sorted(folder.glob("LA_*.nii.gz")):
        m = re.fullmatch(r"(LA_[A-Za-z0-9]+)\.nii\.gz", img.name)
        if not m or not (folder / f"{m.group(1)}_gt.nii.gz").exists():
            continue
        cases.append({"id": m.group(1), "image": img.name, "ground_truth": f"{m.group(1)}_gt.nii.gz",
                      "group": m.group(1)})
    if not cases:
        raise FileNotFoundError(f"No LA cases (LA_<ID>.nii.gz with LA_<ID>_gt.nii.gz) found in '{folder}'.")
    return {"name": "LA", "classes": [{"id": 0, "name": "Background", "color": [0, 0, 0]},
                                      {"id": 1, "name": "LeftAtrium", "color": [216, 101, 79]}],
            "channels": ["LGE-MRI"], "modality": "MR", "cases": cases}
