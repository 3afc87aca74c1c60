"""What the module registers with Slicer once the application has started: the "Weak annotation" Segment
Editor effect and the sample case of the Sample Data module."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

MODULE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))   # the WeakSeg module folder


def register_weak_annotation_effect() -> bool:
    """Register the "Weak annotation" Segment Editor effect (as Slicer's effect template does); False when
    the Segment Editor effects are unavailable (e.g. Slicer started without the Segmentations module)."""
    try:
        import qSlicerSegmentationsEditorEffectsPythonQt as effects
    except ImportError:
        logging.warning("WeakSeg: Segment Editor effects are unavailable; the Weak annotation effect is not "
                        "registered.")
        return False
    instance = effects.qSlicerSegmentEditorScriptedEffect(None)
    path = os.path.join(MODULE_DIR, "SegmentEditorWeakAnnotationLib", "SegmentEditorEffect.py")
    instance.setPythonSource(path.replace("\\", "/"))
    instance.self().register()
    return True


def register_on_startup(ensure_dependencies: Callable[[], bool]) -> None:
    """The effect and the sample case (:mod:`WeakSegSlicerLib.sample_data`, which calls
    ``ensure_dependencies`` before it builds the case)."""
    from WeakSegSlicerLib.sample_data import register_sample_data

    register_weak_annotation_effect()
    register_sample_data(ensure_dependencies)
