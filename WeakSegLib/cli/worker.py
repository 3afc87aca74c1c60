"""``weakseg worker JOB``: run a job folder (the Slicer module's training process); JSON lines on stdout."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("worker", help="run a training job folder (used by the Slicer module); "
                                             "JSON lines on stdout")
    p.add_argument("job", help="job folder written by WeakSegLib.jobs.worker.write_job")
    p.set_defaults(func=run)
    return p


def run(args: argparse.Namespace) -> int:
    from WeakSegLib.jobs.worker import run_worker

    return run_worker(Path(args.job))
