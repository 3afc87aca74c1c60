"""WeakSeg against a baseline over several ``weakseg bench`` runs, paired per test volume and pooled.

    python benchmarks/paired_comparison.py benchmarks/results/acdc_real_scribbles_seed0/bench.json \
        benchmarks/results/acdc_real_scribbles_seed1/bench.json

prints, for each run and for all runs together, the mean difference of the per-volume mean Dice,
its 95 % bootstrap interval (pooled: resampled within each run), wins/losses and Wilcoxon's p
(``WeakSegLib.bench.pooled_comparison``); ``--json FILE`` also writes them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from WeakSegLib.bench import pooled_comparison  # noqa: E402
from WeakSegLib.evaluation.statistics import describe_paired_difference  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("reports", nargs="+", help="bench.json files of runs with both methods")
    p.add_argument("--baseline", default="pce", help="method compared against (default: pce)")
    p.add_argument("--method", default="weakseg", help="method compared (default: weakseg)")
    p.add_argument("--json", help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    reports = []
    for path in args.reports:
        try:
            reports.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            p.error(f"cannot read benchmark report '{path}': {exc}")
    try:
        result = pooled_comparison(reports, args.baseline, args.method)
    except ValueError as exc:
        p.error(str(exc))
    for path, run in zip(args.reports, result["runs"]):
        print(f"{path} (seed {run['seed']}): {describe_paired_difference(run)}")
    print(f"pooled, {result['pooled']['n']} volumes: {describe_paired_difference(result['pooled'])}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
