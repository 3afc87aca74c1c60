"""``weakseg demo``: the main job on the embedded synthetic phantom."""

from __future__ import annotations

import argparse
from pathlib import Path

from WeakSegLib.cli.options import add_training_options, config_from_args
from WeakSegLib.cli.progress import ProgressPrinter

DEMO_ITERATIONS = 600   # the demo's default budget: reproducible, a few minutes on 2 CPU cores


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("demo", help="the main job on the embedded synthetic phantom: simulate scribbles + "
                                           "sizes, train, predict, evaluate, render an overlay PNG")
    p.add_argument("--out", default="demo_output", help="output folder (default demo_output)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    add_training_options(p)
    p.set_defaults(func=run)
    return p


# What ``weakseg demo`` writes into --out; --overwrite replaces only a folder holding nothing else.
DEMO_OUTPUTS = frozenset({"model", "report.json", "overlay.png", "training_curve.png", "segmentation.nii.gz",
                          "image.nii.gz", "ground_truth.nii.gz"})


def check_out(out: Path, overwrite: bool) -> None:
    """Before any work: --out is new, empty, or (with --overwrite) an earlier demo's folder, and writable."""
    from WeakSegLib.utils import check_output_path

    check_output_path(out, "--out", overwrite, folder=True)
    if out.is_dir():
        foreign = sorted(p.name for p in out.iterdir() if p.name not in DEMO_OUTPUTS)
        if foreign:
            raise ValueError(f"--out '{out}' holds files the demo did not write ({', '.join(foreign[:4])}"
                             f"{' ...' if len(foreign) > 4 else ''}); --overwrite replaces only a demo's output "
                             f"folder. Choose a new or empty --out.")


def run(args: argparse.Namespace) -> int:
    from WeakSegLib.demo import run_demo

    config = config_from_args(args, default_budget=(None, DEMO_ITERATIONS))
    check_out(Path(args.out), args.overwrite)
    report = run_demo(Path(args.out), config, progress=ProgressPrinter(args.progress), overwrite=args.overwrite)
    fg = report["test"]["mean_dice"]
    print(f"Demo done in {report['seconds_total']:.0f} s: held-out mean Dice {fg:.3f}. Outputs in {args.out} "
          f"(report.json, overlay.png, segmentation.nii.gz).")
    return 0

