"""``weakseg train``: train a model on a dataset folder (also under ``torchrun`` for DDP)."""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

from WeakSegLib.cli.options import add_training_options, config_from_args
from WeakSegLib.cli.progress import ProgressPrinter

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train a model on a dataset folder (dataset.json)")
    p.add_argument("--dataset", required=True, help="dataset folder or its dataset.json")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--validation", default=None, help="optional held-out dataset with ground truth (Dice per epoch)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    add_training_options(p)
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from WeakSegLib.data.dataset import load_dataset
    from WeakSegLib.training import train

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not (args.overwrite or args.resume):
        raise FileExistsError(f"Output folder '{out}' exists and is not empty. Pass --overwrite to replace the "
                              f"model, --resume to continue its checkpoint, or choose another --out.")
    config = config_from_args(args)
    dataset = load_dataset(args.dataset)
    validation = load_dataset(args.validation) if args.validation else None
    main_rank = int(os.environ.get("RANK", "0")) == 0          # under torchrun only rank 0 talks
    if main_rank:
        logger.info("Training on %d case(s) of '%s' (%s)", len(dataset), dataset.name,
                    ", ".join(dataset.class_names))
    result = train(dataset, config, out, progress=ProgressPrinter(args.progress), validation=validation,
                   resume=args.resume)
    if main_rank:
        print(f"Model written to {out} ({result.iterations} iterations, {result.seconds:.0f} s, {result.status}).")
    return 0

