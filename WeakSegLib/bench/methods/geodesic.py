"""``interactive-geodesic``: each test volume's own seeds completed without a model, no training.

A pixel classifier fit on the seeds, then geodesic competition between them
(:func:`~WeakSegLib.inference.geodesic.segment_from_strokes`; what the Segment Editor effect does
without a model).  Compared with Grow-from-seeds on the same seeds.
"""

from __future__ import annotations

import time

import numpy as np

from WeakSegLib.bench.annotations import test_seed_kind
from WeakSegLib.bench.context import BenchContext
from WeakSegLib.bench.memory import MemorySampler
from WeakSegLib.bench.scoring import evaluate_labels, method_record
from WeakSegLib.inference.geodesic import segment_from_strokes
from WeakSegLib.inference.strokes import stroke_agreement


def run_interactive_geodesic(context: BenchContext) -> dict:
    """Complete each test volume's seeds on its first channel (largest component with ``--largest-component``)."""
    test = context.test
    labels, per_volume, kept = {}, [], []
    with MemorySampler() as memory:
        for case in test.cases:
            seeds = context.test_seeds[case.id]
            image = case.image.first_channel()
            start = time.monotonic()
            labels[case.id] = segment_from_strokes(image, seeds, case.image.geometry.spacing_zyx, test.num_classes,
                                                   largest_component=context.config.largest_component)
            per_volume.append(time.monotonic() - start)
            kept.append(stroke_agreement(labels[case.id], seeds))
    reports, summary = evaluate_labels(labels, test)
    return method_record("interactive-geodesic", {
        "status": "completed", "train_seconds": 0.0, "predict_seconds": round(sum(per_volume), 2),
        "predict_seconds_per_volume": round(float(np.mean(per_volume)), 3),
        "seeds_kept_min": min((v for v in kept if v is not None), default=None),
        "annotated_fraction": 0.0, "test_seed_fraction": context.test_seed_fraction,
        "test_seeds": test_seed_kind(context.config.annotation),
        "intensity_channel": test.channels[0], **memory.report()}, reports, summary)
