"""Inference: sliding-window prediction with the precision policy, flip test-time augmentation,
ensembling of models, post-processing of label maps, and the completion of a volume's strokes
with a trained network (:mod:`~WeakSegLib.inference.strokes`)."""

from WeakSegLib.inference.postprocessing import keep_largest_component
from WeakSegLib.inference.predictor import Prediction, Predictor, predict_ensemble
from WeakSegLib.inference.strokes import refine_with_seeds, stroke_agreement

__all__ = ["Prediction", "Predictor", "keep_largest_component", "predict_ensemble", "refine_with_seeds",
           "stroke_agreement"]
