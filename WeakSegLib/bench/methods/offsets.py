"""``weakseg-offsets``: the ``weakseg`` model of the run with class offsets chosen on other volumes.

The offsets (``--class-offsets``: a model folder calibrated by ``weakseg calibrate``, or a JSON file
``{"offsets": [...]}``) come from volumes outside the run's test split, typically the validation
patients of another model trained the same way; this measures whether they transfer to this run's
model.  The same network as ``weakseg``, so the two rows are paired volume by volume.
"""

from __future__ import annotations

from WeakSegLib.bench.context import BenchContext
from WeakSegLib.bench.memory import MemorySampler
from WeakSegLib.bench.scoring import evaluate_labels, method_record, predict_all


def run_weakseg_offsets(context: BenchContext) -> dict:
    """Predict the test volumes with the ``weakseg`` model and the configured class offsets."""
    cfg = context.config
    if context.weakseg is None:
        return method_record("weakseg-offsets", {"status": "skipped", "reason": "the weakseg model did not train"})
    model = context.weakseg.model
    if len(cfg.class_offsets) != len(model.classes):
        return method_record("weakseg-offsets", {
            "status": "failed", "reason": f"{len(cfg.class_offsets)} class offsets for a model of "
                                          f"{len(model.classes)} classes"})
    kept = model.calibration
    model.calibration = {"offsets": list(cfg.class_offsets), "source": cfg.class_offsets_source}
    try:
        with MemorySampler(cuda=context.cuda) as memory:
            labels, seconds = predict_all(model, context.test, cfg.largest_component)
    finally:
        model.calibration = kept
    reports, summary = evaluate_labels(labels, context.test)
    return method_record("weakseg-offsets", {
        "status": "completed", "train_seconds": None if cfg.model else context.weakseg.train_seconds,
        "predict_seconds": round(seconds, 2), "predict_seconds_per_volume": round(seconds / len(context.test), 3),
        "class_offsets": list(cfg.class_offsets), "class_offsets_source": cfg.class_offsets_source,
        "annotated_fraction": None if cfg.model else context.train_fraction, **memory.report()}, reports, summary)
