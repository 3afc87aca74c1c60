"""``weakseg evaluate``: Dice, HD95, ASD and volumes of predicted segmentations against ground truth."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from WeakSegLib.data.volume import SUPPORTED_EXTENSIONS, read_label_map
from WeakSegLib.evaluation.metrics import evaluate, summarise
from WeakSegLib.evaluation.reports import format_report, to_jsonable
from WeakSegLib.utils import atomic_write_json, check_output_path

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
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
    p.add_argument("--overwrite", action="store_true", help="replace an existing --json file")
    p.set_defaults(func=run)
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


def run(args: argparse.Namespace) -> int:
    """Handler of ``weakseg evaluate``."""
    pred_path, gt_path = Path(args.pred), Path(args.gt)
    for what, path in (("prediction", pred_path), ("ground truth", gt_path)):
        if not path.exists():
            raise FileNotFoundError(f"The {what} '{path}' does not exist (give a label-map file or a folder "
                                    f"of them).")
    if args.json:
        check_output_path(args.json, "--json", args.overwrite, inputs=[pred_path, gt_path])
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
        reports[name] = evaluate(read_label_map(p, "prediction"), read_label_map(g, "ground truth"), class_names)
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
        out = atomic_write_json(args.json, to_jsonable(output))
        print(f"Wrote {out}")
    return 0
