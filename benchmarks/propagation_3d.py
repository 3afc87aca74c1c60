"""Random-walker propagation of 3D scribbles: solvers and grids compared on time and accuracy.

For each training volume: the scribbles ``weakseg bench --with-scribbles`` simulates (seeded as the
benchmark seeds its training volumes), propagated by
``WeakSegLib.training.propagation.propagate_scribbles`` four ways: at the image's own resolution
with the Jacobi-preconditioned solve (``cg_j``) and with the multigrid one (``cg_mg``), each then
resampled to the network grid (nearest), and on the network grid itself (``cg_mg``) from the scribbles
resampled nearest or whole (the last is what training does: ``WeakSegLib.training.data.propagated_labels``,
called here). Each is scored on the network grid against the
ground truth resampled there: per class, the precision of the propagated labels (the fraction of
voxels given that class that truly are) and their recall (the fraction of the class's voxels that
received it), and the seconds each took. No training.

    OMP_NUM_THREADS=1 python benchmarks/propagation_3d.py --dataset ../shared/data/la \
        --groups-from benchmarks/configs/la_val_split.json --max-groups 8 --slice-fraction 0.1 \
        --config benchmarks/configs/la_boxes_region.json --out benchmarks/results/propagation_3d/la.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
from _cases import training_cases

from WeakSegLib import load_dataset
from WeakSegLib.bench.annotations import _case_seed
from WeakSegLib.config import TrainConfig
from WeakSegLib.data.dataset import Case, Dataset
from WeakSegLib.data.simulate import simulate
from WeakSegLib.networks.planning import plan_training
from WeakSegLib.training.data import propagated_labels
from WeakSegLib.training.propagation import propagate_scribbles
from WeakSegLib.transforms.preprocessing import Preprocessing


def _draw(path: str, image: np.ndarray, truth: np.ndarray, strokes: np.ndarray, labels: dict, case_id: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scribbled = [z for z in range(truth.shape[0]) if (strokes[z] == 1).any()]
    rows = [scribbled[len(scribbled) // 2], min(scribbled[len(scribbled) // 2] + 2, truth.shape[0] - 1)]
    panels = [("strokes on the network grid", strokes)] + list(labels.items())
    fig, axes = plt.subplots(len(rows), len(panels), figsize=(3.2 * len(panels), 3 * len(rows)), squeeze=False)
    for r, z in enumerate(rows):
        for c, (title, lab) in enumerate(panels):
            ax = axes[r, c]
            ax.imshow(image[z], cmap="gray")
            ax.imshow(np.ma.masked_where(lab[z] < 0, lab[z]), cmap="coolwarm", alpha=0.5, vmin=0, vmax=1)
            ax.contour(truth[z] == 1, [0.5], colors="yellow", linewidths=0.8)
            ax.set_title(f"{title}, z {z}", fontsize=8)
            ax.axis("off")
    fig.suptitle(f"{case_id}: random-walker labels (red atrium, blue background, unlabelled: unsure)", fontsize=9)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", required=True)
    p.add_argument("--groups-from", help="split JSON: use its 'train' groups (training patients only)")
    p.add_argument("--max-groups", type=int, default=16)
    p.add_argument("--slice-fraction", type=float, default=0.1)
    p.add_argument("--config", help="training config JSON (its target_spacing sets the network grid)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--variants", help="';'-separated subset of the variants to run (default: all)")
    p.add_argument("--out", help="write the figures as JSON here")
    p.add_argument("--png", help="draw the first volume's middle scribbled slice and the next but one, each variant's "
                                 "labels over the image (red atrium / blue background, yellow: ground truth), here")
    args = p.parse_args()
    data = load_dataset(args.dataset)
    cases = training_cases(data, args.groups_from, args.max_groups)
    config = TrainConfig.from_dict(json.loads(Path(args.config).read_text())) if args.config else TrainConfig()
    subset = Dataset(data.classes, cases, data.channels, data.modality, dict(data.priors), data.name, data.root)
    plan = plan_training(subset, config)
    if plan.dims != 3:
        raise SystemExit(f"The plan for {args.dataset} is {plan.dims}D; this compares 3D propagation only.")
    pre = Preprocessing(data.modality, plan.dims, plan.target_spacing_zyx, channel_names=data.channels)
    k = data.num_classes
    variants = ("image grid, cg_j", "image grid, cg_mg", "network grid, cg_mg", "network grid, cg_mg, whole strokes")
    chosen = [v for v in variants if not args.variants or v in args.variants.split(";")]
    counts = {v: np.zeros((k, k)) for v in variants}
    seconds = {v: [] for v in variants}
    truth = np.zeros(k)
    for case in cases:
        g = case.image.geometry
        ann = simulate(case.ground_truth, k, "scribbles", slice_fraction=args.slice_fraction,
                       seed=_case_seed(args.seed, case.id, "train:scribbles"))
        gt = pre.labels_to_network(case.ground_truth.array, g.shape, g.spacing_zyx).numpy()
        labels = {}
        for v in [v for v in variants[:2] if v in chosen]:
            t0 = time.perf_counter()
            native = propagate_scribbles(case.image.array, ann.labels, 3, config.propagation_beta,
                                         config.propagation_threshold, g.spacing_zyx, solver=v.split(", ")[1])
            labels[v] = pre.labels_to_network(native, g.shape, g.spacing_zyx).numpy()
            seconds[v].append(time.perf_counter() - t0)
        spacing = tuple(s * n / m for s, n, m in zip(g.spacing_zyx, g.shape, gt.shape))
        if variants[2] in chosen:
            t0 = time.perf_counter()
            image = pre.to_network(case.image).numpy()
            labels[variants[2]] = propagate_scribbles(
                image[0] if image.shape[0] == 1 else np.moveaxis(image, 0, -1),
                pre.labels_to_network(ann.labels, g.shape, g.spacing_zyx).numpy(), 3, config.propagation_beta,
                config.propagation_threshold, spacing, solver="cg_mg")
            seconds[variants[2]].append(time.perf_counter() - t0)
        if variants[3] in chosen:
            t0 = time.perf_counter()
            annotated = Case(case.id, case.image, ann, case.ground_truth, case.group)
            labels[variants[3]] = propagated_labels(annotated, pre.to_network(case.image), pre, config, spacing).numpy()
            seconds[variants[3]].append(time.perf_counter() - t0)
        for a in range(k):
            truth[a] += np.count_nonzero(gt == a)
            for v in chosen:
                for b in range(k):
                    counts[v][a, b] += np.count_nonzero((labels[v] == a) & (gt == b))
        if args.png and case is cases[0]:
            _draw(args.png, pre.to_network(case.image).numpy()[0], gt,
                  pre.strokes_to_network(ann.labels, g.shape, g.spacing_zyx).numpy(), labels, case.id)
        print(f"{case.id}: image {g.shape}, network {gt.shape}; "
              + ", ".join(f"{v} {seconds[v][-1]:.1f} s" for v in chosen), flush=True)
    result = {"dataset": args.dataset, "volumes": len(cases), "slice_fraction": args.slice_fraction,
              "target_spacing_zyx": list(plan.target_spacing_zyx),
              "command": "python " + " ".join(sys.argv), "variants": {}}
    for name in chosen:
        c = counts[name]
        precision = np.diag(c) / np.maximum(c.sum(1), 1)
        recall = np.diag(c) / np.maximum(truth, 1)
        result["variants"][name] = {
            "seconds_total": round(sum(seconds[name]), 1),
            "seconds_per_volume_median": round(float(np.median(seconds[name])), 2),
            "classes": {data.class_names[i]: {"precision": round(float(precision[i]), 4),
                                              "recall": round(float(recall[i]), 4)} for i in range(k)}}
        print(f"{name}: {sum(seconds[name]):.0f} s in all")
        for i in range(k):
            print(f"  {data.class_names[i]:>12}: precision {precision[i]:.3f}, recall {recall[i]:.3f}")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
