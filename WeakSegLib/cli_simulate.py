"""``weakseg simulate`` and ``weakseg evaluate``: argparse sub-commands, wired into ``WeakSegLib.cli``.

Each ``add_*_parser(subparsers)`` adds one sub-command whose ``func`` is a handler
``(args) -> int`` (0 on success).  Handlers raise ``FileNotFoundError`` / ``ValueError`` with a
clear message on bad input; the main CLI turns exceptions into one-line errors.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from .annotation import WeakAnnotation
from .metrics import evaluate, format_report, summarise, to_jsonable
from .simulate import KINDS, simulate
from .volume import SUPPORTED_EXTENSIONS, check_same_geometry, read_volume

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- simulate
def add_simulate_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``simulate``: weak annotations from a ground-truth file, or a whole phantom dataset."""
    p = subparsers.add_parser(
        "simulate", help="simulate weak annotations from ground truth, or write a synthetic phantom dataset",
        description="Simulate weak annotations (scribbles, points, boxes, tags, sizes, partial labels) "
                    "from a ground-truth label map, or write a synthetic phantom dataset folder (--phantom).")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--gt", metavar="GT", help="ground-truth label map (NIfTI/NRRD/MHA; 0 = background, "
                        "1..K = classes) to simulate an annotation from")
    source.add_argument("--phantom", metavar="OUT_DIR", help="write a synthetic phantom dataset (images, "
                        "ground truth, simulated annotations, dataset.json) to this folder instead")
    p.add_argument("--kind", default="scribbles", choices=KINDS,
                   help="annotation to simulate (default: scribbles)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same annotation "
                   "(default: 0)")
    p.add_argument("--out", metavar="LABELS", help="where to write the simulated voxel labels (-1 = "
                   "unannotated), e.g. case_scribble.nii.gz; without it only the summary is printed")
    p.add_argument("--sidecar", metavar="OUT.json", help="where to write the JSON sidecar (boxes, tags, "
                   "sizes, complete classes); default: next to --out, with .json, when the annotation has "
                   "such parts")
    p.add_argument("--image", metavar="IMG", help="image the ground truth belongs to: checked to share its "
                   "voxel grid, so the labels can be used with it")
    p.add_argument("--num-classes", type=int, help="number of classes including background (default: the "
                   "largest label in the ground truth + 1)")
    p.add_argument("--cases", type=int, default=4, help="number of phantom cases with --phantom (default: 4)")
    p.add_argument("--slice-fraction", type=float, help="scribbles: fraction of the slices holding each "
                   "class that get strokes (default: 1.0)")
    p.add_argument("--points-per-object", type=int, help="points: points per connected object (default: 1)")
    p.add_argument("--radius-mm", type=float, help="points: radius of each rasterised point in mm "
                   "(default: 0, one voxel)")
    p.add_argument("--jitter-mm", type=float, help="boxes: enlarge each face by a random 0..J mm "
                   "(default: 0, tight boxes)")
    p.add_argument("--per-slice", action="store_true", help="boxes and tags: one per 2D slice (along z) "
                   "instead of per volume")
    p.add_argument("--margin", type=float, help="sizes: relative margin of the size ranges (default: 0.1, "
                   "i.e. true size +/- 10%%)")
    p.add_argument("--drop-rate", type=float, help="partial: probability that a class is dropped "
                   "(default: 0.5)")
    p.set_defaults(func=run_simulate)
    return p


_OPTION_FOR_KIND = {  # CLI option -> (simulator keyword, kinds it applies to)
    "slice_fraction": ("slice_fraction", {"scribbles"}),
    "points_per_object": ("n_per_object", {"points"}),
    "radius_mm": ("radius_mm", {"points"}),
    "jitter_mm": ("jitter_mm", {"boxes"}),
    "per_slice": ("per_slice", {"boxes", "tags", "tags+sizes"}),
    "margin": ("margin", {"sizes", "tags+sizes"}),
    "drop_rate": ("drop_rate", {"partial"}),
}


def _simulation_options(args: argparse.Namespace) -> dict:
    options = {}
    for attr, (keyword, kinds) in _OPTION_FOR_KIND.items():
        value = getattr(args, attr, None)
        if value is None or value is False:
            continue
        flag = "--" + attr.replace("_", "-")
        if args.kind not in kinds:
            raise ValueError(f"{flag} does not apply to --kind {args.kind}; it is for "
                             f"{', '.join(sorted(kinds))}.")
        options[keyword] = value
    return options


def _default_sidecar(out: Path) -> Path:
    name = out.name
    for ext in sorted(SUPPORTED_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext):
            return out.with_name(name[: -len(ext)] + ".json")
    return out.with_name(name + ".json")


def _has_sidecar_parts(annotation: WeakAnnotation) -> bool:
    return bool(annotation.boxes or annotation.tags or annotation.slice_tags or annotation.size_ranges_ml
                or annotation.centroid_ranges_mm or annotation.complete_classes)


def run_simulate(args: argparse.Namespace) -> int:
    """Handler of ``weakseg simulate``."""
    options = _simulation_options(args)
    if args.phantom:
        from .phantom import write_phantom_dataset

        if args.out or args.sidecar or args.image or args.num_classes:
            raise ValueError("--out, --sidecar, --image and --num-classes go with --gt, not --phantom (the "
                             "phantom folder gets its own file names).")
        if args.cases < 1:
            raise ValueError(f"--cases must be >= 1, got {args.cases}.")
        manifest = write_phantom_dataset(args.phantom, n_cases=args.cases, seed=args.seed, kind=args.kind,
                                         **options)
        print(f"Wrote a phantom dataset of {args.cases} case(s) with simulated '{args.kind}' annotations: "
              f"{manifest}")
        return 0
    gt = read_volume(args.gt)
    if gt.num_channels != 1:
        raise ValueError(f"The ground truth '{args.gt}' has {gt.num_channels} channels; expected one label "
                         f"map.")
    if args.image:
        image = read_volume(args.image)
        check_same_geometry(image.geometry, gt.geometry, f"image '{args.image}'", f"ground truth '{args.gt}'")
    num_classes = args.num_classes
    if num_classes is None:
        num_classes = max(2, int(gt.array.max()) + 1)
    annotation = simulate(gt, num_classes, args.kind, seed=args.seed, **options)
    print(f"Simulated '{args.kind}' annotation of '{args.gt}' (seed {args.seed}, {num_classes} classes): "
          f"{100.0 * annotation.annotated_fraction():.3f}% of the voxels annotated"
          + (f", {len(annotation.boxes)} box(es)" if annotation.boxes else "")
          + (f", tags {annotation.tags}" if annotation.tags else "")
          + (f", complete classes {sorted(annotation.complete_classes)}"
             if annotation.complete_classes else "")
          + ".")
    if args.sidecar and not args.out:
        raise ValueError("--sidecar needs --out (the labels file the sidecar belongs to).")
    if args.out:
        out = Path(args.out)
        sidecar = Path(args.sidecar) if args.sidecar else (
            _default_sidecar(out) if _has_sidecar_parts(annotation) else None)
        annotation.save(out, sidecar)
        print(f"Wrote {out}" + (f" and {sidecar}" if sidecar else ""))
    return 0


# ---------------------------------------------------------------------------------------- evaluate
def add_evaluate_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``evaluate``: Dice, HD95, ASD and volumes of predicted segmentations against ground truth."""
    p = subparsers.add_parser(
        "evaluate", help="compare predicted segmentations with ground truth (Dice, HD95, ASD, volumes)",
        description="Compare a predicted label map with the ground truth, or two folders of label maps "
                    "matched by file name, and print a per-class table (mean ± sd over cases for folders).")
    p.add_argument("--pred", required=True, metavar="SEG", help="predicted label map, or a folder of them")
    p.add_argument("--gt", required=True, metavar="GT", help="ground-truth label map, or a folder of them "
                   "(files named like the predictions, optionally with a _gt suffix)")
    p.add_argument("--classes", metavar="NAMES", help="comma-separated class names, background first (e.g. "
                   "Background,RV,Myo,LV); default: class_<id> for the classes present")
    p.add_argument("--json", metavar="OUT", help="also write the full report (per case and summary) as JSON; "
                   "undefined distances (a class empty in one map only) are written as null")
    p.set_defaults(func=run_evaluate)
    return p


def _label_files(folder: Path) -> list[Path]:
    return sorted(f for f in folder.iterdir()
                  if f.is_file() and f.name.lower().endswith(SUPPORTED_EXTENSIONS))


def _split_ext(name: str) -> tuple[str, str]:
    for ext in sorted(SUPPORTED_EXTENSIONS, key=len, reverse=True):
        if name.lower().endswith(ext):
            return name[: -len(ext)], name[-len(ext):]
    return name, ""


def match_folders(pred_dir: Path, gt_dir: Path) -> list[tuple[str, Path, Path]]:
    """Pairs ``(case name, prediction, ground truth)`` matched by file name.

    When the ground-truth folder holds ``*_gt.<ext>`` files, only those are ground truth (so an ACDC
    folder with images next to the labels works) and ``X_gt.nii.gz`` matches a prediction named
    ``X_gt.nii.gz`` or ``X.nii.gz``.  Every ground truth needs a prediction, or ``ValueError`` lists
    the missing ones.
    """
    gt_files = _label_files(gt_dir)
    suffixed = [f for f in gt_files if _split_ext(f.name)[0].endswith("_gt")]
    if suffixed:
        gt_files = suffixed
    if not gt_files:
        raise FileNotFoundError(f"No label maps ({', '.join(SUPPORTED_EXTENSIONS)}) in the ground-truth "
                                f"folder '{gt_dir}'.")
    preds = {f.name: f for f in _label_files(pred_dir)}
    pairs, missing = [], []
    for g in gt_files:
        stem, ext = _split_ext(g.name)
        base = stem[:-3] if stem.endswith("_gt") else stem
        candidates = [g.name, base + ext] + [base + e for e in SUPPORTED_EXTENSIONS]
        match = next((preds[c] for c in candidates if c in preds), None)
        if match is None:
            missing.append(g.name)
        else:
            pairs.append((base, match, g))
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ValueError(f"No prediction in '{pred_dir}' for {len(missing)} ground truth file(s): {shown}. "
                         f"Name each prediction like its ground truth (with or without the _gt suffix).")
    return pairs


def run_evaluate(args: argparse.Namespace) -> int:
    """Handler of ``weakseg evaluate``."""
    pred_path, gt_path = Path(args.pred), Path(args.gt)
    for what, path in (("prediction", pred_path), ("ground truth", gt_path)):
        if not path.exists():
            raise FileNotFoundError(f"The {what} '{path}' does not exist (give a label-map file or a folder "
                                    f"of them).")
    if pred_path.is_dir() != gt_path.is_dir():
        raise ValueError(f"--pred and --gt must both be files or both be folders; got '{pred_path}' and "
                         f"'{gt_path}'.")
    class_names = None
    if args.classes:
        class_names = [n.strip() for n in args.classes.split(",") if n.strip()]
        if len(class_names) < 2:
            raise ValueError(f"--classes lists background first and at least one class, got "
                             f"'{args.classes}'.")
    if pred_path.is_dir():
        pairs = match_folders(pred_path, gt_path)
    else:
        pairs = [(_split_ext(gt_path.name)[0], pred_path, gt_path)]
    reports = {}
    for name, p, g in pairs:
        reports[name] = evaluate(read_volume(p), read_volume(g), class_names)
        logger.info("Evaluated %s: mean Dice %.3f", name, reports[name]["mean"]["dice"])
    if len(reports) == 1:
        (name, report), = reports.items()
        print(f"{name}:")
        print(format_report(report))
        output = {"cases": reports}
    else:
        summary = summarise(list(reports.values()))
        print(f"{len(reports)} cases, mean ± sd over cases:")
        print(format_report(summary))
        output = {"cases": reports, "summary": summary}
    if args.json:
        out = Path(args.json)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(to_jsonable(output), indent=2))
        print(f"Wrote {out}")
    return 0
