"""Scoring a method's predicted labels on the test volumes, and the method's record in ``bench.json``."""

from __future__ import annotations

import time

import numpy as np

from WeakSegLib.bench.config import METHOD_LABELS
from WeakSegLib.data.dataset import Dataset
from WeakSegLib.data.volume import Volume
from WeakSegLib.evaluation.metrics import dice, evaluate, summarise


def evaluate_labels(labels: dict[str, np.ndarray], test: Dataset) -> tuple[dict, dict]:
    """``(per-case reports, summary)`` of label maps ``{case id: (z, y, x)}`` against the test ground truth."""
    reports = {}
    for case in test.cases:
        reports[case.id] = evaluate(Volume(labels[case.id].astype(np.int16), case.image.geometry),
                                    case.ground_truth, test.class_names)
    return reports, summarise(list(reports.values()))


def dice_only(labels: dict[str, np.ndarray], test: Dataset) -> dict[str, float]:
    """Mean Dice per class over the test volumes (as ``summarise`` means it: per volume, then averaged)."""
    ids = list(range(1, test.num_classes))
    per_case = [dice(labels[c.id], c.ground_truth.array, ids) for c in test.cases]
    return {test.class_names[i]: float(np.mean([d[i] for d in per_case])) for i in ids}


def predict_all(model, test: Dataset, largest_component: bool | str = False) -> tuple[dict[str, np.ndarray], float]:
    """``({case id: (z, y, x) labels}, seconds)``: the model's prediction on every test volume."""
    labels = {}
    start = time.monotonic()
    for case in test.cases:
        labels[case.id] = model.predict(case.image, largest_component=largest_component).labels.array
    return labels, time.monotonic() - start


def mean_dice(summary: dict) -> float:
    """Mean foreground Dice of a :func:`~WeakSegLib.evaluation.metrics.summarise` summary."""
    return float(summary["mean"]["dice"]["mean"])


def class_dice(summary: dict) -> dict[str, float]:
    """Mean Dice per class of a summary."""
    return {name: float(m["dice"]["mean"]) for name, m in summary["classes"].items()}


def method_record(name: str, fields: dict, reports: dict | None = None, summary: dict | None = None) -> dict:
    """A method's entry in the report: its name, label and ``fields``, then its scores when it has some."""
    record = {"method": name, "label": METHOD_LABELS[name], **fields}
    if summary is not None:
        record["summary"] = summary
        record["mean_dice"] = mean_dice(summary)
        record["dice_per_class"] = class_dice(summary)
        record["per_case"] = reports
    return record
