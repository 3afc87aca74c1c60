"""``weakseg predict``: segment images with one model or an ensemble."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("predict", help="segment images with one model or an ensemble")
    p.add_argument("--model", required=True, nargs="+", help="model folder(s); several = ensemble")
    p.add_argument("--image", required=True, nargs="+",
                   help="image file(s) (NIfTI/NRRD/MHA); with --channels, the files are the channels of one case")
    p.add_argument("--channels", action="store_true", help="treat several --image files as channels of one case")
    p.add_argument("--out", required=True, help="output label file, or a folder for several images")
    p.add_argument("--probabilities", default=None, help="also write per-class probabilities (z,y,x,C) here")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    p.add_argument("--largest-component", action="store_true", help="keep the largest component per class")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, ...")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from WeakSegLib.data.volume import read_volume, write_volume
    from WeakSegLib.model import Model, predict_ensemble

    out = Path(args.out)
    if args.channels or len(args.image) == 1:
        jobs = [(args.image if args.channels else args.image[0], out)]      # one case -> one output file
    else:
        jobs = [(image, out / Path(image).name) for image in args.image]    # several cases -> a folder
    for _, target in jobs:
        if target.exists() and not args.overwrite:
            raise FileExistsError(f"'{target}' exists; pass --overwrite or choose another --out.")
    models = [Model.load(m, device=args.device or "auto") for m in args.model]
    for image, target in jobs:
        volume = read_volume(image)
        pred = predict_ensemble(models, volume, tta=args.tta, return_probabilities=bool(args.probabilities),
                                largest_component=args.largest_component)
        write_volume(pred.labels, target)
        if args.probabilities:
            prob_path = Path(args.probabilities)
            write_volume(pred.probabilities, prob_path if len(jobs) == 1 else prob_path / Path(target).name)
        print(f"Segmentation written to {target}")
    return 0

