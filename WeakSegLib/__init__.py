"""WeakSegLib: weakly supervised medical image segmentation (core of the WeakSeg Slicer extension).

Pure library: never imports slicer, vtk, qt or ctk (only ``WeakSegLib.mrml`` does, on demand).
"""

from .annotation import UNKNOWN, AnnotationError, Box, WeakAnnotation, rasterise_points
from .dataset import Case, ClassInfo, Dataset, acdc_manifest, default_classes, load_dataset
from .volume import Geometry, GeometryMismatchError, Volume, read_volume, resample_to, write_volume

__version__ = "0.1.0"

__all__ = [
    "UNKNOWN", "AnnotationError", "Box", "WeakAnnotation", "rasterise_points",
    "Case", "ClassInfo", "Dataset", "acdc_manifest", "default_classes", "load_dataset",
    "Geometry", "GeometryMismatchError", "Volume", "read_volume", "resample_to", "write_volume",
    "__version__",
]
