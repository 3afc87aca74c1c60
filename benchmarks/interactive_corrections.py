"""Corrections on the volume being annotated: Dice after 0-5 corrective strokes and NoC@85 / NoC@90.

    python benchmarks/interactive_corrections.py --model ../models/acdc_cohort48 \\
        --split benchmarks/configs/acdc_interactive_split.json --out benchmarks/results/acdc_corrections
    python benchmarks/interactive_corrections.py --without-model \\
        --split benchmarks/configs/acdc_interactive_split.json --out benchmarks/results/acdc_corrections_without_model

Each test volume starts from its real scribbles; a simulated user then paints one stroke (a disk of
``--radius`` pixels at the innermost pixel of the largest wrong 2D region, with the true label there:
:mod:`WeakSegLib.bench.corrections`) after each result, and the method recomputes from all strokes.
Methods: Slicer's Grow-from-seeds; with ``--model``, WeakSeg's completion of the strokes with the cohort
model (:func:`WeakSegLib.inference.strokes.refine_with_seeds`, largest component per class, the painted
voxels kept), the model's probabilities computed once per volume; with ``--without-model``, WeakSeg's
completion of the strokes without a model (:func:`WeakSegLib.inference.geodesic.segment_from_strokes`,
largest component per class).  Writes ``corrections.json``,
``corrections.md`` and ``dice_vs_corrections.png``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from WeakSegLib.bench.corrections import number_of_corrections, simulate_corrections
from WeakSegLib.bench.split import load_groups, read_split_groups
from WeakSegLib.inference.geodesic import segment_from_strokes
from WeakSegLib.inference.strokes import TRUSTED_PRIOR_WEIGHT, refine_with_seeds
from WeakSegLib.model import Model
from WeakSegLib.mrml import grow_from_seeds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="../shared/data/acdc")
    p.add_argument("--model", default=None, help="the cohort model (method 'weakseg')")
    p.add_argument("--without-model", action="store_true", help="method 'geodesic': the strokes completed alone")
    p.add_argument("--split", required=True, help='JSON {"train": [...], "test": [...]}: the test groups are used')
    p.add_argument("--corrections", type=int, default=5)
    p.add_argument("--radius", type=int, default=3, help="stroke radius in pixels")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if not args.model and not args.without_model:
        p.error("give --model, --without-model or both")
    data = load_groups(args.dataset, read_split_groups(args.split, "test"))
    model = Model.load(args.model) if args.model else None
    classes = list(range(1, data.num_classes))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=False)
    names = ["growcut"] + (["weakseg"] if model else []) + (["geodesic"] if args.without_model else [])
    rows, seconds = {}, {name: [] for name in names}
    for case in data.cases:
        image, spacing = case.image.array, case.image.geometry.spacing_zyx
        truth = case.ground_truth.array
        probabilities = model.predict(case.image, return_probabilities=True).probabilities.array if model else None

        def geodesic(seeds, image=image, spacing=spacing):
            start = time.monotonic()
            labels = segment_from_strokes(image, seeds, spacing, data.num_classes, largest_component=True)
            seconds["geodesic"].append(time.monotonic() - start)
            return labels

        def weakseg(seeds, probabilities=probabilities, image=image, spacing=spacing):
            start = time.monotonic()
            labels = refine_with_seeds(probabilities, image, seeds, spacing, model.plan.dims,
                                       trusted_prior_weight=TRUSTED_PRIOR_WEIGHT, largest_component=True)
            seconds["weakseg"].append(time.monotonic() - start)
            return labels

        def growcut(seeds, image=image, spacing=spacing):
            start = time.monotonic()
            grown = grow_from_seeds(image, np.where(seeds < 0, 0, seeds + 1).astype(np.int16), spacing)
            seconds["growcut"].append(time.monotonic() - start)
            return np.clip(grown.astype(np.int16) - 1, 0, None)

        seeds = case.annotation.labels.astype(np.int16)
        rows[case.id] = {name: simulate_corrections(fn, truth, seeds, classes, args.corrections, args.radius)
                         for name, fn in (("growcut", growcut), ("weakseg", weakseg), ("geodesic", geodesic))
                         if name in names}
        print(case.id, {k: [round(v, 3) for v in s] for k, s in rows[case.id].items()}, flush=True)
    summary = {}
    for name in names:
        curves = np.array([r[name] for r in rows.values()])
        summary[name] = {"mean_dice_after": [float(v) for v in curves.mean(0)],
                         "noc85": float(np.mean([number_of_corrections(c, 0.85) for c in curves])),
                         "noc90": float(np.mean([number_of_corrections(c, 0.90) for c in curves])),
                         "reach90": int(sum(number_of_corrections(c, 0.90) <= args.corrections for c in curves)),
                         "seconds_per_update": float(np.mean(seconds[name]))}
    record = {"dataset": args.dataset, "model": args.model, "split": args.split, "corrections": args.corrections,
              "radius_px": args.radius, "volumes": len(rows), "summary": summary, "per_volume": rows}
    (out / "corrections.json").write_text(json.dumps(record, indent=2))
    labels = {"growcut": "Grow from seeds", "weakseg": "WeakSeg (cohort model + strokes)",
              "geodesic": "WeakSeg without a model (stroke classifier + geodesic)"}
    lines = [f"# Corrections on {len(rows)} volumes (first strokes: their real scribbles)", "",
             "| method | " + " | ".join(f"Dice after {k}" for k in range(args.corrections + 1))
             + " | NoC@85 | NoC@90 | reach 0.90 | s per update |",
             "|---" * (args.corrections + 6) + "|"]
    for name, s in summary.items():
        lines.append(f"| {labels[name]} | " + " | ".join(f"{v:.3f}" for v in s["mean_dice_after"])
                     + f" | {s['noc85']:.2f} | {s['noc90']:.2f} | {s['reach90']} / {len(rows)} | "
                     f"{s['seconds_per_update']:.1f} |")
    lines += ["", f"NoC: mean number of corrective strokes to reach the Dice ({args.corrections + 1} when not "
              f"reached within {args.corrections})."]
    (out / "corrections.md").write_text("\n".join(lines) + "\n")
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for name, s in summary.items():
        ax.plot(range(args.corrections + 1), s["mean_dice_after"], "o-", label=labels[name])
    ax.set_xlabel("corrective strokes")
    ax.set_ylabel(f"mean Dice, {len(rows)} volumes")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "dice_vs_corrections.png", dpi=100)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
