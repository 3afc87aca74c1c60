"""The trained methods (``weakseg``, ``pce``, ``naive``, ``full``): one training each, same network and budget.

Each trains on the training volumes with its objective, predicts the test volumes with the model at
the end of the budget, and scores weight snapshots taken at fixed budget fractions for the
Dice-vs-time curve (evaluated after training, so they cost no training time).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence

import numpy as np

from WeakSegLib.bench.annotations import naive_partial_dataset
from WeakSegLib.bench.config import BenchConfig
from WeakSegLib.bench.context import BenchContext, TrainedWeakSeg
from WeakSegLib.bench.memory import MemorySampler
from WeakSegLib.bench.scoring import class_dice, dice_only, evaluate_labels, mean_dice, method_record, predict_all

OBJECTIVES = {"weakseg": "auto", "pce": "pce", "naive": "auto", "full": "full"}


class WeightSnapshots:
    """Trainer callback: copies the weights (to the CPU) when given fractions of the budget are reached.

    Checked before every step (``on_iteration_start``): a fraction first reached by the last step of
    the budget is not snapshotted, the final model stands for it.  ``prepare_seconds`` is the
    trainer's clock when the first step starts (data preparation).  ``snapshots``: dicts with
    ``fraction``, ``iteration``, ``seconds`` and ``state`` (the network's state dict).
    """

    def __init__(self, fractions: Sequence[float] = ()):
        self._pending = sorted(float(f) for f in fractions)
        self.snapshots: list[dict] = []
        self.prepare_seconds: float | None = None

    def on_iteration_start(self, trainer) -> None:
        if self.prepare_seconds is None:
            self.prepare_seconds = trainer.elapsed()
        if self._pending and trainer.iteration > 0:
            done = trainer.fraction_done()
            if done >= self._pending[0]:
                while self._pending and done >= self._pending[0]:
                    self._pending.pop(0)
                net = trainer.dist.unwrap(trainer.network)
                self.snapshots.append({
                    "fraction": round(done, 4), "iteration": trainer.iteration, "seconds": trainer.elapsed(),
                    "state": {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}})


def bench_train_config(config: BenchConfig, objective: str, **overrides):
    """The TrainConfig of a trained method: the run's budget, device, seed and options, its objective;
    the learning mode applies to WeakSeg's own objective only (the baselines train in ``standard``)."""
    from WeakSegLib.training import TrainConfig

    run = {"device": config.device, "seed": config.seed, "objective": objective}
    if config.minutes is not None or config.iterations is not None:
        run.update(minutes=config.minutes, iterations=config.iterations)
    if objective != "auto" or config.mode == "standard":   # the baselines never use a learning mode
        run.update({"mode": "standard", "mode_options": {}})
    else:
        run["mode"] = config.mode
    return TrainConfig.from_layers(config.train_options, run, overrides)


def _model_from_state(trainer, state: dict):
    from WeakSegLib.model import Model
    from WeakSegLib.networks.planning import build_network

    net = build_network(trainer.plan)
    net.load_state_dict(state)
    net.to(trainer.device).eval()
    return Model(net, trainer.plan, trainer.preprocessing, trainer.dataset.classes, trainer.config)


def _curve(trainer, snapshots: WeightSnapshots, result, summary: dict, context: BenchContext) -> list[dict]:
    """Mean test Dice at each snapshot, then at the end of the budget."""
    curve = []
    for snap in snapshots.snapshots:   # Dice only: HD95 of an early, noisy prediction is slow and not plotted
        snap_labels, _ = predict_all(_model_from_state(trainer, snap["state"]), context.test,
                                     context.config.largest_component)
        per_class = dice_only(snap_labels, context.test)
        curve.append({"fraction": snap["fraction"], "iteration": snap["iteration"],
                      "seconds": round(snap["seconds"], 2), "mean_dice": float(np.mean(list(per_class.values()))),
                      "dice_per_class": per_class})
    curve.append({"fraction": 1.0, "iteration": result.iterations, "seconds": round(result.seconds, 2),
                  "mean_dice": mean_dice(summary), "dice_per_class": class_dice(summary)})
    return curve


def run_loaded_weakseg(context: BenchContext) -> dict:
    """The ``weakseg`` method from a trained model folder (``--model``): scored as it is, no training."""
    from pathlib import Path

    from WeakSegLib.model import Model

    cfg = context.config
    model = Model.load(cfg.model, device="cuda" if context.cuda else "cpu")
    if model.class_names != context.test.class_names:
        raise ValueError(f"The model '{cfg.model}' has classes {model.class_names}, the dataset "
                         f"{context.test.class_names}; give a model trained on this kind of data.")
    with MemorySampler(cuda=context.cuda) as memory:
        labels, predict_seconds = predict_all(model, context.test, cfg.largest_component)
    reports, summary = evaluate_labels(labels, context.test)
    context.weakseg = TrainedWeakSeg(model, 0.0, Path(cfg.model))
    return method_record("weakseg", {
        "status": "loaded", "model": str(cfg.model), "plan": model.plan.to_dict(), "train_seconds": 0.0,
        "train_iterations": None, "predict_seconds": round(predict_seconds, 2),
        "predict_seconds_per_volume": round(predict_seconds / len(context.test), 3),
        "annotated_fraction": None, **memory.report(), "curve": []}, reports, summary)


def run_trained(name: str, context: BenchContext) -> dict:
    """Train method ``name`` (one of ``OBJECTIVES``) and score it; ``weakseg`` also fills ``context.weakseg``
    (or, with ``--model``, is that model folder)."""
    from WeakSegLib.training.trainer import Trainer, TrainingError

    cfg = context.config
    if name == "weakseg" and cfg.model:
        return run_loaded_weakseg(context)
    if name == "pce" and not any(c.annotation is not None and c.annotation.num_annotated_voxels()
                                 for c in context.train.cases):
        return method_record(name, {"status": "skipped", "reason": f"plain pCE needs annotated voxels; the "
                                    f"'{cfg.annotation}' annotation has none"})
    train = context.train
    if name == "naive":
        if cfg.annotation != "partial":
            return method_record(name, {"status": "skipped", "reason": "the naive baseline is for '--annotation "
                                        "partial' (missing classes read as background)"})
        train = naive_partial_dataset(train)
    tcfg = bench_train_config(cfg, OBJECTIVES[name])
    snapshots = WeightSnapshots(cfg.curve_fractions)
    with MemorySampler(cuda=context.cuda) as memory:
        wall = time.monotonic()
        trainer = Trainer(train, tcfg, callbacks=[snapshots])
        try:
            result = trainer.fit()
        except TrainingError as exc:
            return method_record(name, {"status": "failed", "reason": str(exc)})
        train_wall = time.monotonic() - wall
        labels, predict_seconds = predict_all(result.model, context.test, cfg.largest_component)
    reports, summary = evaluate_labels(labels, context.test)
    curve = _curve(trainer, snapshots, result, summary, context)
    fraction = 1.0 if name == "full" else context.train_fraction
    record = method_record(name, {
        "status": result.status, "objective": tcfg.objective, "objective_terms": trainer.term_names,
        "plan": trainer.plan.to_dict(), "train_seconds": round(result.seconds, 2),
        "prepare_seconds": None if snapshots.prepare_seconds is None else round(snapshots.prepare_seconds, 2),
        "train_wall_seconds": round(train_wall, 2), "train_iterations": result.iterations,
        "predict_seconds": round(predict_seconds, 2),
        "predict_seconds_per_volume": round(predict_seconds / len(context.test), 3),
        "annotated_fraction": fraction, **memory.report(), "curve": curve}, reports, summary)
    if name == "weakseg":
        model_dir = None
        if "interactive-finetune" in cfg.methods:
            model_dir = result.model.save(context.workdir / "weakseg-model")
        context.weakseg = TrainedWeakSeg(result.model, result.seconds, model_dir)
    del trainer, result, snapshots
    gc.collect()
    return record
