"""Train a model on the training patients of a split file and save it (a cohort model for ``weakseg bench --model``).

    python benchmarks/train_on_split.py ../shared/data/acdc benchmarks/configs/acdc_val_split.json \\
        benchmarks/configs/acdc_scribbles.json 20 ../models/acdc_cohort48
    # or a fixed number of iterations, whatever the machine's speed: ... 0 ../models/acdc_cohort48 --iterations 2859

trains on the dataset's own annotations of the split's "train" groups only (here the 48 training
patients of the ACDC validation split: the 12 validation and the 20 test patients stay unseen), for the
given minutes on the CPU, with the options of the config file, and writes the model folder.
"""

from __future__ import annotations

import argparse
import time

from WeakSegLib import load_dataset
from WeakSegLib.bench.split import read_split_groups
from WeakSegLib.config import read_config_file
from WeakSegLib.training import TrainConfig, train


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dataset")
    p.add_argument("split", help='JSON {"train": [groups], "test": [groups]}; only "train" is used')
    p.add_argument("config", help="JSON file of TrainConfig options")
    p.add_argument("minutes", type=float)
    p.add_argument("--iterations", type=int, default=None,
                   help="stop after this many iterations instead (then minutes=0 means no time limit)")
    p.add_argument("out", help="model folder to write (must not exist)")
    args = p.parse_args()
    groups = set(read_split_groups(args.split, "train"))
    data = load_dataset(args.dataset)
    subset = data.subset([c.id for c in data.cases if c.group in groups])
    budget = {"minutes": args.minutes or None, "iterations": args.iterations} if args.iterations else {
        "minutes": args.minutes}
    config = TrainConfig.from_layers({"device": "cpu", "seed": 0, **budget}, read_config_file(args.config))
    start = time.perf_counter()
    result = train(subset, config)
    result.model.save(args.out)
    print(f"{len(subset)} volumes of {len(groups)} patients, {result.iterations} iterations in "
          f"{time.perf_counter() - start:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
