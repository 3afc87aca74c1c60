"""``weakseg bench``: train and evaluate WeakSeg next to its baselines on one split (:mod:`WeakSegLib.bench`)."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from WeakSegLib.bench import (
    ANNOTATIONS,
    DEFAULT_METHODS,
    METHOD_LABELS,
    BenchConfig,
    expand_methods,
    run_bench,
)
from WeakSegLib.cli.options import add_largest_component_option
from WeakSegLib.inference.strokes import STROKE_AGREEMENT, STROKE_PRIOR_WEIGHT, TRUSTED_PRIOR_WEIGHT


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to the ``weakseg`` parser."""
    p = subparsers.add_parser(
        "bench", help="benchmark on a dataset with ground truth: WeakSeg vs plain pCE vs full supervision vs "
                      "Slicer's Grow-from-seeds (+ interactive modes); writes bench.json, bench.md, a plot",
        description="Train and evaluate side by side, on one split by patient and one budget per method. "
                    "See benchmarks/README.md for the ACDC and LA commands.")
    p.add_argument("--dataset", required=True, help="dataset folder (dataset.json, ACDC or LA folder)")
    p.add_argument("--annotation", required=True, choices=ANNOTATIONS,
                   help="real-scribbles (the dataset's own) or simulated from the ground truth")
    p.add_argument("--drop-rate", type=float, default=0.5,
                   help="partial: probability of dropping a class (0.5)")
    p.add_argument("--labelled", type=int, default=4, help="semi: training volumes with full masks (4)")
    p.add_argument("--slice-fraction", type=float, default=1.0,
                   help="simulated scribbles: fraction of the slices drawn (1.0 = every slice, as ACDC)")
    p.add_argument("--per-slice", action="store_true",
                   help="boxes / points / tags+sizes: one box (clicks, tag) per 2D component on each z slice, as "
                        "drawn on the slices of a 2D dataset such as ACDC (default: 3D boxes and objects, volume tags)")
    p.add_argument("--points-per-object", type=int, default=1,
                   help="points: clicks per object (per slice with --per-slice) (1)")
    p.add_argument("--point-radius", type=float, default=0.0, metavar="MM",
                   help="points: radius of each click in mm (0 = one voxel)")
    p.add_argument("--background-per-slice", action="store_true",
                   help="points: one background click on each slice that holds foreground (default: one per "
                        "volume)")
    p.add_argument("--size-margin", type=float, default=None, metavar="FRACTION",
                   help="add each class's volume as a range of +/- FRACTION (e.g. 0.2) to the simulated "
                        "annotation, as a radiologist's estimate (tags+sizes: the ranges' width, 0.1 when not given)")
    p.add_argument("--with-scribbles", action="store_true",
                   help="boxes / points / tags+sizes: also draw simulated scribbles on --slice-fraction of the "
                        "slices of each training volume (a second annotation beside the first)")
    split = p.add_argument_group("split by patient (Case.group), seeded")
    split.add_argument("--test-fraction", type=float, default=0.25,
                       help="fraction of patients held out (0.25)")
    split.add_argument("--test-groups", type=int, default=None,
                       help="number of test patients (wins over the fraction)")
    split.add_argument("--train-groups", type=int, default=None,
                       help="number of training patients (default: all the others)")
    split.add_argument("--split", default=None, help='JSON file {"train": [groups], "test": [groups]}')
    split.add_argument("--max-cases", type=int, default=None,
                       help="at most N training and N test volumes (smoke runs)")
    budget = p.add_argument_group("budget per trained method")
    budget.add_argument("--minutes", type=float, default=None, help="minutes of training per method")
    budget.add_argument("--iterations", type=int, default=None, help="iterations per method (reproducible)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help="comma-separated: weakseg,weakseg-offsets,pce,naive,full,growcut,interactive-seeds,"
                        "interactive-finetune,"
                        "interactive-geodesic ('interactive' = both interactive modes with the weakseg model); "
                        "default: all but naive (partial labels only) and interactive-geodesic")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the simulations and training (0)")
    p.add_argument("--curve-fractions", default="0.25,0.5,0.75",
                   help="budget fractions at which weights are snapshotted for the Dice-vs-time plot")
    p.add_argument("--finetune-iterations", type=int, default=30, help="interactive-finetune iterations (30)")
    p.add_argument("--finetune-lr", type=float, default=1e-3,
                   help="interactive-finetune learning rate (1e-3)")
    p.add_argument("--prior-weight", type=float, default=STROKE_PRIOR_WEIGHT,
                   help=f"interactive-seeds: weight of the network prior in the random walker ({STROKE_PRIOR_WEIGHT})")
    p.add_argument("--trusted-prior-weight", type=float, default=TRUSTED_PRIOR_WEIGHT,
                   help="interactive-seeds: prior weight on the slices where the network already gives the "
                        f"painted label to --stroke-agreement of the painted voxels ({TRUSTED_PRIOR_WEIGHT}; "
                        "0 = one weight)")
    p.add_argument("--stroke-agreement", type=float, default=STROKE_AGREEMENT,
                   help=f"interactive-seeds: agreement with the strokes at which the network is trusted "
                        f"({STROKE_AGREEMENT})")
    p.add_argument("--model", default=None,
                   help="a trained model folder used as the weakseg method instead of training one (its "
                        "training patients must not be among the test patients)")
    p.add_argument("--class-offsets", default=None, metavar="FOLDER_OR_JSON",
                   help="the weakseg-offsets method's per-class offsets: a model folder calibrated on other "
                        "volumes (weakseg calibrate), or a JSON file {\"offsets\": [one number per class]}")
    p.add_argument("--prior-weight-sweep", default="",
                   help="interactive-seeds: extra prior weights evaluated and reported beside the headline "
                        "(e.g. 0.003,0.01,0.1); never used to pick the headline number")
    p.add_argument("--growcut-distance-penalty", type=float, default=0.0,
                   help="Grow-from-seeds 'seed locality' (0, Slicer's default)")
    p.add_argument("--mode", default="standard", help="learning mode of the weakseg method (standard)")
    add_largest_component_option(p, "post-process every trained method's predictions")
    p.add_argument("--config", default=None,
                   help="JSON file with extra TrainConfig options for the trained methods")
    p.add_argument("--out", required=True, help="output folder (bench.json, bench.md, dice_vs_time.png)")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in --out")
    p.set_defaults(func=run)
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    """The BenchConfig of the parsed ``bench`` options; ``--config`` is checked against ``--mode``."""
    split = None
    if args.split:
        from WeakSegLib.utils import describe_value, read_json_object

        name = f"Split file '{args.split}'"
        split = read_json_object(args.split, name)
        for key in ("train", "test"):
            groups = split.get(key)
            if not isinstance(groups, list) or not all(isinstance(g, str) for g in groups):
                raise ValueError(f"{name}: '{key}' must be a list of patient groups (strings), got "
                                 f"{describe_value(groups)}.")
    train_options = {}
    if args.config:
        from WeakSegLib.config import read_config_file
        from WeakSegLib.training import TrainConfig

        train_options = read_config_file(args.config)
        # Validate with a readable error; mode_options belong to the --mode given unless the file names one.
        TrainConfig.from_dict({"mode": args.mode, **train_options})
        for key in ("minutes", "iterations", "device", "seed", "objective", "mode", "init_model"):
            train_options.pop(key, None)
    try:
        fractions = [float(f) for f in re.split(r"[,\s]+", args.curve_fractions) if f]
        sweep = [float(g) for g in re.split(r"[,\s]+", args.prior_weight_sweep) if g]
    except ValueError:
        raise ValueError(f"--curve-fractions and --prior-weight-sweep take comma-separated numbers, got "
                         f"'{args.curve_fractions}' and '{args.prior_weight_sweep}'.") from None
    return BenchConfig(
        dataset=str(args.dataset), annotation=args.annotation, methods=expand_methods(args.methods),
        minutes=args.minutes, iterations=args.iterations, device=args.device, seed=args.seed,
        test_fraction=args.test_fraction, train_groups=args.train_groups, test_groups=args.test_groups,
        split=split, max_cases=args.max_cases, drop_rate=args.drop_rate, labelled=args.labelled,
        slice_fraction=args.slice_fraction, per_slice=args.per_slice, points_per_object=args.points_per_object,
        point_radius_mm=args.point_radius,
        background_per_slice=args.background_per_slice, size_margin=args.size_margin,
        with_scribbles=args.with_scribbles, curve_fractions=fractions,
        finetune_iterations=args.finetune_iterations, finetune_learning_rate=args.finetune_lr,
        prior_weight=args.prior_weight, prior_weight_sweep=sweep,
        trusted_prior_weight=args.trusted_prior_weight or None, stroke_agreement=args.stroke_agreement,
        model=args.model, **read_class_offsets(args.class_offsets),
        growcut_distance_penalty=args.growcut_distance_penalty,
        mode=args.mode, train_options=train_options, largest_component=args.largest_component,
        inside=list(args.inside))


def read_class_offsets(path: str | None) -> dict:
    """``{"class_offsets": [...], "class_offsets_source": "..."}`` from a calibrated model folder (its
    ``model.json``'s ``calibration``) or a JSON file ``{"offsets": [...]}``; ``{}`` without a path."""
    if path is None:
        return {}
    from WeakSegLib.utils import describe_value, read_json_object

    file = Path(path) / "model.json" if Path(path).is_dir() else Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"--class-offsets '{path}' is neither a model folder nor a JSON file; give a model "
                                f"folder calibrated by 'weakseg calibrate' or a file {{\"offsets\": [...]}}.")
    data = read_json_object(file, f"--class-offsets file '{file}'")
    calibration = data.get("calibration", data) if file.name == "model.json" else data
    offsets = calibration.get("offsets") if isinstance(calibration, dict) else None
    if not (isinstance(offsets, list) and offsets and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in offsets)):
        raise ValueError(f"--class-offsets '{file}' has no offsets (one number per class), got "
                         f"{describe_value(offsets)}; calibrate the model first (weakseg calibrate).")
    groups = calibration.get("groups") if isinstance(calibration, dict) else None
    source = str(path) + (f" ({len(groups)} patients)" if isinstance(groups, list) else "")
    return {"class_offsets": [float(v) for v in offsets], "class_offsets_source": source}


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, write its outputs into ``--out`` and print one line per method."""
    from WeakSegLib.utils import check_output_path

    config = config_from_args(args)
    check_output_path(args.out, "--out", overwrite=True, folder=True)      # a writable folder; bench.json is
    if (Path(args.out) / "bench.json").exists() and not args.overwrite:    # not replaced without --overwrite
        raise FileExistsError(f"'{Path(args.out) / 'bench.json'}' exists; pass --overwrite or choose another --out.")
    report = run_bench(config, args.out, overwrite=args.overwrite)
    out = Path(args.out)
    for name, res in report["methods"].items():
        dice = res.get("mean_dice")
        status = f"mean Dice {dice:.3f}" if dice is not None else f"{res['status']} ({res.get('reason', '')})"
        print(f"{METHOD_LABELS[name]:<42} {status}")
    print(f"Benchmark written to {out / 'bench.md'}, {out / 'bench.json'} and {out / 'dice_vs_time.png'}.")
    return 0
