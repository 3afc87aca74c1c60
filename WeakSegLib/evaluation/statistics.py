"""Paired comparison of two methods scored on the same test volumes: bootstrap interval and Wilcoxon test.

:func:`paired_difference` takes two per-volume score lists (e.g. mean Dice of method A and method B on
each test volume) and says how sure "A scores above B" is; :func:`describe_paired_difference` turns
its result into one line for a report.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def paired_difference(a: Sequence[float], b: Sequence[float], strata: Sequence[object] | None = None,
                      clusters: Sequence[object] | None = None, n_boot: int = 10000, seed: int = 0) -> dict:
    """How sure is "method A scores above method B" over the same test volumes?

    ``a[i]`` and ``b[i]`` are the two methods' scores on volume ``i`` (NaN pairs are left out).  Returns
    the mean and median of ``a - b``, a 95 % percentile bootstrap interval of the mean (``n_boot``
    resamples with replacement, seeded), how often A wins / loses / ties, and the two-sided p-value of
    Wilcoxon's signed-rank test (``None`` with fewer than 2 non-zero differences).

    ``clusters`` (e.g. the patient of each volume) makes the bootstrap resample whole clusters, so
    that correlated volumes (two frames of one heart) do not count as independent evidence; the
    mean of a resample is then over the volumes it holds.  ``strata`` (e.g. the benchmark run each
    volume comes from) makes it resample within each stratum, each keeping its number of clusters.
    """
    from scipy import stats

    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired_difference needs two equally long 1D score lists, got {a.shape} and {b.shape}.")

    def codes(values: Sequence[object] | None, name: str) -> np.ndarray:
        if values is None:
            return np.arange(len(a))
        if len(values) != len(a):
            raise ValueError(f"{name} has {len(values)} entries for {len(a)} score pairs.")
        return np.unique(np.asarray([str(v) for v in values]), return_inverse=True)[1]

    groups = np.zeros(len(a), int) if strata is None else codes(strata, "strata")
    cluster = codes(clusters, "clusters")
    keep = ~(np.isnan(a) | np.isnan(b))
    diff, groups, cluster = (a - b)[keep], groups[keep], cluster[keep]
    n = len(diff)
    if n == 0:
        raise ValueError("paired_difference: no volume has a score for both methods.")
    rng = np.random.default_rng(seed)
    total, count, n_clusters = np.zeros(n_boot), np.zeros(n_boot), 0
    for g in np.unique(groups):
        in_g = groups == g
        ids = np.unique(cluster[in_g])              # a cluster split over strata is resampled in each
        sums = np.array([diff[in_g & (cluster == c)].sum() for c in ids])
        sizes = np.array([np.count_nonzero(in_g & (cluster == c)) for c in ids], float)
        pick = rng.integers(0, len(ids), size=(n_boot, len(ids)))
        total += sums[pick].sum(axis=1)
        count += sizes[pick].sum(axis=1)
        n_clusters += len(ids)
    boot = total / count
    nonzero = diff[diff != 0]
    p_value = float(stats.wilcoxon(nonzero).pvalue) if len(nonzero) >= 2 else None
    return {"n": int(n), "clusters": n_clusters,
            "mean": float(diff.mean()), "median": float(np.median(diff)),
            "ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
            "wins": int((diff > 0).sum()), "losses": int((diff < 0).sum()), "ties": int((diff == 0).sum()),
            "wilcoxon_p": p_value}


def describe_paired_difference(d: dict, digits: int = 3) -> str:
    """One line for a report: ``+0.022 (95 % CI -0.002..+0.053; better on 16 of 40 volumes; Wilcoxon p 0.22)``."""
    f = f"{{:+.{digits}f}}"
    p = "" if d.get("wilcoxon_p") is None else f"; Wilcoxon p {d['wilcoxon_p']:.2g}"
    unit = "" if d.get("clusters", d["n"]) == d["n"] else f", resampling {d['clusters']} patients"
    return (f"{f.format(d['mean'])} (95 % CI {f.format(d['ci95'][0])}..{f.format(d['ci95'][1])}{unit}; better "
            f"on {d['wins']} of {d['n']} volumes, median {f.format(d['median'])}{p})")
