"""The Update after a correction, from scratch and from the last result (warm start), with a trained model.

    python benchmarks/warm_start.py --model ../models/acdc_cohort48 \\
        --split benchmarks/configs/acdc_interactive_split.json --out benchmarks/results/acdc_warm_start

For each test volume: Initialize completes its real scribbles with the model
(:func:`WeakSegLib.inference.strokes.complete_strokes`, largest component per class) into a stroke cache;
a simulated user paints one corrective stroke in the largest wrong region
(:func:`WeakSegLib.bench.corrections.corrective_stroke`); the Update is then computed twice, from the
cache (the network's probabilities kept, the walker only on the slices whose strokes changed) and from
scratch (no cache).  Both are timed in this process; the first ``--processes`` volumes are also timed as
the Segment Editor effect runs them, one ``weakseg predict --strokes`` process per click (Python, torch
and the model loaded each time).  Writes ``warm_start.json`` and ``warm_start.md``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from WeakSegLib.bench.corrections import corrective_stroke
from WeakSegLib.bench.split import load_groups, read_split_groups
from WeakSegLib.data.annotation import UNKNOWN
from WeakSegLib.data.volume import Volume, write_volume
from WeakSegLib.evaluation.metrics import dice
from WeakSegLib.inference.strokes import complete_strokes
from WeakSegLib.model import Model


def _timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - start


def _process_seconds(model: str, image: Path, strokes: Path, out: Path, cache: Path | None) -> float:
    command = [sys.executable, "-m", "WeakSegLib", "predict", "--model", model, "--image", str(image),
               "--strokes", str(strokes), "--out", str(out), "--overwrite", "--largest-component", "--device", "cpu"]
    command += ["--cache", str(cache)] if cache else []
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="../shared/data/acdc")
    p.add_argument("--model", required=True)
    p.add_argument("--split", required=True, help='JSON {"train": [...], "test": [...]}: the test groups are used')
    p.add_argument("--processes", type=int, default=5, help="volumes also timed as separate processes")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    data = load_groups(args.dataset, read_split_groups(args.split, "test"))
    model = Model.load(args.model, device="cpu")
    classes = list(range(1, data.num_classes))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=False)
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n, case in enumerate(data.cases):
            strokes = case.annotation.labels.astype(np.int16)
            truth = case.ground_truth.array
            cache = tmp / f"{case.id}.npz"
            first, init_s = _timed(complete_strokes, model, case.image, strokes, largest_component=True, cache=cache)
            mask, label = corrective_stroke(first.array, truth)
            corrected = strokes.copy()
            corrected[mask] = label
            warm, warm_s = _timed(complete_strokes, model, case.image, corrected, largest_component=True,
                                  cache=cache)
            cold, cold_s = _timed(complete_strokes, model, case.image, corrected, largest_component=True)
            score = {name: float(np.mean([d[c] for c in classes])) for name, d in
                     (("initialize", dice(first.array, truth, classes)), ("warm", dice(warm.array, truth, classes)),
                      ("scratch", dice(cold.array, truth, classes)))}
            row = {"initialize_s": init_s, "update_warm_s": warm_s, "update_scratch_s": cold_s, "dice": score,
                   "voxels_differing_warm_vs_scratch": float(np.mean(warm.array != cold.array)),
                   "slices_with_strokes": int(np.any(strokes != UNKNOWN, axis=(1, 2)).sum())}
            if n < args.processes:
                image = write_volume(case.image, tmp / f"{case.id}_image.nii.gz")
                paths = [write_volume(Volume(s, case.image.geometry), tmp / f"{case.id}_{k}.nii.gz")
                         for k, s in (("strokes", strokes), ("corrected", corrected))]
                pcache = tmp / f"{case.id}_process.npz"
                target = tmp / f"{case.id}_out.nii.gz"
                row["process_initialize_s"] = _process_seconds(args.model, image, paths[0], target, pcache)
                row["process_update_warm_s"] = _process_seconds(args.model, image, paths[1], target, pcache)
                row["process_update_scratch_s"] = _process_seconds(args.model, image, paths[1], target, None)
            rows[case.id] = row
            print(case.id, {k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)

    def mean(key):
        values = [r[key] for r in rows.values() if key in r]
        return statistics.fmean(values) if values else float("nan")

    summary = {k: mean(k) for k in ("initialize_s", "update_warm_s", "update_scratch_s", "process_initialize_s",
                                    "process_update_warm_s", "process_update_scratch_s",
                                    "voxels_differing_warm_vs_scratch")}
    summary.update({f"dice_{k}": statistics.fmean(r["dice"][k] for r in rows.values())
                    for k in ("initialize", "warm", "scratch")})
    summary["volumes"] = len(rows)
    summary["processes"] = sum("process_initialize_s" in r for r in rows.values())
    (out / "warm_start.json").write_text(json.dumps({"summary": summary, "per_volume": rows}, indent=1))
    lines = ["| | in this process (s) | as a `weakseg predict` process (s) | mean Dice |", "|---|---|---|---|",
             f"| Initialize (network + walker) | {summary['initialize_s']:.2f} | "
             f"{summary['process_initialize_s']:.2f} | {summary['dice_initialize']:.3f} |",
             f"| Update after one stroke, from scratch | {summary['update_scratch_s']:.2f} | "
             f"{summary['process_update_scratch_s']:.2f} | {summary['dice_scratch']:.3f} |",
             f"| Update after one stroke, warm start | {summary['update_warm_s']:.2f} | "
             f"{summary['process_update_warm_s']:.2f} | {summary['dice_warm']:.3f} |", "",
             f"{summary['volumes']} volumes ({summary['processes']} also as processes); voxels whose label differs "
             f"between the warm and the from-scratch Update: "
             f"{100 * summary['voxels_differing_warm_vs_scratch']:.4f} %."]
    (out / "warm_start.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
