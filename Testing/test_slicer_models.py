"""WeakSegSlicerLib.models: does a model folder's classes match the segments; Save model."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("slicer", reason="needs the MRML library: pip install slicer-core (or run inside Slicer)")

from WeakSegSlicerLib import models  # noqa: E402

from WeakSegLib.data.dataset import ClassInfo  # noqa: E402


def test_compatible_model(tmp_path):
    classes = [ClassInfo(0, "Background", (0, 0, 0)), ClassInfo(1, "Liver", (1, 1, 1))]
    assert not models.compatible_model(None, classes) and not models.compatible_model(tmp_path, classes)
    (tmp_path / "model.json").write_text(json.dumps({"classes": [c.to_dict() for c in classes]}))
    assert models.compatible_model(tmp_path, [ClassInfo(0, "background", (0, 0, 0)), ClassInfo(1, "LIVER", (0, 0, 0))])
    assert not models.compatible_model(tmp_path, classes + [ClassInfo(2, "Tumor", (0, 0, 0))])
    copied = models.copy_model_folder(tmp_path, tmp_path.parent / "copied_model")
    assert (copied / "model.json").is_file()
    (tmp_path.parent / "busy").mkdir()
    (tmp_path.parent / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        models.copy_model_folder(tmp_path, tmp_path.parent / "busy")

