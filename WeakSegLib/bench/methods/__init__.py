"""The benchmark's methods, one module per family; each runs on a :class:`~WeakSegLib.bench.context.BenchContext`
and returns its record for ``bench.json`` (:func:`~WeakSegLib.bench.scoring.method_record`)."""

from __future__ import annotations

from WeakSegLib.bench.context import BenchContext
from WeakSegLib.bench.methods.geodesic import run_interactive_geodesic
from WeakSegLib.bench.methods.growcut import run_growcut
from WeakSegLib.bench.methods.interactive import run_interactive_finetune, run_interactive_seeds
from WeakSegLib.bench.methods.offsets import run_weakseg_offsets
from WeakSegLib.bench.methods.trained import OBJECTIVES, run_trained

__all__ = ["run_growcut", "run_interactive_finetune", "run_interactive_geodesic", "run_interactive_seeds", "run_method",
           "run_trained", "run_weakseg_offsets"]


def run_method(name: str, context: BenchContext) -> dict:
    """Run method ``name`` (one of :data:`~WeakSegLib.bench.config.METHODS`) and return its record."""
    if name in OBJECTIVES:
        return run_trained(name, context)
    runners = {"growcut": run_growcut, "interactive-seeds": run_interactive_seeds,
               "interactive-finetune": run_interactive_finetune, "interactive-geodesic": run_interactive_geodesic,
               "weakseg-offsets": run_weakseg_offsets}
    return runners[name](context)
