"""The annotated volume without a model: WeakSeg trained from scratch on the volume alone vs Grow-from-seeds.

    python benchmarks/interactive_without_model.py --seconds 45 --every 4

For every ``--every``-th validation volume of ``benchmarks/configs/acdc_val_split.json`` (training
patients only), with its real scribbles: Grow-from-seeds, the random walker on the scribbles alone,
WeakSeg trained for ``--seconds`` on that volume only (the Segment Editor effect's path without a
model, CRF off), and that network's prediction completed by the scribbles
(:func:`WeakSegLib.inference.strokes.refine_with_seeds`).  Prints one line per volume and the means.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from WeakSegLib.bench.split import load_groups, read_split_groups
from WeakSegLib.evaluation.metrics import dice
from WeakSegLib.inference.postprocessing import keep_largest_component
from WeakSegLib.inference.strokes import TRUSTED_PRIOR_WEIGHT, refine_with_seeds
from WeakSegLib.mrml import grow_from_seeds
from WeakSegLib.training import TrainConfig, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=45.0)
    p.add_argument("--every", type=int, default=4)
    args = p.parse_args()
    data = load_groups("../shared/data/acdc", read_split_groups("benchmarks/configs/acdc_val_split.json", "test"))
    classes = list(range(1, data.num_classes))

    def mean_dice(labels, truth):
        per_class = dice(labels, truth, classes)
        return float(np.mean([per_class[c] for c in classes]))

    rows = []
    for case in data.cases[:: args.every]:
        seeds = case.annotation.labels.astype(np.int16)
        image, spacing, truth = case.image.array, case.image.geometry.spacing_zyx, case.ground_truth.array
        row = {"id": case.id}
        grown = grow_from_seeds(image, np.where(seeds < 0, 0, seeds + 1).astype(np.int16), spacing)
        row["growcut"] = mean_dice(np.clip(grown.astype(np.int16) - 1, 0, None), truth)
        flat = np.full((*seeds.shape, data.num_classes), 1.0 / data.num_classes, np.float32)
        row["walker_on_strokes"] = mean_dice(refine_with_seeds(flat, image, seeds, spacing, 2, 0.03), truth)
        start = time.perf_counter()
        config = TrainConfig.from_layers({"device": "cpu", "seed": 0, "minutes": args.seconds / 60.0},
                                         {"weights": {"crf": 0.0}})
        result = train(data.subset([case.id]), config)
        probabilities = result.model.predict(case.image, return_probabilities=True).probabilities.array
        row["seconds"], row["iterations"] = time.perf_counter() - start, result.iterations
        row["network"] = mean_dice(keep_largest_component(probabilities.argmax(-1).astype(np.int16)), truth)
        completed = refine_with_seeds(probabilities, image, seeds, spacing, 2,
                                      trusted_prior_weight=TRUSTED_PRIOR_WEIGHT, largest_component=True)
        row["network_completed"] = mean_dice(completed, truth)
        rows.append(row)
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    print("mean", {k: round(float(np.mean([r[k] for r in rows])), 3) for k in rows[0] if k != "id"})


if __name__ == "__main__":
    main()
