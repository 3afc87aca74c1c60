"""``weakseg calibrate``: per-class offsets of a model's log-probabilities, chosen on volumes with complete
masks, written into a new model folder (:mod:`WeakSegLib.inference.calibration`)."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from WeakSegLib.cli.options import add_largest_component_option

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "calibrate", help="choose per-class offsets of a model on volumes with complete masks",
        description="A model trained on weak labels places each class's borders consistently but not always where "
                    "complete masks draw them (e.g. a myocardium too thick). This chooses one offset per class of "
                    "the model's log-probabilities that maximises the mean Dice on volumes with complete masks "
                    "(their ground truth), and writes the model with them into a new folder; every prediction "
                    "of that folder uses them. Use volumes that the figures you report are not measured on.")
    p.add_argument("--model", required=True, help="the trained model folder (left as it is)")
    p.add_argument("--dataset", required=True, help="a dataset folder whose volumes have ground truth")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--groups", nargs="+", default=None,
                       help="calibrate on these groups (e.g. patients) of the dataset (default: every volume with "
                            "ground truth)")
    which.add_argument("--split", default=None,
                       help='a split file {"train": [...], "test": [...]}: calibrate on its "test" groups (the '
                            "validation patients of a validation split)")
    add_largest_component_option(p, "score (and later predict) with one component per class")
    p.add_argument("--objective", choices=("dice", "volume"), default="dice",
                   help="dice: the highest mean Dice (default); volume: each class's median volume error "
                        "closest to 0 (for volumes and masses)")
    p.add_argument("--out", required=True, help="the calibrated model folder to write (a new folder)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out model folder")
    p.add_argument("--device", default="cpu", help="auto, cpu, cuda, ...")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from WeakSegLib import load_dataset
    from WeakSegLib.bench.split import load_groups, read_split_groups
    from WeakSegLib.inference.calibration import MIN_CALIBRATION_VOLUMES, choose_class_offsets
    from WeakSegLib.model import Model, predict_ensemble

    out = Path(args.out)
    if Path(args.model).resolve() == out.resolve():
        raise ValueError(f"--out '{args.out}' is the --model folder; write the calibrated model to a new folder.")
    if out.exists() and not args.overwrite:
        raise FileExistsError(f"--out '{args.out}' exists; choose a new folder or pass --overwrite.")
    if out.exists() and not (out / "model.json").is_file():
        raise FileExistsError(f"--out '{args.out}' exists and is not a model folder; choose a new folder.")
    groups = read_split_groups(args.split, "test") if args.split else args.groups
    model = Model.load(args.model, device=args.device)
    if model.calibration:
        logger.warning("'%s' is calibrated already; its offsets are replaced.", args.model)
        model.calibration = None
    data = (load_dataset(args.dataset, with_annotations=False) if groups is None else
            load_groups(args.dataset, groups, with_annotations=False))
    cases = [c for c in data.cases if c.ground_truth is not None]
    if not cases:
        raise ValueError(f"No volume of '{args.dataset}' has ground truth" + (
            f" in the groups {', '.join(map(str, groups[:5]))}" if groups else "") + "; calibration needs complete "
            "masks.")
    if len(data.classes) != len(model.classes):
        raise ValueError(f"The dataset has {len(data.classes)} classes, the model {len(model.classes)}.")
    if len(cases) < MIN_CALIBRATION_VOLUMES:
        logger.warning("Only %d volume(s) with complete masks: offsets chosen on so few can make the model worse "
                       "(on ACDC, 2-4 volumes lowered the Dice of other volumes; 24 gave the gain). Check them on "
                       "other volumes before you use them.", len(cases))
    from WeakSegLib.inference.postprocessing import component_rule, rule_with_inside

    rule = rule_with_inside(args.largest_component, args.inside, model.class_names)
    probabilities, truths = [], []
    for case in cases:
        probabilities.append(predict_ensemble([model], case.image, return_probabilities=True).probabilities.array)
        truths.append(case.ground_truth.array)
    result = choose_class_offsets(probabilities, truths, largest_component=rule or False,
                                  objective=args.objective)
    model.calibration = {**result, "largest_component": component_rule(rule).to_json() if rule else False,
                         "dataset": str(args.dataset), "groups": sorted({str(c.group) for c in cases})}
    model.save(out)
    names = model.class_names
    print(f"Offsets ({len(cases)} volumes): " + ", ".join(f"{n} {v:+.2f}" for n, v in zip(names, result["offsets"]))
          + f"; on these volumes mean Dice {result['dice_before']:.3f} -> {result['dice_after']:.3f}, mean |median "
          f"volume error| {100 * result['volume_error_before']:.1f} % -> {100 * result['volume_error_after']:.1f} %. "
          f"Calibrated model written to {out}")
    return 0
