"""WeakSeg against each baseline, paired over the test volumes, within one run or pooled over several runs."""

from __future__ import annotations

from collections.abc import Sequence

from WeakSegLib.evaluation.statistics import paired_difference

# WeakSeg against each baseline, paired over the test volumes (a method that ran on them all).
COMPARED_WITH = ("pce", "naive", "growcut", "full")


def per_case_mean_dice(result: dict) -> dict[str, float]:
    """A method's mean foreground Dice on each test volume (NaN where it has none)."""
    return {cid: float("nan") if r["mean"]["dice"] is None else float(r["mean"]["dice"])
            for cid, r in (result.get("per_case") or {}).items()}


def paired_comparisons(methods: dict, groups: dict[str, str] | None = None) -> dict:
    """``{"weakseg-vs-pce": statistics.paired_difference(...), ...}`` for every baseline run next to WeakSeg
    (and ``"weakseg-offsets-vs-weakseg"``: the same model with and without class offsets).

    ``groups`` (test case id -> patient, the report's ``split["test_case_groups"]``): the bootstrap
    resamples patients, not volumes (both frames of a heart are one piece of evidence)."""
    out = {}
    for name in COMPARED_WITH:
        ids, ours, theirs = _paired_scores(methods, "weakseg", name)
        if ids:
            out[f"weakseg-vs-{name}"] = paired_difference(ours, theirs, clusters=_clusters(ids, groups))
    ids, ours, theirs = _paired_scores(methods, "weakseg-offsets", "weakseg")
    if ids:
        out["weakseg-offsets-vs-weakseg"] = paired_difference(ours, theirs, clusters=_clusters(ids, groups))
    return out


def _paired_scores(methods: dict, method: str, baseline: str) -> tuple[list[str], list[float], list[float]]:
    """The test volumes both methods scored, and their per-volume mean Dice (``[]`` when none)."""
    ours = per_case_mean_dice(methods.get(method, {}))
    theirs = per_case_mean_dice(methods.get(baseline, {}))
    ids = [cid for cid in ours if cid in theirs]
    return ids, [ours[c] for c in ids], [theirs[c] for c in ids]


def _clusters(ids: list[str], groups: dict[str, str] | None) -> list[str] | None:
    return [groups.get(i, i) for i in ids] if groups else None


def pooled_comparison(reports: Sequence[dict], baseline: str = "pce", method: str = "weakseg") -> dict:
    """``method`` against ``baseline`` over several benchmark runs (e.g. two split seeds), paired per test
    volume and pooled: every run's volumes count, the bootstrap resamples within each run
    (:func:`~WeakSegLib.evaluation.statistics.paired_difference` with the runs as strata and, where the
    reports name them, the patients as clusters).  Returns ``{"runs": [...], "pooled": ...}``."""
    a, b, strata, clusters, runs = [], [], [], [], []
    for i, report in enumerate(reports):
        ids, ours, theirs = _paired_scores(report["methods"], method, baseline)
        if not ids:
            raise ValueError(f"Benchmark report {i + 1} has no test volume scored by both '{method}' and "
                             f"'{baseline}' (methods: {', '.join(report['methods'])}).")
        groups = _clusters(ids, report.get("split", {}).get("test_case_groups"))
        a += ours
        b += theirs
        strata += [i] * len(ids)
        clusters += groups or ids
        runs.append({"seed": report.get("config", {}).get("seed"),
                     **paired_difference(ours, theirs, clusters=groups)})
    return {"method": method, "baseline": baseline, "runs": runs,
            "pooled": paired_difference(a, b, strata=strata, clusters=clusters)}
