"""``weakseg demo``: the main job on the embedded synthetic phantom.

Five phantom volumes are generated (deterministic); four get simulated weak annotations
(scribbles on a third of the slices plus size ranges of +/-15% around the true sizes), the fifth
is held out.  WeakSeg trains on the four, segments the held-out volume (never annotated, never
seen in training) and a training volume, and writes:

* ``segmentation.nii.gz`` (held-out volume; largest connected component per class kept, as each
  phantom structure is one object) and its image/ground truth for viewing,
* ``report.json`` (per-class Dice, HD95, volumes, time, peak memory; held-out case = the figure),
* ``overlay.png`` (image, scribbles, prediction, ground truth on three slices),
* ``training_curve.png`` (loss terms and constraint violations over iterations),
* ``model/`` (the trained model, loadable with ``Model.load``).
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

import numpy as np

from WeakSegLib.data.dataset import Dataset
from WeakSegLib.data.phantom import PHANTOM_CLASSES, make_phantom_dataset
from WeakSegLib.data.simulate import combine, simulate_scribbles, simulate_size_ranges
from WeakSegLib.data.volume import write_volume
from WeakSegLib.evaluation.metrics import evaluate
from WeakSegLib.evaluation.reports import to_jsonable
from WeakSegLib.training import TrainConfig, train
from WeakSegLib.utils import atomic_write_json, peak_rss_mb

logger = logging.getLogger(__name__)

DEMO_SPACING = (1.2, 1.2, 4.0)


def build_demo_data(seed: int = 0, n_train: int = 4) -> tuple[Dataset, Dataset]:
    """(training dataset with simulated weak annotations, held-out dataset with ground truth only)."""
    # Thick slices (4 mm, as in many clinical MR series): planning picks a fast 2D network.
    phantoms = make_phantom_dataset(n_cases=n_train + 1, seed=seed, spacing=DEMO_SPACING)
    k = len(PHANTOM_CLASSES)
    train_cases = []
    for i, case in enumerate(phantoms.cases[:n_train]):
        scribbles = simulate_scribbles(case.ground_truth, k, seed=seed + i, slice_fraction=0.35)
        sizes = simulate_size_ranges(case.ground_truth, k, margin=0.15)
        case.annotation = combine(scribbles, sizes)
        train_cases.append(case)
    test_cases = phantoms.cases[n_train:]
    return (Dataset(phantoms.classes, train_cases, phantoms.channels, phantoms.modality, {}, "phantom-train"),
            Dataset(phantoms.classes, test_cases, phantoms.channels, phantoms.modality, {}, "phantom-test"))


def run_demo(out: Path, config: TrainConfig, progress=None, overwrite: bool = False) -> dict:
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"Output folder '{out}' exists and is not empty; pass --overwrite or another --out.")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.monotonic()
    train_set, test_set = build_demo_data(config.seed)
    fraction = train_set.annotated_fraction()
    logger.info("Phantom: %d training volumes (scribbles on %.2f%% of voxels + size ranges), %d held out",
                len(train_set), 100 * fraction, len(test_set))
    result = train(train_set, config, out / "model", progress=progress)
    t_train = time.monotonic() - t0
    model = result.model
    test = test_set.cases[0]
    t1 = time.monotonic()
    pred = model.predict(test.image, largest_component=True)
    t_pred = time.monotonic() - t1
    test_report = evaluate(pred.labels, test.ground_truth, model.class_names)
    train_case = train_set.cases[0]
    train_pred = model.predict(train_case.image, largest_component=True)
    train_report = evaluate(train_pred.labels, train_case.ground_truth, model.class_names)
    write_volume(pred.labels, out / "segmentation.nii.gz")
    write_volume(test.image, out / "image.nii.gz")
    write_volume(test.ground_truth, out / "ground_truth.nii.gz")
    report = {
        "test": {"case": test.id, **test_report},
        "training_case": {"case": train_case.id, **train_report},
        "annotated_fraction": fraction,
        "iterations": result.iterations,
        "seconds_training": round(t_train, 1),
        "seconds_predict": round(t_pred, 2),
        "seconds_total": round(time.monotonic() - t0, 1),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "device": model.summary.get("device"),
        "objective_terms": model.summary.get("objective_terms"),
        "config": config.to_dict(),
    }
    atomic_write_json(out / "report.json", to_jsonable(report))
    try:
        from WeakSegLib.evaluation.plots import plot_overlay, plot_training_curve

        title = f"Held-out phantom (Dice {test_report['mean']['dice']:.3f})"
        plot_overlay(test.image.array, None, pred.labels.array, test.ground_truth.array,
                     out / "overlay.png", model.classes, title=title,
                     extra=(train_case.image.array, train_case.annotation.labels, train_pred.labels.array,
                            train_case.ground_truth.array, "Training phantom with its scribbles"))
        plot_training_curve(result.history, out / "training_curve.png")
    except ImportError:
        logger.warning("matplotlib is not installed: no PNG written (pip install matplotlib)")
    report["test"]["mean_dice"] = float(np.nan_to_num(test_report["mean"]["dice"]))
    return report
