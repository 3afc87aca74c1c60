"""WeakSegLib: weakly supervised medical image segmentation (core of the WeakSeg Slicer extension).

Pure library: never imports slicer, vtk, qt or ctk (only ``WeakSegLib.mrml`` does, on demand).
"""

from WeakSegLib.data.annotation import UNKNOWN, AnnotationError, Box, WeakAnnotation, rasterise_points
from WeakSegLib.data.dataset import Case, ClassInfo, Dataset, default_classes, load_dataset
from WeakSegLib.data.datasets.acdc import acdc_manifest
from WeakSegLib.data.volume import Geometry, GeometryMismatchError, Volume, read_volume, resample_to, write_volume

# Heavier parts (torch, MONAI) load on first use: ``import WeakSegLib`` stays fast for the CLI's --help.
_LAZY = {
    "evaluate": "evaluation.metrics", "summarise": "evaluation.metrics", "dice": "evaluation.metrics",
    "hd95": "evaluation.metrics",
    "combine": "data.simulate",
    "make_phantom": "data.phantom", "make_phantom_dataset": "data.phantom", "PHANTOM_CLASSES": "data.phantom",
    "Model": "model", "Prediction": "model", "predict_ensemble": "model",
    "TrainConfig": "training", "LossWeights": "training", "train": "training", "TrainingError": "training",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f".{_LAZY[name]}", __name__)
        return getattr(module, name)
    raise AttributeError(f"module 'WeakSegLib' has no attribute '{name}'")

__version__ = "0.1.0"

__all__ = [
    "UNKNOWN", "AnnotationError", "Box", "WeakAnnotation", "rasterise_points",
    "Case", "ClassInfo", "Dataset", "acdc_manifest", "default_classes", "load_dataset",
    "Geometry", "GeometryMismatchError", "Volume", "read_volume", "resample_to", "write_volume",
    "__version__", *_LAZY,
]
