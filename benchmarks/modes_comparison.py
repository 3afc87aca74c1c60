"""Learning modes side by side on real data: one ``weakseg bench`` run per mode, merged into one table.

Each run is a separate process on the same split, seed and budget, so each mode gets the whole
machine.  Settings:

* ``la-semi``: left atrium, 4 labelled + 16 unlabelled training volumes, 4 test volumes; every
  semi-supervised mode next to "labelled only" (``standard``: the unlabelled volumes add no term)
  and "all labelled" (``full``: the 20 training volumes' masks).
* ``la-boxes``: left atrium, simulated 3D boxes on the same 20/4 split; standard objective and
  recursive box rounds (``box-rounds``), and Slicer's Grow-from-seeds on simulated test scribbles (a
  quarter of the slices, no training); ``all-labelled`` of ``la-semi`` is the full-supervision reference.
* ``la-tags``: left atrium on the same 20/4 split, present / absent tags of every z slice and the
  atrium's volume as a range of +/- 20 %; the standard objective (constraints and size proposals)
  next to CAM pseudo-masks (``cam``), the baseline.
* ``acdc-partial``: ACDC, each class dropped from each training volume with probability 0.5; SMILE
  (``standard``) and SMILEr (``smiler``) next to naive training (missing classes = background), each
  with SMILE's per-class binary terms and with the marginal CE + Dice (``partial_label_loss``).
* ``acdc-tags``: ACDC, tags + size ranges only; standard objective and CAM (``cam``).
* ``acdc-boxes``: ACDC, boxes only; standard objective and recursive box rounds (``box-rounds``) on
  3D boxes, and the standard objective on per-slice 2D boxes (``--per-slice``, as drawn on ACDC's slices).

Usage (the results folder gets one sub-folder per run plus ``modes.md`` / ``modes.json`` / ``modes.png``)::

    python benchmarks/modes_comparison.py --setting la-semi --minutes 20 --device cuda --out runs/modes_la
    python benchmarks/modes_comparison.py --setting acdc-partial --minutes 20 --out runs/modes_acdc_partial

``--only a,b`` restricts the runs (names as in the table); ``--extra "--max-cases 4"`` passes
options to every ``weakseg bench`` call.  A run whose folder already holds a ``bench.json`` is
reused, so an interrupted comparison resumes where it stopped.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

SEMI_MODES = ("pi-model", "temporal-ensembling", "mean-teacher", "vat", "entropy-min", "pseudo-label",
              "self-training", "fixmatch", "mixmatch")

CONFIGS = Path(__file__).resolve().parent / "configs"
SMILE = ["--config", str(CONFIGS / "partial_smile.json")]
MARGINAL = ["--config", str(CONFIGS / "partial_marginal.json")]

# setting -> (bench options, [(run name, bench method, mode, label[, extra bench options of this run])])
SETTINGS = {
    "la-semi": (
        ["--dataset", "../shared/data/la", "--annotation", "semi", "--labelled", "4",
         "--train-groups", "20", "--test-groups", "4"],
        [("labelled-only", "weakseg", "standard", "labelled only (4 volumes)")]
        + [(m, "weakseg", m, m) for m in SEMI_MODES]
        + [("all-labelled", "full", "standard", "all labelled (20 volumes)")],
    ),
    "la-boxes": (
        ["--dataset", "../shared/data/la", "--annotation", "boxes", "--train-groups", "20", "--test-groups", "4",
         "--slice-fraction", "0.25"],
        [("boxes", "weakseg", "standard", "boxes (emptiness + tightness)"),
         ("box-rounds", "weakseg", "box-rounds", "boxes, recursive rounds"),
         ("growcut", "growcut", "standard", "Grow-from-seeds on each test volume's scribbles (25 % of slices)")],
    ),
    "la-tags": (
        ["--dataset", "../shared/data/la", "--annotation", "tags+sizes", "--per-slice", "--size-margin", "0.2",
         "--train-groups", "20", "--test-groups", "4"],
        [("cam", "weakseg", "cam", "CAM pseudo-masks (per-slice tags + volume +/- 20 %)"),
         ("tags-sizes", "weakseg", "standard", "constraints + size proposals (per-slice tags + volume +/- 20 %)")],
    ),
    "acdc-partial": (
        ["--dataset", "../shared/data/acdc", "--annotation", "partial", "--drop-rate", "0.5",
         "--train-groups", "60", "--test-groups", "20", "--largest-component"],
        [("naive", "naive", "standard", "naive (missing classes = background)"),
         ("smile", "weakseg", "standard", "SMILE (per-class binary terms)", SMILE),
         ("smiler", "weakseg", "smiler", "SMILEr (SMILE + relabeling rounds)", SMILE),
         ("marginal", "weakseg", "standard", "marginal CE + Dice on complete classes", MARGINAL),
         ("marginal-smiler", "weakseg", "smiler", "marginal + SMILEr relabeling rounds", MARGINAL),
         ("full", "full", "standard", "full supervision")],
    ),
    "acdc-tags": (
        ["--dataset", "../shared/data/acdc", "--annotation", "tags+sizes",
         "--train-groups", "60", "--test-groups", "20", "--largest-component"],
        [("tags-sizes", "weakseg", "standard", "tags + sizes (constraints)"),
         ("cam", "weakseg", "cam", "tags + sizes, CAM pseudo-masks")],
    ),
    "acdc-boxes": (
        ["--dataset", "../shared/data/acdc", "--annotation", "boxes",
         "--train-groups", "60", "--test-groups", "20", "--largest-component"],
        [("boxes", "weakseg", "standard", "boxes (emptiness + tightness)"),
         ("box-rounds", "weakseg", "box-rounds", "boxes, recursive rounds"),
         ("boxes-per-slice", "weakseg", "standard", "per-slice 2D boxes (emptiness + tightness)", ["--per-slice"])],
    ),
}


def run(setting: str, out: Path, budget: list[str], device: str, seed: int, only: set[str] | None,
        extra: list[str]) -> list[dict]:
    base, runs = SETTINGS[setting]
    rows = []
    for name, method, mode, label, *own in runs:
        if only and name not in only:
            continue
        folder = out / name
        if not (folder / "bench.json").exists():
            cmd = [sys.executable, "-m", "WeakSegLib", "bench", *base, *budget, "--device", device,
                   "--seed", str(seed), "--methods", method, "--mode", mode, "--out", str(folder),
                   "--overwrite", *(own[0] if own else []), *extra]
            print("+", " ".join(shlex.quote(c) for c in cmd), flush=True)
            subprocess.run(cmd, check=False)
        if not (folder / "bench.json").exists():
            rows.append({"run": name, "label": label, "status": "failed (no bench.json)"})
            continue
        report = json.loads((folder / "bench.json").read_text())
        res = report["methods"].get(method, {})
        hd95 = [c["hd95_mm"]["mean"] for c in res.get("summary", {}).get("classes", {}).values()
                if c.get("hd95_mm", {}).get("mean") is not None]
        rows.append({"run": name, "label": label, "method": method, "mode": mode,
                     "status": res.get("status"), "mean_dice": res.get("mean_dice"),
                     "dice_per_class": res.get("dice_per_class"),
                     "hd95": sum(hd95) / len(hd95) if hd95 else None,
                     "train_seconds": res.get("train_seconds"), "iterations": res.get("train_iterations"),
                     "curve": [(p["seconds"], p["mean_dice"]) for p in res.get("curve", [])
                               if p.get("mean_dice") is not None],
                     "device": report.get("environment", {}).get("device")})
    return rows


def write_table(setting: str, rows: list[dict], out: Path, command: str) -> str:
    lines = [f"# Learning modes: `{setting}`", "", f"Command: `{command}`", "",
             "| run | mean Dice | per class | HD95 mm | train time (iterations) | status |",
             "|---|---|---|---|---|---|"]
    base = {"la-semi": "labelled-only", "la-boxes": "boxes", "la-tags": "cam", "acdc-partial": "naive",
            "acdc-tags": "tags-sizes", "acdc-boxes": "boxes"}[setting]
    reference = next((r.get("mean_dice") for r in rows if r["run"] == base), None)
    for r in rows:
        dice = r.get("mean_dice")
        per = ", ".join(f"{k} {v:.3f}" for k, v in (r.get("dice_per_class") or {}).items())
        delta = "" if dice is None or reference is None or r["run"] == base else f" ({dice - reference:+.3f})"
        t, hd95 = r.get("train_seconds"), r.get("hd95")
        dice_text = "" if dice is None else f"{dice:.3f}{delta}"
        hd_text = "" if hd95 is None else f"{hd95:.1f}"
        time_text = "" if t is None else f"{t:.0f} s ({r.get('iterations')})"
        lines.append(f"| {r['label']} | {dice_text} | {per} | {hd_text} | {time_text} | {r.get('status')} |")
    lines += ["", f"Differences in brackets are against `{base}`."]
    text = "\n".join(lines) + "\n"
    (out / "modes.md").write_text(text)
    (out / "modes.json").write_text(json.dumps({"setting": setting, "command": command, "rows": rows}, indent=1))
    return text


def write_plot(setting: str, rows: list[dict], out: Path) -> Path:
    """``modes.png``: test Dice against training time, one curve per run (a run without training: a line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    for r in rows:
        if r.get("mean_dice") is None:
            continue
        label = f"{r['label']}: {r['mean_dice']:.3f}"
        if r.get("curve"):
            ax.plot([t / 60.0 for t, _ in r["curve"]], [d for _, d in r["curve"]], marker="o", lw=1.5, label=label)
        else:
            ax.axhline(r["mean_dice"], ls="--", color="gray", label=label + " (no training)")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(left=0)
    ax.set_xlabel("training time (min, data preparation included)")
    ax.set_ylabel("mean foreground Dice on the test volumes")
    ax.set_title(f"Learning modes: {setting}", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    fig.tight_layout()
    path = out / "modes.png"
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--setting", required=True, choices=sorted(SETTINGS))
    p.add_argument("--minutes", type=float)
    p.add_argument("--iterations", type=int)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", help="comma-separated run names")
    p.add_argument("--extra", default="", help="extra options for every weakseg bench call (one string)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if (args.minutes is None) == (args.iterations is None):
        p.error("give exactly one budget: --minutes M or --iterations N")
    budget = ["--minutes", str(args.minutes)] if args.minutes is not None else ["--iterations", str(args.iterations)]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    only = set(args.only.split(",")) if args.only else None
    rows = run(args.setting, out, budget, args.device, args.seed, only, shlex.split(args.extra))
    command = "python benchmarks/modes_comparison.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    print(write_table(args.setting, rows, out, command))
    write_plot(args.setting, rows, out)
    return 0 if all(r.get("status") == "completed" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
