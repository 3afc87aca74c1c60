"""``growcut``: Slicer's Grow-from-seeds (``vtkImageGrowCutSegment``) on each test volume's own seeds, no training."""

from __future__ import annotations

import time

import numpy as np

from WeakSegLib.bench.annotations import test_seed_kind
from WeakSegLib.bench.context import BenchContext
from WeakSegLib.bench.memory import MemorySampler
from WeakSegLib.bench.scoring import evaluate_labels, method_record
from WeakSegLib.data.annotation import UNKNOWN


def run_growcut(context: BenchContext) -> dict:
    """Grow from the test seeds on the first channel; skipped where Slicer's MRML library is not installed."""
    try:
        from WeakSegLib.mrml import grow_from_seeds  # the MRML bridge is the one module importing slicer
    except ImportError as exc:
        return method_record("growcut", {"status": "skipped", "reason": f"Slicer's Grow-from-seeds is not "
                                         f"available ({exc}); pip install slicer-core or run inside 3D Slicer"})
    test = context.test
    labels, per_volume = {}, []
    with MemorySampler() as memory:
        for case in test.cases:
            seeds = context.test_seeds[case.id]
            image = case.image.first_channel()
            start = time.monotonic()
            grown = grow_from_seeds(image, np.where(seeds == UNKNOWN, 0, seeds + 1).astype(np.int16),
                                    case.image.geometry.spacing_zyx,
                                    distance_penalty=context.config.growcut_distance_penalty)
            per_volume.append(time.monotonic() - start)
            labels[case.id] = np.clip(grown.astype(np.int16) - 1, 0, None)   # unreached voxels -> background
    reports, summary = evaluate_labels(labels, test)
    return method_record("growcut", {
        "status": "completed", "train_seconds": 0.0, "predict_seconds": round(sum(per_volume), 2),
        "predict_seconds_per_volume": round(float(np.mean(per_volume)), 3),
        "annotated_fraction": 0.0, "test_seed_fraction": context.test_seed_fraction,
        "test_seeds": test_seed_kind(context.config.annotation),
        "intensity_channel": test.channels[0], **memory.report()}, reports, summary)
