"""Evaluation: per-class metrics, paired statistics, reports and plots.

Plots (:mod:`WeakSegLib.evaluation.plots`, matplotlib) are imported from their module.
"""

from WeakSegLib.evaluation.metrics import (
    METRIC_KEYS,
    average_surface_distance,
    dice,
    evaluate,
    hd95,
    summarise,
    volume_error_ml,
)
from WeakSegLib.evaluation.reports import format_report, to_jsonable
from WeakSegLib.evaluation.statistics import describe_paired_difference, paired_difference

__all__ = [
    "METRIC_KEYS", "average_surface_distance", "dice", "evaluate", "hd95", "summarise", "volume_error_ml",
    "describe_paired_difference", "paired_difference", "format_report", "to_jsonable",
]
