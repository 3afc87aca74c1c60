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


def run(args: argparse.Namespace) -> int:
    from WeakSegLib.demo import run_demo

    config = config_from_args(args, default_budget=(None, DEMO_ITERATIONS))
    report = run_demo(Path(args.out), config, progress=ProgressPrinter(args.progress), overwrite=args.overwrite)
    fg = report["test"]["mean_dice"]
    print(f"Demo done in {report['seconds_total']:.0f} s: held-out mean Dice {fg:.3f}. Outputs in {args.out} "
          f"(report.json, overlay.png, segmentation.nii.gz).")
    return 0

