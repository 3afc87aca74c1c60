"""How right the boxes' ellipse labels are (``box_prior: "ellipse"``), against the ground truth; no training.

For each volume: simulated tight boxes (per slice for ACDC, one 3D box for the left atrium), the labels
``WeakSegLib.training.box_prior.ellipse_labels`` draws from them on the image grid, and per margin:
the fraction of the labelled box voxels that are right, per class, and the fraction left unknown.

    python benchmarks/box_labels_accuracy.py --dataset ../shared/data/acdc --per-slice \
        --groups-from benchmarks/configs/acdc_val_split.json --max-groups 16
    python benchmarks/box_labels_accuracy.py --dataset ../shared/data/la --max-groups 10 --margins 0.2,0.5
"""

from __future__ import annotations

import argparse

import numpy as np
from _cases import training_cases

from WeakSegLib import load_dataset
from WeakSegLib.data.simulate import simulate_boxes
from WeakSegLib.training.box_prior import ellipse_labels


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--per-slice", action="store_true", help="one box per 2D component per z slice")
    p.add_argument("--groups-from", help="split JSON: use its 'train' groups (training patients only)")
    p.add_argument("--max-groups", type=int, default=16)
    p.add_argument("--margins", default="0.0,0.1,0.2,0.3")
    p.add_argument("--keep-overlaps", action="store_true",
                   help="label the crossing overlaps of boxes of different classes too (ellipse_labels' "
                        "overlap_unknown=False)")
    args = p.parse_args()
    data = load_dataset(args.dataset)
    cases = training_cases(data, args.groups_from, args.max_groups)
    k = data.num_classes
    for margin in (float(m) for m in args.margins.split(",")):
        right, unknown, per_class, covered = [], [], {c: [] for c in range(k)}, {c: [] for c in range(1, k)}
        for case in cases:
            gt = case.ground_truth.array
            drawn = simulate_boxes(case.ground_truth, k, per_slice=args.per_slice).boxes
            boxes = [(b.class_id, b.start, b.stop) for b in drawn]
            labels = ellipse_labels(boxes, gt.shape, margin, overlap_unknown=not args.keep_overlaps).numpy()
            in_box = np.zeros(gt.shape, bool)
            for _, start, stop in boxes:
                in_box[tuple(slice(a, b) for a, b in zip(start, stop))] = True
            known = in_box & (labels != -1)
            right.append(float((labels[known] == gt[known]).mean()))
            unknown.append(float((labels[in_box] == -1).mean()))
            for c in range(k):
                sel = known & (labels == c)
                if sel.any():
                    per_class[c].append(float((gt[sel] == c).mean()))
                if c > 0 and (gt == c).any():
                    covered[c].append(float((labels[gt == c] == c).mean()))
        classes = ", ".join(f"{data.class_names[c]} {np.mean(v):.3f}" for c, v in per_class.items() if v)
        print(f"margin {margin:g}: {len(cases)} volumes; labelled box voxels right {np.mean(right):.3f} "
              f"(per label: {classes}); unknown {np.mean(unknown):.3f} of the box voxels; share of each "
              "structure labelled as itself: " + ", ".join(f"{data.class_names[c]} {np.mean(v):.3f}"
                                                           for c, v in covered.items() if v))


if __name__ == "__main__":
    main()
