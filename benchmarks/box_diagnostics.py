"""Diagnostics of the box objective on ACDC's per-slice boxes (validation patients of training patients only).

    python benchmarks/box_diagnostics.py train '{"weights": {"crf": 0}}' 300 [--no-largest-component]
        trains on 24 of the validation split's training patients (ellipse labels on, plus the given
        options; --keep-overlaps: the ellipse labels without the crossing-overlap rule), prints loss
        terms and per-class violations, and the mean Dice on 6 of its validation
        patients; --png writes an overlay of one of them.
    python benchmarks/box_diagnostics.py gradients
        L2 norm and maximum of each term's gradient with respect to the logits of an untrained network on
        one volume batch: which term drives the first steps.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
from _cases import boxed_dataset

from WeakSegLib import load_dataset
from WeakSegLib.evaluation.metrics import dice
from WeakSegLib.training import TrainConfig, Trainer, train

SPLIT = "benchmarks/configs/acdc_val_split.json"
BASE = {"device": "cpu", "bf16": True, "box_prior": "ellipse", "box_prior_margin": 0.2, "log_every": 50}


def boxed(groups: set[str]):
    return boxed_dataset(load_dataset("../shared/data/acdc"), groups, per_slice=True)


def run_train(options: dict, iterations: int, largest_component: bool, png: str | None) -> None:
    split = json.load(open(SPLIT))
    # the box image energy (box_region) came later and is off here unless asked for, so the figures of
    # acdc_boxes_per_slice_validation/ stay reproducible
    options = {**options, "weights": {"box_region": 0.0, **options.get("weights", {})}}
    config = TrainConfig.from_layers(BASE, {"iterations": iterations}, options)
    result = train(boxed(set(split["train"][:24])), config)
    for h in result.history[:: max(1, len(result.history) // 6)]:
        if "terms" in h:
            print(h["iteration"], {k: round(v, 3) for k, v in h["terms"].items()}, h.get("violations"))
    full = load_dataset("../shared/data/acdc")
    val = [c for c in full.cases if c.group in set(split["test"][:6])]
    scores = []
    for case in val:
        pred = result.model.predict(case.image, largest_component=largest_component).labels.array
        d = dice(pred, case.ground_truth.array, [1, 2, 3])
        scores.append([d[1], d[2], d[3]])
    s = np.nanmean(np.array(scores, float), 0)
    print(f"RV {s[0]:.3f} Myo {s[1]:.3f} LV {s[2]:.3f} mean {s.mean():.3f} ({len(val)} validation volumes)")
    if png:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        case = val[0]
        pred = result.model.predict(case.image, largest_component=largest_component).labels.array
        gt, img = case.ground_truth.array, case.image.array
        img = img[0] if img.ndim == 4 else img
        zs = [z for z in range(gt.shape[0]) if gt[z].any()]
        zs = [zs[1], zs[len(zs) // 2], zs[-2]]
        fig, ax = plt.subplots(2, 3, figsize=(12, 8))
        for i, z in enumerate(zs):
            for r, lab in enumerate((gt, pred)):
                ax[r, i].imshow(img[z], cmap="gray")
                ax[r, i].imshow(np.ma.masked_equal(lab[z], 0), alpha=0.5, cmap="jet", vmin=0, vmax=3)
                ax[r, i].set_title(f"{'ground truth' if r == 0 else 'prediction'} z={z}")
                ax[r, i].axis("off")
        fig.savefig(png, dpi=70)


def run_gradients() -> None:
    split = json.load(open(SPLIT))
    trainer = Trainer(boxed(set(split["train"][:1])), TrainConfig.from_layers(BASE, {"iterations": 1}, {
        "weights": {"crf": 0}, "bf16": False}))
    trainer.prepare()
    trainer.sampler.augment = False
    batch = trainer.sampler.volume_batch(trainer.prepared[0])
    with torch.no_grad():
        base = trainer.network(batch.image)
    for name in ("partial_ce", "partial_dice", "box_emptiness", "box_tightness", "box_fill"):
        logits = base.clone().requires_grad_(True)
        terms = dict(trainer.objective.voxel_terms(logits, batch))
        terms.update(trainer.objective.global_terms(logits, batch)[0])
        if name not in terms:
            continue
        terms[name].backward()
        g = logits.grad
        print(f"{name:14s} value {float(terms[name]):.4f}  gradient L2 {float(g.norm()):.3g}  "
              f"max {float(g.abs().max()):.3g}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=["train", "gradients"])
    p.add_argument("options", nargs="?", default="{}")
    p.add_argument("iterations", nargs="?", type=int, default=300)
    p.add_argument("--no-largest-component", action="store_true")
    p.add_argument("--png")
    p.add_argument("--keep-overlaps", action="store_true",
                   help="ablation: label the crossing overlaps of boxes of different classes too")
    args = p.parse_args()
    if args.keep_overlaps:
        import functools

        from WeakSegLib.training import data as training_data
        training_data.ellipse_labels = functools.partial(training_data.ellipse_labels, overlap_unknown=False)
    if args.what == "train":
        run_train(json.loads(args.options), args.iterations, not args.no_largest_component, args.png)
    else:
        run_gradients()


if __name__ == "__main__":
    main()
