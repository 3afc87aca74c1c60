"""``weakseg simulate``: weak annotations from a ground-truth file, or a whole phantom dataset."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from WeakSegLib.data.annotation import WeakAnnotation
from WeakSegLib.data.simulate import KINDS, simulate
from WeakSegLib.data.volume import SUPPORTED_EXTENSIONS, check_same_geometry, read_label_map, read_volume
from WeakSegLib.utils import check_distinct_outputs, check_output_path

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
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
    p.add_argument("--overwrite", action="store_true", help="replace existing output files (with --phantom: "
                   "write into a folder that is not empty)")
    p.set_defaults(func=run)
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


def run(args: argparse.Namespace) -> int:
    """Handler of ``weakseg simulate``."""
    options = _simulation_options(args)
    if args.phantom:
        from WeakSegLib.data.phantom import write_phantom_dataset

        if args.out or args.sidecar or args.image or args.num_classes:
            raise ValueError("--out, --sidecar, --image and --num-classes go with --gt, not --phantom (the "
                             "phantom folder gets its own file names).")
        if args.cases < 1:
            raise ValueError(f"--cases must be >= 1, got {args.cases}.")
        check_output_path(args.phantom, "--phantom", args.overwrite, folder=True)
        manifest = write_phantom_dataset(args.phantom, n_cases=args.cases, seed=args.seed, kind=args.kind,
                                         **options)
        print(f"Wrote a phantom dataset of {args.cases} case(s) with simulated '{args.kind}' annotations: "
              f"{manifest}")
        return 0
    if args.sidecar and not args.out:
        raise ValueError("--sidecar needs --out (the labels file the sidecar belongs to).")
    inputs = [args.gt] + ([args.image] if args.image else [])
    out = Path(args.out) if args.out else None
    if out is not None:
        if not out.name.lower().endswith(SUPPORTED_EXTENSIONS):
            raise ValueError(f"--out '{out}' needs an image extension ({', '.join(SUPPORTED_EXTENSIONS)}), e.g. "
                             f"case_scribbles.nii.gz.")
        check_output_path(out, "--out", args.overwrite, inputs=inputs)
        if args.sidecar:
            check_output_path(args.sidecar, "--sidecar", args.overwrite, inputs=inputs)
            check_distinct_outputs([("--out", out), ("--sidecar", args.sidecar)])
    gt = read_label_map(args.gt, "ground truth")
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
    if out is not None:
        sidecar = Path(args.sidecar) if args.sidecar else (
            _default_sidecar(out) if _has_sidecar_parts(annotation) else None)
        if sidecar is not None and not args.sidecar:
            check_output_path(sidecar, "the sidecar (next to --out)", args.overwrite, inputs=inputs)
        annotation.save(out, sidecar)
        print(f"Wrote {out}" + (f" and {sidecar}" if sidecar else ""))
    return 0

