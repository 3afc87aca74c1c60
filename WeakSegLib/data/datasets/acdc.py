"""ACDC (cine-MRI of the heart, with the scribbles of Valvano et al.): ``patientNNN_frameFF{,_gt,_scribble}.nii.gz``."""

from __future__ import annotations

import os
import re
from pathlib import Path

ACDC_CLASSES = ["Background", "RV", "Myo", "LV"]
ACDC_COLORS = [(0, 0, 0), (111, 184, 210), (216, 101, 79), (241, 214, 145)]


def acdc_manifest(folder: str | os.PathLike) -> dict:
    """Manifest for the ACDC folder (``patientNNN_frameFF{,_gt,_scribble}.nii.gz``; scribble value 4 =
    unannotated).  Cases are grouped by patient so splits never separate ED and ES of one patient."""
    folder = Path(folder)
    cases = []
    for img in sorted(folder.glob("patient*_frame*.nii.gz")):
        m = re.fullmatch(r"(patient\d+)_frame\d+\.nii\.gz", img.name)
        if not m:
            continue
        stem = img.name[: -len(".nii.gz")]
        entry = {"id": stem, "image": img.name, "group": m.group(1)}
        if (folder / f"{stem}_scribble.nii.gz").exists():
            entry["annotation"] = f"{stem}_scribble.nii.gz"
        if (folder / f"{stem}_gt.nii.gz").exists():
            entry["ground_truth"] = f"{stem}_gt.nii.gz"
        cases.append(entry)
    if not cases:
        raise FileNotFoundError(f"No ACDC cases (patientNNN_frameFF.nii.gz) found in '{folder}'.")
    return {
        "name": "ACDC",
        "classes": [{"id": i, "name": n, "color": list(c)} for i, (n, c) in enumerate(zip(ACDC_CLASSES, ACDC_COLORS))],
        "channels": ["cine-MRI"],
        "modality": "MR",
        "unannotated_value": 4,
        "cases": cases,
    }
