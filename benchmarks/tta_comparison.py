"""Flip test-time augmentation against a single pass, for one trained ACDC model on held-out patients.

Predicts every volume of the split's test patients twice (``Model.predict(tta=False / True)``, largest
component per class), and prints per-volume and mean Dice, the worst volume, the median myocardium
volume error and the seconds per volume, and the paired difference (``statistics.paired_difference``:
bootstrap over patients, both frames of a patient resampled together; wins / losses; Wilcoxon).

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
    from WeakSegLib.evaluation.statistics import paired_difference

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
    classes = list(range(1, len(model.class_names)))
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
    cases = list(results)
    summary["difference"] = paired_difference([results[c]["tta"]["mean"] for c in cases],
                                              [results[c]["single"]["mean"] for c in cases],
                                              clusters=[c.split("_")[0] for c in cases])
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": args.model, "split": args.split, "summary": summary,
                               "per_volume": results}, indent=1))
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
