"""Options shared by the commands: budget, device, seed, config file, mode (train, demo); the component rule
(predict, bench, calibrate)."""

from __future__ import annotations

import argparse


def add_training_options(p: argparse.ArgumentParser) -> None:
    """Add the budget (--minutes / --iterations), --device, --seed, --config, --mode, --objective, --progress."""
    budget = p.add_argument_group("budget (time is the main knob)")
    budget.add_argument("--minutes", type=float, default=None,
                        help="train for this many minutes of wall time, preparation included (default 2)")
    budget.add_argument("--iterations", type=int, default=None,
                        help="train for exactly this many iterations (reproducible runs)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--config", default=None, help="JSON file with TrainConfig options (see docs)")
    from WeakSegLib.training.modes import MODES

    p.add_argument("--mode", default=None, choices=sorted(MODES), metavar="MODE",
                   help="learning mode (default 'standard'): " + ", ".join(sorted(MODES)) +
                        "; options go in --config as mode_options (see docs/learning-modes.md)")
    p.add_argument("--objective", choices=["auto", "pce", "full"], default=None,
                   help="auto: assembled from the annotations (default); pce: plain partial CE baseline; "
                        "full: Dice+CE on ground truth (upper bound)")
    p.add_argument("--progress", choices=["bar", "jsonl", "none"], default="bar",
                   help="progress bar for people (default), JSON lines for machines, or nothing")


def config_from_args(args: argparse.Namespace, default_budget: tuple[float | None, int | None] | None = None):
    """TrainConfig from --config and the flags (``TrainConfig.from_layers``: the budget rule of every door);
    ``default_budget`` (minutes, iterations) applies when neither the command line nor the file gives one."""
    from WeakSegLib.config import TrainConfig, read_config_file

    layers: list[dict] = []
    if default_budget is not None:
        layers.append({"minutes": default_budget[0], "iterations": default_budget[1]})
    if args.config:
        layers.append(read_config_file(args.config))        # types checked, naming the file
        mode = {"mode": args.mode} if getattr(args, "mode", None) else {}   # the file's mode_options are for it
        try:                                                  # ranges, still naming the file
            TrainConfig.from_layers(*layers, mode)
        except ValueError as exc:
            raise ValueError(f"Config file '{args.config}': {exc}") from None
    flags = {key: getattr(args, key, None) for key in ("minutes", "iterations", "device", "seed", "mode", "objective")}
    layers.append({key: value for key, value in flags.items() if value is not None})
    return TrainConfig.from_layers(*layers)


def add_largest_component_option(p: argparse.ArgumentParser, what: str) -> None:
    """--largest-component [class|object]: alone it means "class" (each class's largest component)."""
    from WeakSegLib.inference.postprocessing import COMPONENT_RULES

    p.add_argument("--largest-component", nargs="?", const="class", default=None, choices=COMPONENT_RULES,
                   metavar="{class,object}",
                   help=f"{what}: each class's largest connected component ('class', the value when none is "
                        "given), or each class's largest component within the object where all classes meet "
                        "('object': of the foreground's components, the one with the largest geometric mean of "
                        "its class sizes; structures that touch, like the heart's)")
    p.add_argument("--inside", action="append", default=[], metavar="INNER:OUTER",
                   help="a class that lies inside another, by name or number (e.g. LV:Myo; repeatable): of the "
                        "inner class's components at least a tenth the size of its largest, keep the one whose "
                        "in-plane border touches the outer class most, not the largest (implies "
                        "--largest-component when that is not given)")
