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
    p.add_argument("--out", required=True, help="model folder to write (written as a whole when training ends)")
    p.add_argument("--validation", default=None, help="optional held-out dataset with ground truth (Dice per epoch)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    add_training_options(p)
    p.set_defaults(func=run)
    return p


def check_out(out: Path, overwrite: bool, resume: bool) -> None:
    """Before any work: ``--out`` is a new or empty folder, or a model folder given with ``--overwrite`` or
    ``--resume`` (with a checkpoint), and it can be written."""
    from WeakSegLib.model import CHECKPOINT, check_model_folder
    from WeakSegLib.utils import probe_writable

    if overwrite and resume:
        raise ValueError("--overwrite starts a new run and --resume continues the one in --out; give one of them.")
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out '{out}' is a file; give a folder for the model.")
    if out.is_dir() and any(out.iterdir()):
        if not (overwrite or resume):
            raise FileExistsError(f"Output folder '{out}' exists and is not empty. Pass --overwrite to replace the "
                                  f"model, --resume to continue its checkpoint, or choose another --out.")
        check_model_folder(out, "--out")
        if resume and not (out / CHECKPOINT).is_file():
            raise FileNotFoundError(f"--resume: '{out}' holds no {CHECKPOINT} to continue; train without --resume "
                                    f"(and with --overwrite to replace the model there).")
        probe_writable(out, f"the model folder '{out}'")
    elif resume:
        raise FileNotFoundError(f"--resume: '{out}' holds no model or checkpoint to continue; train without "
                                f"--resume.")


def run(args: argparse.Namespace) -> int:
    from WeakSegLib.data.dataset import check_network_fits, load_dataset
    from WeakSegLib.model import ModelFolderLock
    from WeakSegLib.training import train

    out = Path(args.out)
    config = config_from_args(args)
    main_rank = int(os.environ.get("RANK", "0")) == 0          # under torchrun only rank 0 talks and writes
    if main_rank:
        check_out(out, args.overwrite, args.resume)
    # The lock (beside --out) is taken before the data is read: a second run on the same folder stops at once,
    # and an unwritable location is found before any training.
    lock = ModelFolderLock(out).acquire() if main_rank else None
    try:
        dataset = load_dataset(args.dataset)
        check_network_fits(dataset)
        validation = load_dataset(args.validation) if args.validation else None
        if main_rank:
            logger.info("Training on %d case(s) of '%s' (%s)", len(dataset), dataset.name,
                        ", ".join(dataset.class_names))
        result = train(dataset, config, out, progress=ProgressPrinter(args.progress), validation=validation,
                       resume=args.resume)
    finally:
        if lock is not None:
            lock.release()
    if main_rank:
        print(f"Model written to {out} ({result.iterations} iterations, {result.seconds:.0f} s, {result.status}).")
    return 0
