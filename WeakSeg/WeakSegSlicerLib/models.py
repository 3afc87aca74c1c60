"""Model folders as the GUI handles them: do a model's classes match the segments, Save model."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from WeakSegLib.data.dataset import ClassInfo
from WeakSegLib.jobs.protocol import MODEL_JSON, model_classes
from WeakSegLib.mrml.segments import _class_key


def compatible_model(model_dir: str | os.PathLike | None, classes: Sequence[ClassInfo]) -> bool:
    """True when a model folder exists and has the same class names (any case, same order)."""
    if not model_dir:
        return False
    try:
        model = model_classes(model_dir)
    except (FileNotFoundError, ValueError):
        return False
    return [_class_key(c.name) for c in model] == [_class_key(c.name) for c in classes]


def copy_model_folder(source: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Copy a model folder (Save model).  An existing destination must be empty or a model folder."""
    source, destination = Path(source), Path(destination)
    model_classes(source)  # a clear error when the source is not a model
    if destination.exists() and any(destination.iterdir()) and not (destination / MODEL_JSON).exists():
        raise FileExistsError(f"'{destination}' is not empty and not a WeakSeg model folder; choose an empty folder.")
    shutil.copytree(source, destination, dirs_exist_ok=True)
    return destination

