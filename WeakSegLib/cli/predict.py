"""``weakseg predict``: segment images with one model or an ensemble."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from WeakSegLib.cli.options import add_largest_component_option

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("predict", help="segment images with one model or an ensemble, or complete strokes")
    p.add_argument("--model", default=None, nargs="+",
                   help="model folder(s); several = ensemble.  Without --model, --strokes are completed on their "
                        "own: a classifier fit on the painted voxels and geodesic competition between the strokes "
                        "(paint the background too)")
    p.add_argument("--image", required=True, nargs="+",
                   help="image file(s) (NIfTI/NRRD/MHA); with --channels, the files are the channels of one case")
    p.add_argument("--channels", action="store_true", help="treat several --image files as channels of one case")
    p.add_argument("--out", required=True, help="output label file, or a folder for several images")
    p.add_argument("--probabilities", default=None, help="also write per-class probabilities (z,y,x,C) here "
                   "(a file, or a folder for several images)")
    p.add_argument("--tta", action="store_true", help="flip test-time augmentation")
    add_largest_component_option(p, "keep one component per class")
    p.add_argument("--strokes", default=None,
                   help="the user's strokes on the image (a label map on its grid): the result keeps every "
                        "painted voxel's label and follows the strokes where the network disagrees with them")
    p.add_argument("--unannotated", type=int, default=-1,
                   help="--strokes: the value of unpainted voxels (-1, WeakSeg's convention; e.g. 4 for the "
                        "ACDC scribbles)")
    p.add_argument("--cache", default=None,
                   help="--strokes: a .npz file that keeps the network's probabilities and the last result for "
                        "the next call on the same image and model (a warm start: an Update after a corrective "
                        "stroke skips the network and walks only the slices whose strokes changed); created "
                        "if missing, replaced when it belongs to another image or model")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, ...")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)
    return p


def plan_outputs(args: argparse.Namespace) -> list[tuple[str | list[str], Path, Path | None]]:
    """``(image(s), label output, probabilities output)`` per case, every path checked before any work:
    a supported extension, no two outputs on one file, no output on an input, nothing existing without
    --overwrite, a writable folder."""
    from WeakSegLib.data.volume import SUPPORTED_EXTENSIONS
    from WeakSegLib.utils import check_distinct_outputs, check_output_path

    out = Path(args.out)
    probabilities = Path(args.probabilities) if args.probabilities else None
    for image in args.image:
        if not Path(image).is_file():
            raise FileNotFoundError(f"--image '{image}' does not exist" + (" (it is a folder)" if Path(image).is_dir()
                                                                         else "") + ".")
    if args.channels or len(args.image) == 1:
        jobs = [(args.image if args.channels else args.image[0], out, probabilities)]   # one case -> one file
    else:                                                                              # several -> a folder
        if out.name.lower().endswith(SUPPORTED_EXTENSIONS):
            raise ValueError(f"Several --image files need --out to be a folder, got the file name '{out}' (or pass "
                             f"--channels if they are the channels of one case).")
        names: dict[str, str] = {}
        for image in args.image:
            name = Path(image).name
            if name in names:
                raise ValueError(f"Two --image files are named '{name}' ('{names[name]}' and '{image}'); their "
                                 f"segmentations would be written to one file in '{out}'. Predict them into "
                                 f"separate --out folders.")
            names[name] = image
        jobs = [(image, out / Path(image).name, None if probabilities is None else probabilities / Path(image).name)
                for image in args.image]
    if not args.model and not args.strokes:
        raise ValueError("Give --model (a trained model folder), or --strokes to complete the user's strokes "
                         "without a model.")
    if not args.model and (args.cache or args.tta or args.probabilities):
        raise ValueError("--cache, --tta and --probabilities need a network: give --model, or leave them out to "
                         "complete --strokes without a model.")
    if args.strokes and len(jobs) != 1:
        raise ValueError("--strokes belong to one image: give one --image (or its --channels) with them.")
    if args.strokes and not Path(args.strokes).is_file():
        raise FileNotFoundError(f"--strokes '{args.strokes}' does not exist.")
    if args.cache and not args.strokes:
        raise ValueError("--cache keeps what completing --strokes computed: give it with --strokes.")
    if args.cache:
        from WeakSegLib.inference.strokes import StrokeCache

        StrokeCache(args.cache).check()               # a .npz path, not a folder, not another kind of file
        cache = Path(args.cache).resolve()
        if any(Path(p).resolve() == cache for p in [*args.image, args.strokes, args.out]):
            raise ValueError(f"--cache '{args.cache}' is one of the command's input or output files; give the "
                             f"cache a file of its own.")
    inputs = [*args.image, *(Path(m) / f for m in args.model or () for f in ("model.json", "weights.pt"))]
    inputs += [args.strokes] if args.strokes else []
    outputs = []
    for _, target, prob in jobs:
        for what, path in (("--out", target), ("--probabilities", prob)):
            if path is None:
                continue
            if not path.name.lower().endswith(SUPPORTED_EXTENSIONS):
                raise ValueError(f"{what} '{path}' needs an image extension ({', '.join(SUPPORTED_EXTENSIONS)}).")
            check_output_path(path, what, args.overwrite, inputs=inputs)
            outputs.append((f"{what} '{path}'", path))
    check_distinct_outputs(outputs)
    return jobs


def run(args: argparse.Namespace) -> int:
    from WeakSegLib.data.volume import read_volume, write_volume
    from WeakSegLib.inference.postprocessing import rule_with_inside
    from WeakSegLib.model import Model, predict_ensemble

    jobs = plan_outputs(args)
    models = [Model.load(m, device=args.device or "auto") for m in args.model or ()]
    if models:
        args.largest_component = rule_with_inside(args.largest_component, args.inside, models[0].class_names)
    elif args.inside:
        raise ValueError("--inside names the classes of a model; give --model (or drop --inside).")
    for image, target, prob_path in jobs:
        volume = read_volume(image)
        volume.check_finite(f"image '{image}'")
        if not models:
            write_volume(_strokes_without_model(args, volume), target)
            print(f"Segmentation completing the strokes of '{args.strokes}' (no model) written to {target}")
            continue
        for model in models:
            for warning in model.input_warnings(volume, f"image '{image}'"):
                logger.warning("%s", warning)
        if args.strokes:
            write_volume(_complete_strokes(args, models, volume), target)
            print(f"Segmentation completing the strokes of '{args.strokes}' written to {target}")
            continue
        pred = predict_ensemble(models, volume, tta=args.tta, return_probabilities=prob_path is not None,
                                largest_component=args.largest_component)
        write_volume(pred.labels, target)
        if prob_path is not None:
            write_volume(pred.probabilities, prob_path)
        print(f"Segmentation written to {target}" + (f" (probabilities: {prob_path})" if prob_path else ""))
    return 0


def _complete_strokes(args: argparse.Namespace, models, volume):
    """``--strokes``: the model(s)' prediction completed by the user's strokes (one readable error if the
    strokes are not a label map on the image's grid)."""
    import numpy as np

    from WeakSegLib.data.annotation import UNKNOWN
    from WeakSegLib.inference.strokes import complete_strokes

    if args.tta or args.probabilities:
        raise ValueError("--strokes cannot be combined with --tta or --probabilities.")
    array = _read_strokes(args, volume)
    num_classes = len(models[0].class_names)
    extra = sorted(set(np.unique(array[(array != UNKNOWN) & ((array < 0) | (array >= num_classes))]).tolist()))
    if extra:
        hint = f" (e.g. --unannotated {extra[0]})" if len(extra) == 1 else ""
        raise ValueError(f"--strokes '{args.strokes}' holds the value(s) {extra}, which are not classes of the model "
                         f"(0..{num_classes - 1}: {', '.join(models[0].class_names)}); give the value of the "
                         f"unpainted voxels with --unannotated{hint}.")
    return complete_strokes(models, volume, array, largest_component=args.largest_component, cache=args.cache)


def _read_strokes(args: argparse.Namespace, volume):
    """The --strokes label map on the image's grid, ``UNKNOWN`` where unpainted."""
    import numpy as np

    from WeakSegLib.data.annotation import UNKNOWN
    from WeakSegLib.data.volume import check_same_geometry, read_label_map

    strokes = read_label_map(args.strokes, "--strokes")
    check_same_geometry(volume.geometry, strokes.geometry, "image", f"strokes '{args.strokes}'")
    return np.where(strokes.array == args.unannotated, UNKNOWN, strokes.array).astype(np.int16)


def _strokes_without_model(args: argparse.Namespace, volume):
    """``--strokes`` without ``--model``: :func:`WeakSegLib.inference.geodesic.segment_from_strokes` on the
    image's first channel."""
    import numpy as np

    from WeakSegLib.data.annotation import UNKNOWN
    from WeakSegLib.inference.geodesic import segment_from_strokes

    array = _read_strokes(args, volume)
    negative = sorted(set(np.unique(array[(array != UNKNOWN) & (array < 0)]).tolist()))
    if negative:
        raise ValueError(f"--strokes '{args.strokes}' holds the negative value(s) {negative}; class ids are >= 0: give "
                         f"the value of the unpainted voxels with --unannotated.")
    values, counts = np.unique(array[array != UNKNOWN], return_counts=True)
    if counts.size and counts.max() > array.size / 2:   # strokes cover a few per cent of a volume
        value = int(values[np.argmax(counts)])
        raise ValueError(f"The value {value} covers {100 * counts.max() / array.size:.0f} % of the voxels of --strokes "
                         f"'{args.strokes}': if it marks the unpainted voxels, give --unannotated {value}.")
    return volume.with_array(segment_from_strokes(volume.first_channel(), array, volume.geometry.spacing_zyx,
                                                  largest_component=args.largest_component))
