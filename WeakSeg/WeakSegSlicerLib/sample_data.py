"""The WeakSeg case of the Sample Data module: a generated phantom (an organ holding a brighter lesion)
with a few scribbles and size ranges, ready to Train.  Nothing is downloaded: the case is made by
:func:`WeakSegSlicerLib.selftest.make_annotated_phantom`, the one the self-test trains on.
"""

from __future__ import annotations

import os
from collections.abc import Callable

SAMPLE_NAME = "WeakSegPhantom"
SAMPLE_SHAPE = (32, 64, 64)


def load_sample_phantom(ensure_dependencies: Callable[[], bool] | None = None, scene=None):
    """Create the sample case in the scene (after ``ensure_dependencies()``, which may install what the
    scribble simulation needs) and return ``(volume_node, segmentation_node)``, or None if declined."""
    import slicer

    from WeakSegSlicerLib.selftest import make_annotated_phantom

    if ensure_dependencies is not None and not ensure_dependencies():
        return None
    volume_node, segmentation_node, _truth, _names = make_annotated_phantom(scene or slicer.mrmlScene,
                                                                           shape=SAMPLE_SHAPE, name=SAMPLE_NAME)
    return volume_node, segmentation_node


def register_sample_data(ensure_dependencies: Callable[[], bool]) -> bool:
    """Add the case to the Sample Data module (category "WeakSeg"); False when that module is absent."""
    try:
        import SampleData
        import slicer
    except ImportError:
        return False

    def load(source=None):
        from slicer.i18n import tr as _

        with slicer.util.tryWithErrorDisplay(_("The WeakSeg sample case could not be created."), waitCursor=True):
            nodes = load_sample_phantom(ensure_dependencies)
            if nodes is not None:
                slicer.util.setSliceViewerLayers(background=nodes[0], fit=True)
                return nodes[0]
        return None

    icon = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "Resources", "Icons",
                        "WeakSeg.png")
    SampleData.SampleDataLogic.registerCustomSampleDataSource(
        category="WeakSeg", sampleName=SAMPLE_NAME, uris="weakseg:phantom", fileNames=f"{SAMPLE_NAME}.nrrd",
        nodeNames=SAMPLE_NAME, customDownloader=load, thumbnailFileName=icon)
    return True
