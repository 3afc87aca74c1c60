"""How right the random-walker labels propagated from simulated clicks are, against the ground truth; no training.

For each volume: the clicks ``weakseg bench --annotation points`` simulates (per slice, seeded as the
benchmark seeds its training volumes), their propagation by
``WeakSegLib.training.propagation.propagate_scribbles`` (the ``propagated`` term's targets), and, with the
background clicked once per volume and on every slice: per class, the precision of the propagated
labels (the fraction of voxels given that class that truly are) and their recall (the fraction of the
class's ground-truth voxels that received it).

    python benchmarks/points_labels_accuracy.py --dataset ../shared/data/acdc \
        --groups-from benchmarks/configs/acdc_val_split.json --max-groups 6
"""

from __future__ import annotations

import argparse

import numpy as np
from _cases import training_cases

from WeakSegLib import load_dataset
from WeakSegLib.bench.annotations import _case_seed
from WeakSegLib.config import TrainConfig
from WeakSegLib.data.simulate import simulate_points
from WeakSegLib.training.propagation import propagate_scribbles


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--groups-from", help="split JSON: use its 'train' groups (training patients only)")
    p.add_argument("--max-groups", type=int, default=6)
    p.add_argument("--points-per-object", type=int, default=2)
    p.add_argument("--point-radius", type=float, default=2.0, help="mm")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    data = load_dataset(args.dataset)
    cases = training_cases(data, args.groups_from, args.max_groups)
    k = data.num_classes
    defaults = TrainConfig()
    for per_slice_background in (False, True):
        counts = np.zeros((k, k))    # rows: propagated label, columns: ground truth
        truth = np.zeros(k)
        for case in cases:
            gt = case.ground_truth.array
            clicks = simulate_points(case.ground_truth, k, n_per_object=args.points_per_object,
                                     radius_mm=args.point_radius, seed=_case_seed(args.seed, case.id, "train"),
                                     per_slice=True, background_per_slice=per_slice_background)
            labels = propagate_scribbles(case.image.array, clicks.labels, 2, defaults.propagation_beta,
                                         defaults.propagation_threshold, case.image.geometry.spacing_zyx)
            for a in range(k):
                truth[a] += np.count_nonzero(gt == a)
                for b in range(k):
                    counts[a, b] += np.count_nonzero((labels == a) & (gt == b))
        precision = np.diag(counts) / np.maximum(counts.sum(1), 1)
        recall = np.diag(counts) / np.maximum(truth, 1)
        where = "on every slice" if per_slice_background else "once per volume"
        print(f"background clicked {where}: {len(cases)} volumes")
        for c in range(k):
            print(f"  {data.class_names[c]:>12}: precision {precision[c]:.3f}, recall {recall[c]:.3f} "
                  f"({int(counts[c].sum())} voxels labelled)")


if __name__ == "__main__":
    main()
