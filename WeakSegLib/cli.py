"""The ``weakseg`` command (also ``python -m WeakSegLib``).

Subcommands: demo, train, predict, evaluate, simulate, bench, worker.  Errors are one readable
line on stderr and a non-zero exit code (``--debug`` shows the traceback); nothing is overwritten
unless ``--overwrite`` is given.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path

logger = logging.getLogger("WeakSegLib")

EXIT_ERROR = 1
DEMO_ITERATIONS = 600
EXIT_USAGE = 2


# ---------------------------------------------------------------------------------------------
class ProgressPrinter:
    """Progress for people (a one-line bar on stderr) or machines (JSON lines on stdout)."""

    def __init__(self, kind: str = "bar"):
        self.kind = kind
        self.start = time.monotonic()
        self._last = 0.0

    def __call__(self, event: dict) -> None:
        if self.kind == "jsonl":
            print(json.dumps(event), flush=True)
            return
        if self.kind == "none":
            return
        now = time.monotonic()
        frac = float(event.get("fraction", 0.0))
        if now - self._last < 0.5 and frac < 1.0:
            return
        self._last = now
        width = 30
        filled = int(round(width * frac))
        eta = event.get("eta_s")
        eta_s = f" ETA {int(eta // 60)}:{int(eta % 60):02d}" if eta is not None else ""
        msg = str(event.get("message", ""))[:60]
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {frac * 100:5.1f}%{eta_s}  {msg:<60}")
        if frac >= 1.0:
            sys.stderr.write("\n")
        sys.stderr.flush()


def _add_common_train_options(p: argparse.ArgumentParser) -> None:
    budget = p.add_argument_group("budget (time is the main knob)")
    budget.add_argument("--minutes", type=float, default=None,
                        help="train for this many minutes of wall time, preparation included (default 2)")
    budget.add_argument("--iterations", type=int, default=None,
                        help="train for exactly this many iterations (reproducible runs)")
    p.add_argument("--device", default=None, help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--seed", type=int, default=None, help="random seed (default 0)")
    p.add_argument("--config", default=None, help="JSON file with TrainConfig options (see docs)")
    from .training.modes import MODES

    p.add_argument("--mode", default=None, choices=sorted(MODES), metavar="MODE",
                   help="learning mode (default 'standard'): " + ", ".join(sorted(MODES)) +
                        "; options go in --config as mode_options (see README, Learning modes)")
    p.add_argument("--objective", choices=["auto", "pce", "full"], default=None,
                   help="auto: assembled from the annotations (default); pce: plain partial CE baseline; "
                        "full: Dice+CE on ground truth (upper bound)")
    p.add_argument("--progress", choices=["bar", "jsonl", "none"], default="bar",
                   help="progress bar for people (default), JSON lines for machines, or nothing")


def _config_from_args(args: argparse.Namespace, default_budget: tuple[float | None, int | None] = (2.0, None)):
    """TrainConfig from --config and the flags; ``default_budget`` (minutes, iterations) applies when neither
    the command line nor the config file gives a budget."""
    from .training.config import TrainConfig, read_config_file

    data = TrainConfig().to_dict()
    from_file: dict = {}
    if args.config:
        from_file = read_config_file(args.config)
        if "iterations" in from_file and "minutes" not in from_file:
            data["minutes"] = None           # an iteration budget alone means no time limit
        data.update(from_file)   # validated once below, after the command-line overrides
    if args.minutes is not None or args.iterations is not None:
        data["minutes"] = args.minutes
        data["iterations"] = args.iterations
    elif "minutes" not in from_file and "iterations" not in from_file:
        data["minutes"], data["iterations"] = default_budget
    for key in ("device", "seed", "mode", "objective"):
        value = getattr(args, key, None)
        if value is not None:
            data[key] = value
    return TrainConfig.from_dict(data)


# ---------------------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from .dataset import load_dataset
    from .training import train

    out = Path(args.out)
    if out.exists() and any(out.iterdir()) and not (args.overwrite or args.resume):
        raise FileExistsError(f"Output folder '{out}' exists and is not empty. Pass --overwrite to replace the "
                              f"model, --resume to continue its checkpoint, or choose another --out.")
    config = _config_from_args(args)
    dataset = load_dataset(args.dataset)
    validation = load_dataset(args.validation) if args.validation else None
    main_rank = int(os.environ.get("RANK", "0")) == 0          # under torchrun only rank 0 talks
    if main_rank:
        logger.info("Training on %d case(s) of '%s' (%s)", len(dataset), dataset.name,
                    ", ".join(dataset.class_names))
    result = train(dataset, config, out, progress=ProgressPrinter(args.progress), validation=validation,
                   resume=args.resume)
    if main_rank:
        print(f"Model written to {out} ({result.iterations} iterations, {result.seconds:.0f} s, {result.status}).")
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    from .model import Model, predict_ensemble
    from .volume import read_volume, write_volume

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


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    # Reproducible by default: DEMO_ITERATIONS, a few minutes on 2 CPU cores.
    config = _config_from_args(args, default_budget=(None, DEMO_ITERATIONS))
    report = run_demo(Path(args.out), config, progress=ProgressPrinter(args.progress), overwrite=args.overwrite)
    fg = report["test"]["mean_dice"]
    print(f"Demo done in {report['seconds_total']:.0f} s: held-out mean Dice {fg:.3f}. Outputs in {args.out} "
          f"(report.json, overlay.png, segmentation.nii.gz).")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from .worker import run_worker

    return run_worker(Path(args.job))


def cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run_bench_cli

    return run_bench_cli(args)


# ---------------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="weakseg",
        description="WeakSeg: train a segmentation CNN from weak annotations (scribbles, points, boxes, tags, "
                    "size ranges, partial labels) and segment new volumes.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("demo", help="the main job on the embedded synthetic phantom: simulate scribbles + sizes, "
                                    "train, predict, evaluate, render an overlay PNG")
    p.add_argument("--out", default="demo_output", help="output folder (default demo_output)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    _add_common_train_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("train", help="train a model on a dataset folder (dataset.json)")
    p.add_argument("--dataset", required=True, help="dataset folder or its dataset.json")
    p.add_argument("--out", required=True, help="model folder to write")
    p.add_argument("--validation", default=None, help="optional held-out dataset with ground truth (Dice per epoch)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing model folder")
    _add_common_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", help="segment images with one model or an ensemble")
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
    p.set_defaults(func=cmd_predict)

    try:
        from .cli_simulate import add_evaluate_parser, add_simulate_parser

        add_simulate_parser(sub)
        add_evaluate_parser(sub)
    except ImportError:  # pragma: no cover - during development only
        pass

    try:
        from .bench import add_bench_parser

        add_bench_parser(sub)
    except ImportError:
        p = sub.add_parser("bench", help="benchmark on a dataset with ground truth (see README)")
        p.set_defaults(func=cmd_bench)

    p = sub.add_parser("worker", help="run a training job folder (used by the Slicer module); JSON lines on stdout")
    p.add_argument("job", help="job folder written by WeakSegLib.worker.write_job")
    p.set_defaults(func=cmd_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO if args.command != "worker"
                        else logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not getattr(args, "func", None):
        parser.print_help()
        return EXIT_USAGE
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("weakseg: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, OSError) as exc:
        if args.debug:
            raise
        message = str(exc).strip().replace("\n", " ") or type(exc).__name__
        print(f"weakseg {args.command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
