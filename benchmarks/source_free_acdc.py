"""Source-free adaptation on real data: a model trained on ACDC end-diastole frames, adapted to end-systole.

The source model is trained with full masks on the end-diastole (ED, first) frame of each training
patient.  The target domain is the end-systole (ES) frame: smaller cavities, thicker myocardium.
Adaptation (mode ``source-free``, Bateson et al. 2020) fine-tunes the source model on the ES frames of
the training patients *without their masks* (entropy + KL of the predicted class proportions to a
prior).  The prior is one class-ratio vector for the whole population: the mean ES class proportions
of the adaptation volumes, as an anatomist's estimate would give (no per-volume information).
Before and after are scored on the ES frames of the test patients, which neither training saw; the
test ED frames show the source model in its own domain.

Usage::

    python benchmarks/source_free_acdc.py --data ../shared/data/acdc --source-minutes 10 --adapt-minutes 3 \\
        --out benchmarks/results/acdc_source_free

``--source-model DIR`` reuses a source model (its training patients must be this split's training
patients).  ``--validate N`` is for choosing the adaptation's options: it adapts on the ES frames of
all but N training patients and scores those N patients' ES frames (never seen as ES frames; their ED
frames trained the source model); the test patients are not read.

Writes ``source_free.json`` and ``source_free.md`` into ``--out`` (refused if they exist, unless
``--overwrite``).
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from pathlib import Path

import numpy as np

from WeakSegLib.bench.split import entry_group, load_groups, split_groups
from WeakSegLib.data.dataset import Dataset, load_manifest
from WeakSegLib.evaluation.metrics import dice
from WeakSegLib.model import Model
from WeakSegLib.training import TrainConfig, train


def frame_of(case_id: str) -> int:
    return int(re.search(r"_frame(\d+)$", case_id).group(1))


def split_frames(dataset: Dataset) -> tuple[list, list]:
    """``(ED cases, ES cases)``: per patient, the first frame is end-diastole, the other end-systole."""
    by_patient: dict[str, list] = {}
    for case in dataset.cases:
        by_patient.setdefault(case.group, []).append(case)
    ed, es = [], []
    for cases in by_patient.values():
        cases.sort(key=lambda c: frame_of(c.id))
        if len(cases) == 2:
            ed.append(cases[0])
            es.append(cases[1])
    return ed, es


def class_proportions(cases, num_classes: int) -> list[float]:
    """Mean over the cases of each class's share of the volume's voxels (background first)."""
    shares = [np.bincount(c.ground_truth.array.ravel().astype(np.int64), minlength=num_classes)[:num_classes]
              / c.ground_truth.array.size for c in cases]
    return [round(float(v), 5) for v in np.mean(shares, axis=0)]


def score(model: Model, cases, num_classes: int) -> dict:
    """Per-class and mean foreground Dice over ``cases`` (no post-processing)."""
    per_volume = []
    for case in cases:
        pred = model.predict(case.image).labels.array
        per_volume.append(dice(pred, case.ground_truth.array, labels=list(range(1, num_classes))))
    per_class = {c: float(np.mean([v[c] for v in per_volume])) for c in range(1, num_classes)}
    means = [float(np.mean(list(v.values()))) for v in per_volume]
    return {"per_class": per_class, "mean": float(np.mean(means)), "sd": float(np.std(means)),
            "worst": float(np.min(means)), "per_volume": dict(zip([c.id for c in cases], means))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/acdc")
    ap.add_argument("--test-groups", type=int, default=20)
    ap.add_argument("--train-groups", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--source-minutes", type=float, default=10.0)
    ap.add_argument("--adapt-minutes", type=float, default=3.0)
    ap.add_argument("--adapt-lr", type=float, default=5e-4)
    ap.add_argument("--entropy-weight", type=float, default=1.0)
    ap.add_argument("--ratio-weight", type=float, default=1.0)
    ap.add_argument("--ratio-loss", choices=("kl", "relative"), default="kl")
    ap.add_argument("--ratio-margin", type=float, default=0.2)
    ap.add_argument("--parameters", choices=("norm", "all"), default="norm",
                    help="norm: adapt only the normalisation layers (TENT); all: every weight")
    ap.add_argument("--validate", type=int, default=0, metavar="N",
                    help="score N held-out training patients' ES frames instead of the test patients")
    ap.add_argument("--source-model", default=None, help="reuse this source model instead of training one")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", required=True)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    out = Path(args.out)
    if (out / "source_free.json").exists() and not args.overwrite:
        print(f"error: '{out / 'source_free.json'}' exists; pass --overwrite or choose another --out.",
              file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    manifest, _ = load_manifest(args.data)
    groups = sorted({entry_group(e) for e in manifest["cases"]})
    train_groups, test_groups = split_groups(groups, args.test_groups, args.train_groups, seed=args.seed)
    train_data = load_groups(args.data, train_groups)
    k = train_data.num_classes
    src_cases, adapt_cases = split_frames(train_data)
    if args.validate:
        held = set(np.random.default_rng(args.seed).choice(train_groups, args.validate, replace=False).tolist())
        test_ed = [c for c in src_cases if c.group in held]
        test_es = [c for c in adapt_cases if c.group in held]
        adapt_cases = [c for c in adapt_cases if c.group not in held]
        split_name = f"validation ({args.validate} training patients)"
    else:
        test_ed, test_es = split_frames(load_groups(args.data, test_groups))
        split_name = "test"

    t0 = time.monotonic()
    source_dir = Path(args.source_model) if args.source_model else out / "source_model"
    if args.source_model is None:
        source = Dataset(classes=train_data.classes, cases=src_cases, channels=train_data.channels,
                         modality=train_data.modality, name="ACDC end-diastole")
        train(source, TrainConfig(objective="full", minutes=args.source_minutes, device=args.device,
                                  seed=args.seed), source_dir)
    source_seconds = time.monotonic() - t0
    source_model = Model.load(source_dir, args.device)

    prior = class_proportions(adapt_cases, k)
    for case in adapt_cases:                      # the target volumes are unannotated
        case.annotation = None
    target = Dataset(classes=train_data.classes, cases=adapt_cases, channels=train_data.channels,
                     modality=train_data.modality, priors={"class_ratio": prior}, name="ACDC end-systole")
    t1 = time.monotonic()
    adapted = train(target, TrainConfig(mode="source-free", init_model=str(source_dir), minutes=args.adapt_minutes,
                                        learning_rate=args.adapt_lr, device=args.device, seed=args.seed,
                                        mode_options={"entropy_weight": args.entropy_weight,
                                                      "ratio_weight": args.ratio_weight,
                                                      "ratio_loss": args.ratio_loss,
                                                      "ratio_margin": args.ratio_margin,
                                                      "parameters": args.parameters}),
                    out / "adapted_model")
    adapt_seconds = time.monotonic() - t1

    names = [c.name for c in train_data.classes]
    before_key, after_key = f"source on {split_name} ES (before)", f"adapted on {split_name} ES (after)"
    rows = {before_key: score(source_model, test_es, k), after_key: score(adapted.model, test_es, k)}
    if not args.validate:
        rows = {f"source on {split_name} ED (its own domain)": score(source_model, test_ed, k), **rows}
    report = {"command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
              "date": time.strftime("%Y-%m-%d"), "train_patients": train_groups, "test_patients": test_groups,
              "source_volumes": len(src_cases), "adaptation_volumes": len(adapt_cases), "class_ratio_prior": prior,
              "source_seconds": round(source_seconds, 1), "adapt_seconds": round(adapt_seconds, 1),
              "adapt_iterations": adapted.iterations, "adapt_lr": args.adapt_lr,
              "entropy_weight": args.entropy_weight, "ratio_weight": args.ratio_weight,
              "ratio_loss": args.ratio_loss, "ratio_margin": args.ratio_margin, "parameters": args.parameters,
              "scored": split_name,
              "source_model": str(source_dir), "rows": rows}
    (out / "source_free.json").write_text(json.dumps(report, indent=1))
    lines = [f"# Source-free adaptation, ACDC end-diastole -> end-systole ({report['date']})", "",
             f"Command: `{report['command']}`", "",
             f"- Source: full masks of the ED frames of {len(src_cases)} training patients "
             f"({source_seconds / 60:.1f} min of training{' (reused)' if args.source_model else ''}).",
             f"- Adaptation: the ES frames of the same {len(adapt_cases)} patients without masks, "
             f"{adapted.iterations} iterations ({adapt_seconds / 60:.1f} min), learning rate {args.adapt_lr}, "
             f"class-ratio prior {prior} (mean ES proportions of the adaptation volumes).",
             f"- Adaptation loss: entropy (weight {args.entropy_weight}) + class ratio '{args.ratio_loss}' "
             f"(weight {args.ratio_weight}" + (f", margin ±{args.ratio_margin:.0%})" if args.ratio_loss == "relative"
                                                else ")") + f"; parameters adapted: {args.parameters}.",
             f"- Scored: the ES frames of {len(test_es)} patients, {split_name}, not in the adaptation; Dice without "
             f"post-processing.", "",
             "| model, test volumes | " + " | ".join(names[1:]) + " | mean Dice | worst volume |",
             "|---|" + "---|" * (k + 1)]
    for label, r in rows.items():
        cells = " | ".join(f"{r['per_class'][c]:.3f}" for c in range(1, k))
        lines.append(f"| {label} | {cells} | {r['mean']:.3f} ± {r['sd']:.3f} | {r['worst']:.3f} |")
    before, after = rows[before_key]["mean"], rows[after_key]["mean"]
    better = sum(rows[after_key]["per_volume"][i] > v for i, v in rows[before_key]["per_volume"].items())
    lines += ["", f"Adaptation changes the ES mean Dice by {after - before:+.3f} ({before:.3f} -> {after:.3f}); "
              f"better on {better} of {len(test_es)} test volumes."]
    (out / "source_free.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
