"""Images with their geometry, weak annotations, datasets, simulated annotations and the phantom."""

from WeakSegLib.data.annotation import UNKNOWN, AnnotationError, Box, WeakAnnotation, rasterise_points
from WeakSegLib.data.dataset import Case, ClassInfo, Dataset, default_classes, load_dataset
from WeakSegLib.data.volume import Geometry, GeometryMismatchError, Volume, read_volume, resample_to, write_volume

__all__ = [
    "UNKNOWN", "AnnotationError", "Box", "WeakAnnotation", "rasterise_points",
    "Case", "ClassInfo", "Dataset", "default_classes", "load_dataset",
    "Geometry", "GeometryMismatchError", "Volume", "read_volume", "resample_to", "write_volume",
]
