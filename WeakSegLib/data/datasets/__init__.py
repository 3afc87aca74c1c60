"""Public datasets read in their own folder layout, without a ``dataset.json``: ACDC and LA.

Each module turns one layout into a manifest (the content a ``dataset.json`` would have);
:func:`folder_manifest` recognises the layout of a folder.
"""

from __future__ import annotations

from pathlib import Path

from WeakSegLib.data.datasets.acdc import acdc_manifest
from WeakSegLib.data.datasets.la import la_manifest

__all__ = ["acdc_manifest", "folder_manifest", "la_manifest"]


def folder_manifest(folder: Path) -> dict | None:
    """The manifest of ``folder`` if it holds a known dataset layout (ACDC, LA), else ``None``."""
    if any(folder.glob("patient*_frame*_gt.nii.gz")):
        return acdc_manifest(folder)
    if any(folder.glob("LA_*_gt.nii.gz")):
        return la_manifest(folder)
    return None
