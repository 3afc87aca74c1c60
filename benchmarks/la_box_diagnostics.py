"""Diagnostics of the 3D-box objective on the left atrium (validation volumes of training patients only).

    python benchmarks/la_box_diagnostics.py '{"box_prior": "ellipse", "box_prior_margin": 0.5}' 800 --png out.png

trains on the 16 training volumes of ``benchmarks/configs/la_val_split.json`` (one tight 3D box each,
``la_cpu.json``'s 1.25 mm grid, bf16, plus the given TrainConfig options) and prints, for each of the 4
validation volumes: Dice, predicted and true volume (mL), the false positives inside and outside the
box and the false negatives (mL). Where the errors lie says which prior is missing: false positives
inside the box = the box does not say which bright structure is the atrium; outside = emptiness is
not learnt; false negatives = the fill or tightness pressure is too weak.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
from _cases import boxed_dataset

from WeakSegLib import load_dataset
from WeakSegLib.evaluation.metrics import dice
from WeakSegLib.training import TrainConfig, train

SPLIT = "benchmarks/configs/la_val_split.json"
BASE = {"device": "cpu", "bf16": True, "target_spacing": [1.25, 1.25, 1.25], "log_every": 100}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("options", nargs="?", default="{}", help="JSON TrainConfig options over the base")
    p.add_argument("iterations", nargs="?", type=int, default=800)
    p.add_argument("--png", help="overlay of the validation volumes' central slices")
    args = p.parse_args()
    split = json.load(open(SPLIT))
    ds = load_dataset("../shared/data/la")
    val = [c for c in ds.cases if c.group in set(split["test"])]
    config = TrainConfig.from_layers(BASE, {"iterations": args.iterations}, json.loads(args.options))
    t0 = time.perf_counter()
    result = train(boxed_dataset(ds, set(split["train"])), config)
    print(f"trained {args.iterations} iterations in {time.perf_counter() - t0:.0f} s")
    for h in result.history[:: max(1, len(result.history) // 8)]:
        if "terms" in h:
            print(h["iteration"], {k: round(v, 3) for k, v in h["terms"].items()}, h.get("violations"))
    rows, preds = [], []
    for case in val:
        pred = result.model.predict(case.image, largest_component=True).labels.array > 0
        gt = case.ground_truth.array > 0
        ml = float(np.prod(case.ground_truth.geometry.spacing_zyx)) / 1000.0
        idx = np.argwhere(gt)
        box = np.zeros_like(gt)
        box[tuple(slice(a, b + 1) for a, b in zip(idx.min(0), idx.max(0)))] = True
        fp, fn = pred & ~gt, gt & ~pred
        d = dice(pred.astype(np.int64), gt.astype(np.int64), [1])[1]
        rows.append(d)
        preds.append(pred)
        print(f"{case.id}: Dice {d:.3f}  predicted {pred.sum() * ml:.1f} mL  true {gt.sum() * ml:.1f} mL  "
              f"FP in box {(fp & box).sum() * ml:.1f}  FP outside {(fp & ~box).sum() * ml:.1f}  "
              f"FN {fn.sum() * ml:.1f} mL")
    print(f"mean Dice {np.mean(rows):.3f} ({len(val)} validation volumes)")
    if args.png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(len(val), 3, figsize=(13, 3.6 * len(val)))
        for r, (case, pred) in enumerate(zip(val, preds)):
            img = case.image.array[0] if case.image.array.ndim == 4 else case.image.array
            gt = case.ground_truth.array > 0
            centre = np.argwhere(gt).mean(0).astype(int)
            for a in range(3):
                sl = [slice(None)] * 3
                sl[a] = centre[a]
                ax[r, a].imshow(img[tuple(sl)], cmap="gray")
                ax[r, a].contour(gt[tuple(sl)], [0.5], colors="lime")
                ax[r, a].contour(pred[tuple(sl)], [0.5], colors="red")
                ax[r, a].set_title(f"{case.id[:10]} axis {a} (green truth, red prediction)", fontsize=8)
                ax[r, a].axis("off")
        fig.tight_layout()
        fig.savefig(args.png, dpi=60)


if __name__ == "__main__":
    main()
