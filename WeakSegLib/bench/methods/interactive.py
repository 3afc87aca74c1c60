"""The interactive methods: the trained ``weakseg`` model plus each test volume's own seeds.

``interactive-seeds``: the network's probabilities as a prior and the seeds as hard labels, combined
by a random walker with prior, trusting the network on the slices where it agrees with the seeds
(:func:`~WeakSegLib.inference.strokes.refine_with_seeds`; what the Segment Editor effect does with a
trained model).
``interactive-finetune``: the model fine-tuned briefly on the volume's seeds, then applied to it.
Both keep the seeded voxels' labels.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from WeakSegLib.bench.annotations import test_seed_kind
from WeakSegLib.bench.context import BenchContext
from WeakSegLib.bench.memory import MemorySampler
from WeakSegLib.bench.methods.trained import bench_train_config
from WeakSegLib.bench.scoring import evaluate_labels, mean_dice, method_record
from WeakSegLib.data.annotation import UNKNOWN, WeakAnnotation
from WeakSegLib.data.dataset import Case, Dataset
from WeakSegLib.inference.strokes import refine_with_seeds, stroke_agreement

logger = logging.getLogger(__name__)


def run_interactive_seeds(context: BenchContext) -> dict:
    """Refine the ``weakseg`` model's probabilities with the test seeds (plus the prior-weight sweep, reported)."""
    cfg = context.config
    test = context.test
    if context.weakseg is None:
        return method_record("interactive-seeds", {"status": "skipped", "reason": "the weakseg model did not train"})
    model = context.weakseg.model
    labels, refine = {}, []
    sweep = [g for g in cfg.prior_weight_sweep if g != cfg.prior_weight]
    swept: dict[float, dict[str, np.ndarray]] = {g: {} for g in sweep}
    predict_seconds = 0.0
    kept = {}
    with MemorySampler(cuda=context.cuda) as memory:
        for case in test.cases:   # one volume at a time: probabilities are (z, y, x, K) floats
            seeds = context.test_seeds[case.id]
            start = time.monotonic()
            prob = model.predict(case.image, return_probabilities=True).probabilities.array
            predict_seconds += time.monotonic() - start
            args = (prob, case.image.array, seeds, case.image.geometry.spacing_zyx, model.plan.dims)
            start = time.monotonic()
            labels[case.id] = refine_with_seeds(*args, cfg.prior_weight, cfg.walker_beta, cfg.trusted_prior_weight,
                                                cfg.stroke_agreement, cfg.largest_component)
            refine.append(time.monotonic() - start)
            kept[case.id] = stroke_agreement(labels[case.id], seeds)
            for g in sweep:
                swept[g][case.id] = refine_with_seeds(*args, g, cfg.walker_beta,
                                                      largest_component=cfg.largest_component)
    reports, summary = evaluate_labels(labels, test)
    sweep_report = [{"prior_weight": g, "mean_dice": mean_dice(evaluate_labels(swept[g], test)[1])}
                    for g in sweep]
    return method_record("interactive-seeds", {
        "status": "completed", "train_seconds": None if cfg.model else context.weakseg.train_seconds,
        "predict_seconds": round(predict_seconds + sum(refine), 2),
        "predict_seconds_per_volume": round((predict_seconds + sum(refine)) / len(test), 3),
        "refine_seconds_per_volume": round(float(np.mean(refine)), 3),
        "prior_weight": cfg.prior_weight, "trusted_prior_weight": cfg.trusted_prior_weight,
        "stroke_agreement": cfg.stroke_agreement, "walker_beta": cfg.walker_beta, "prior_weight_sweep": sweep_report,
        "seeds_kept_min": min((v for v in kept.values() if v is not None), default=None),
        "annotated_fraction": None if cfg.model else context.train_fraction,
        "test_seed_fraction": context.test_seed_fraction,
        "test_seeds": test_seed_kind(cfg.annotation), **memory.report()}, reports, summary)


def _finetune_config(context: BenchContext):
    """Fine-tuning options: exactly the trained model's plan, so the seeds' volume is prepared on the
    model's grid (a different plan would make the trainer swap in the loaded plan after preparing)."""
    cfg = context.config
    plan = context.weakseg.model.plan
    spacing = plan.target_spacing_zyx
    overrides = {"minutes": None, "iterations": cfg.finetune_iterations,
                 "learning_rate": cfg.finetune_learning_rate, "init_model": str(context.weakseg.model_dir),
                 "dims": plan.dims, "patch_size": list(plan.patch_size), "batch_size": plan.batch_size,
                 "base_filters": plan.filters[0], "target_spacing": [spacing[2], spacing[1], spacing[0]],
                 "checkpoint_every": 0, "validate_every": 0, "mode": "standard", "mode_options": {}}
    return bench_train_config(cfg, "auto", **overrides)


def run_interactive_finetune(context: BenchContext) -> dict:
    """Fine-tune the ``weakseg`` model on each test volume's seeds and predict that volume."""
    from WeakSegLib.training.trainer import Trainer

    cfg = context.config
    test = context.test
    if context.weakseg is None or context.weakseg.model_dir is None:
        return method_record("interactive-finetune", {"status": "skipped",
                                                      "reason": "the weakseg model did not train"})
    model = context.weakseg.model
    plan = model.plan
    tcfg = _finetune_config(context)
    labels, per_volume = {}, []
    with MemorySampler(cuda=context.cuda) as memory:
        for case in test.cases:
            seeds = context.test_seeds[case.id]
            start = time.monotonic()
            if not np.any(seeds != UNKNOWN):   # nothing to fine-tune on: the model as it is
                labels[case.id] = model.predict(case.image).labels.array
                per_volume.append(time.monotonic() - start)
                continue
            annotation = WeakAnnotation(case.image.geometry, test.num_classes, seeds, allow_empty=True)
            one = Dataset(test.classes, [Case(case.id, case.image, annotation, None, case.group)],
                          test.channels, test.modality, dict(context.train.priors), "finetune")
            trainer = Trainer(one, tcfg)
            tuned = trainer.fit().model
            if tuned.plan.to_dict() != plan.to_dict():
                logger.warning("Fine-tuning on %s planned %s instead of the model's plan.", case.id, tuned.plan)
            out = tuned.predict(case.image).labels.array.astype(np.int16)
            known = seeds != UNKNOWN
            out[known] = seeds[known]
            labels[case.id] = out
            per_volume.append(time.monotonic() - start)
            del trainer, tuned
    reports, summary = evaluate_labels(labels, test)
    return method_record("interactive-finetune", {
        "status": "completed", "train_seconds": None if cfg.model else context.weakseg.train_seconds,
        "predict_seconds": round(sum(per_volume), 2),
        "predict_seconds_per_volume": round(float(np.mean(per_volume)), 3),
        "finetune_iterations": cfg.finetune_iterations,
        "finetune_learning_rate": cfg.finetune_learning_rate,
        "annotated_fraction": None if cfg.model else context.train_fraction,
        "test_seed_fraction": context.test_seed_fraction,
        "test_seeds": test_seed_kind(cfg.annotation), **memory.report()}, reports, summary)
