"""How right the random-walker propagated labels are, per class, and how close they come to the borders.

    python benchmarks/propagation_precision.py ../shared/data/acdc benchmarks/configs/acdc_val_split.json \\
        --thresholds 0.5 0.8 0.95 --class-thresholds 0.8,0.8,0.95,0.5 \\
        --out benchmarks/results/acdc_scribbles_validation/propagation_precision.json

On the "train" patients of a split (their masks are the judge; the validation and test patients stay
unseen), walks each volume's scribbles as training does (2D, per slice) and reports, for every
threshold (one for all classes, or one per class): the precision of the walked labels of each class
(scribbled voxels left out) and how many there are, and what the walk says in a band of ``--band``
pixels on each side of a structure's border (``--structure``; default the myocardium, class 2): the
fraction of the band outside it (in ``--outside``, background) and inside it (``--inside``, the LV
cavity) labelled as the neighbour (right) or as the structure (wrong).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi

from WeakSegLib.bench.split import load_groups, read_split_groups
from WeakSegLib.data.annotation import UNKNOWN
from WeakSegLib.training.propagation import propagate_scribbles


def border_bands(truth: np.ndarray, structure: int, neighbour: int, width: int) -> np.ndarray:
    """Pixels of ``neighbour`` within ``width`` pixels of ``structure``, slice by slice (z, y, x)."""
    band = np.zeros(truth.shape, bool)
    for z in range(truth.shape[0]):
        inside = truth[z] == structure
        if inside.any():
            band[z] = ndi.binary_dilation(inside, iterations=width) & (truth[z] == neighbour)
    return band


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset")
    p.add_argument("split", help='JSON {"train": [groups], "test": [groups]}; only "train" is used')
    p.add_argument("--thresholds", type=float, nargs="*", default=[0.5, 0.8, 0.95])
    p.add_argument("--class-thresholds", nargs="*", default=[],
                   help="one threshold per class, comma-separated, background first (e.g. 0.8,0.8,0.95,0.5)")
    p.add_argument("--beta", type=float, default=130.0)
    p.add_argument("--structure", type=int, default=2)
    p.add_argument("--outside", type=int, default=0)
    p.add_argument("--inside", type=int, default=3)
    p.add_argument("--band", type=int, default=2, help="band width in pixels (2)")
    p.add_argument("--out", default=None, help="JSON file to write (not overwritten)")
    args = p.parse_args()
    if args.out and Path(args.out).exists():
        raise SystemExit(f"--out '{args.out}' exists; choose another file.")
    settings = [float(t) for t in args.thresholds] + [[float(v) for v in s.split(",")] for s in args.class_thresholds]
    data = load_groups(args.dataset, read_split_groups(args.split, "train"))
    k = data.num_classes
    names = data.class_names
    acc = [{"right": np.zeros(k), "walked": np.zeros(k), "out_right": 0, "out_wrong": 0, "in_right": 0,
            "in_wrong": 0} for _ in settings]
    band_out = band_in = 0
    start = time.perf_counter()
    for case in data.cases:
        labels, truth = case.annotation.labels, case.ground_truth.array
        outer = border_bands(truth, args.structure, args.outside, args.band)
        inner = border_bands(truth, args.structure, args.inside, args.band)
        band_out += int(outer.sum())
        band_in += int(inner.sum())
        for a, threshold in zip(acc, settings):
            walked = propagate_scribbles(case.image.array, labels, 2, args.beta, threshold,
                                         case.image.geometry.spacing_zyx)
            new = (walked != UNKNOWN) & (labels == UNKNOWN)
            for c in range(k):
                mask = new & (walked == c)
                a["walked"][c] += mask.sum()
                a["right"][c] += (mask & (truth == c)).sum()
            a["out_right"] += int((outer & (walked == args.outside)).sum())
            a["out_wrong"] += int((outer & (walked == args.structure)).sum())
            a["in_right"] += int((inner & (walked == args.inside)).sum())
            a["in_wrong"] += int((inner & (walked == args.structure)).sum())
    rows = []
    for a, threshold in zip(acc, settings):
        rows.append({
            "threshold": threshold,
            "precision": {names[c]: float(a["right"][c] / max(a["walked"][c], 1)) for c in range(k)},
            "walked_voxels": {names[c]: int(a["walked"][c]) for c in range(k)},
            "band_outside": {"as_neighbour": a["out_right"] / max(band_out, 1),
                             "as_structure": a["out_wrong"] / max(band_out, 1)},
            "band_inside": {"as_neighbour": a["in_right"] / max(band_in, 1),
                            "as_structure": a["in_wrong"] / max(band_in, 1)}})
        r = rows[-1]
        out, inn, s = r["band_outside"], r["band_inside"], names[args.structure]
        print(f"threshold {threshold}: precision " + ", ".join(
            f"{n} {r['precision'][n]:.3f} ({r['walked_voxels'][n] / 1e3:.0f}k)" for n in names)
            + f"; {args.band}-px band outside {s}: as {names[args.outside]} {out['as_neighbour']:.3f}, as {s} "
              f"{out['as_structure']:.3f}; inside: as {names[args.inside]} {inn['as_neighbour']:.3f}, as {s} "
              f"{inn['as_structure']:.3f}")
    print(f"{len(data.cases)} volumes, {time.perf_counter() - start:.0f} s")
    if args.out:
        Path(args.out).write_text(json.dumps({"command": vars(args), "volumes": len(data.cases), "rows": rows},
                                             indent=1))


if __name__ == "__main__":
    main()
