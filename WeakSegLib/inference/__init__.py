"""Inference: sliding-window prediction with the precision policy, flip test-time augmentation,
ensembling of models, and post-processing of label maps."""

from WeakSegLib.inference.postprocessing import keep_largest_component
from WeakSegLib.inference.predictor import Prediction, Predictor, predict_ensemble

__all__ = ["Prediction", "Predictor", "keep_largest_component", "predict_ensemble"]
