"""Metric reports for people and files: a plain-text table, and JSON without NaN.

:func:`format_report` writes an :func:`~WeakSegLib.evaluation.metrics.evaluate` report or a
:func:`~WeakSegLib.evaluation.metrics.summarise` summary as a table; :func:`to_jsonable` makes any
report writable as strict JSON (NaN and Inf as ``null``, numpy scalars as Python numbers).
"""

from __future__ import annotations

import math

import numpy as np

from WeakSegLib.evaluation.metrics import METRIC_KEYS


def to_jsonable(obj):
    """A copy of a report with NaN/Inf replaced by ``None`` and numpy scalars made plain Python."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def format_report(report: dict, digits: int = 3) -> str:
    """A plain-text table of an :func:`evaluate` report or a :func:`summarise` summary (mean ± sd)."""
    header = ["class", "Dice", "HD95 mm", "ASD mm", "vol pred mL", "vol GT mL", "vol err mL"]

    def cell(value) -> str:
        if isinstance(value, dict):  # summary: mean ± sd
            if value["n"] == 0:
                return "n/a"
            text = f"{value['mean']:.{digits}f} ± {value['sd']:.{digits}f}"
            return text + (f" ({value['skipped']} skipped)" if value["skipped"] else "")
        return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"

    rows = [[name] + [cell(m[k]) for k in METRIC_KEYS] for name, m in report["classes"].items()]
    rows.append(["mean (fg)"] + [cell(report["mean"][k]) for k in METRIC_KEYS])
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines.extend("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in rows)
    skipped = report.get("skipped", {})
    notes = [f"{k}: {v}" for k, v in skipped.items() if v]
    if notes:
        lines.append("NaN values left out of the mean (a class empty in one map only): " + ", ".join(notes))
    return "\n".join(lines)
