"""Flip test-time augmentation against a single pass, for one trained ACDC model on held-out patients.

Predicts every volume of the split's test patients twice (``Model.predict(tta=False / True)``, largest
component per class), and prints per-volume and mean Dice, the worst volume, the median myocardium
volume error and the seconds per volume, with a paired bootstrap over patients (both frames of a
patient resampled together).

    python benchmarks/tta_comparison.py --model ../models/acdc_cohort48 \
        --split benchmarks/configs/acdc_val_split.json --out runs/tta_validation.json

Needs ../shared/data/acdc (or --data).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MYO = 2


def main(argv=None) -> int:
    import WeakSegLib as ws
    from WeakSegLib.data.volume import read_volume
    from WeakSegLib.evaluation.metrics import dice

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="trained ACDC model folder")
    p.add_argument("--split", required=True, help="split JSON; its 'test' patients are predicted")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "acdc"))
    p.add_argument("--out", required=True, help="JSON file for the per-volume results (must not exist)")
    args = p.parse_args(argv)
    out = Path(args.out)
    if out.exists():
        p.error(f"'{out}' exists; choose another --out")
    patients = json.loads(Path(args.split).read_text())["test"]
    model = ws.Model.load(args.model)
    classes = [c for c in range(1, len(model.class_names))]
    results: dict[str, dict] = {}
    for patient in patients:
        for image in sorted(Path(args.data).glob(f"{patient}_frame??.nii.gz")):
            case = image.name[: -len(".nii.gz")]
            volume = read_volume(image)
            truth = read_volume(image.with_name(f"{case}_gt.nii.gz")).array
            row = {}
            for tta in (False, True):
                start = time.perf_counter()
                labels = model.predict(volume, tta=tta, largest_component=True).labels.array
                seconds = time.perf_counter() - start
                scores = dice(labels, truth, classes)
                row["tta" if tta else "single"] = {
                    "dice": [float(scores[c]) for c in classes],
                    "mean": float(np.mean([scores[c] for c in classes])),
                    "myo_volume_error": float((labels == MYO).sum() / max(1, (truth == MYO).sum()) - 1),
                    "seconds": seconds}
            results[case] = row
            print(case, {k: round(v["mean"], 3) for k, v in row.items()}, flush=True)
    summary = {}
    for key in ("single", "tta"):
        means = np.array([r[key]["mean"] for r in results.values()])
        summary[key] = {"mean_dice": float(means.mean()),
                        "dice_per_class": np.array([r[key]["dice"] for r in results.values()]).mean(0).tolist(),
                        "worst_volume": float(means.min()),
                        "median_myo_volume_error": float(np.median([r[key]["myo_volume_error"]
                                                                    for r in results.values()])),
                        "seconds_per_volume": float(np.mean([r[key]["seconds"] for r in results.values()]))}
    diff = {case: r["tta"]["mean"] - r["single"]["mean"] for case, r in results.items()}
    by_patient = {pt: [d for case, d in diff.items() if case.startswith(pt + "_")] for pt in patients}
    by_patient = {pt: d for pt, d in by_patient.items() if d}
    rng = np.random.default_rng(0)
    names = sorted(by_patient)
    boot = [np.mean(sum((by_patient[n] for n in rng.choice(names, len(names))), [])) for _ in range(5000)]
    summary["difference"] = {"mean": float(np.mean(list(diff.values()))),
                             "ci95_patients": np.percentile(boot, [2.5, 97.5]).tolist(),
                             "better": int(sum(d > 0 for d in diff.values())),
                             "worse": int(sum(d < 0 for d in diff.values())), "volumes": len(diff)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "split": args.split, "summary": summary,
                               "per_volume": results}, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
