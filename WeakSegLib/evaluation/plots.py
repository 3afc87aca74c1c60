"""PNG figures a person can look at: segmentation overlays, training curves, benchmark Dice vs time (matplotlib).

Figures are drawn on their own Agg canvas (``matplotlib.figure.Figure``), never through pyplot's
global state: drawing a figure does not switch the backend of a notebook or a GUI that imports us.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from WeakSegLib.data.annotation import UNKNOWN


def _rgba(labels: np.ndarray, classes, alpha: float = 0.45) -> np.ndarray:
    out = np.zeros(labels.shape + (4,), np.float32)
    for c in classes:
        if c.id == 0:
            continue
        m = labels == c.id
        out[m, :3] = np.asarray(c.color, np.float32) / 255.0
        out[m, 3] = alpha
    return out


BACKGROUND_SCRIBBLE = (0.1, 0.9, 0.1)      # bright green: unlike any class colour of the phantom or ACDC


def _scribble_rgba(labels: np.ndarray, classes) -> np.ndarray:
    out = np.zeros(labels.shape + (4,), np.float32)
    for c in classes:
        m = labels == c.id
        col = (np.asarray(c.color, np.float32) / 255.0) if c.id else np.array(BACKGROUND_SCRIBBLE, np.float32)
        out[m, :3] = col
        out[m, 3] = 1.0
    return out


def _figure(figsize: tuple[float, float]):
    """A matplotlib Figure with its own Agg canvas (no pyplot, no backend switch)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _pick_slices(gt: np.ndarray, n: int = 3) -> list[int]:
    """``n`` slices spread over the foreground, swapped so that every class shows on at least one."""
    fg = np.nonzero((gt > 0).reshape(gt.shape[0], -1).any(1))[0]
    if fg.size == 0:
        return list(np.linspace(0, gt.shape[0] - 1, n).astype(int))
    picks = [int(fg[int(round(q * (fg.size - 1)))]) for q in np.linspace(0.2, 0.8, n)]
    areas = [(gt == c).reshape(gt.shape[0], -1).sum(1) for c in np.unique(gt) if c > 0]
    swap = n - 1
    for area in sorted(areas, key=lambda a: a.sum()):     # smallest class first
        if swap < 0 or any(area[z] > 0 for z in picks):
            continue
        picks[swap] = int(np.argmax(area))
        swap -= 1
    return sorted(picks)


def plot_overlay(image: np.ndarray, scribbles: np.ndarray | None, prediction: np.ndarray, ground_truth: np.ndarray,
                 path: str | Path, classes: Sequence, title: str = "", extra: tuple | None = None) -> Path:
    """Rows of (image, scribbles, prediction, ground truth) on three slices; ``extra`` adds a second case."""
    from matplotlib.patches import Rectangle

    rows = [(image, scribbles, prediction, ground_truth, title)]
    if extra is not None:
        rows.append(extra)
    n_slices = 3
    fig = _figure((10, 2.6 * n_slices * len(rows)))
    axes = fig.subplots(len(rows) * n_slices, 4, squeeze=False)
    for r, (img, scr, pred, gt, name) in enumerate(rows):
        img = img[..., 0] if img.ndim == 4 else img
        for j, z in enumerate(_pick_slices(gt, n_slices)):
            ax_row = axes[r * n_slices + j]
            lo, hi = np.percentile(img, [1, 99])
            for ax in ax_row:
                ax.imshow(img[z], cmap="gray", vmin=lo, vmax=hi)
                ax.set_xticks([])
                ax.set_yticks([])
            if scr is not None:
                s = np.where(scr[z] == UNKNOWN, -1, scr[z])
                ax_row[1].imshow(_scribble_rgba(s, classes))
            ax_row[2].imshow(_rgba(pred[z], classes))
            ax_row[3].imshow(_rgba(gt[z], classes))
            ax_row[0].set_ylabel(f"slice {z}")
            if j == 0:
                ax_row[0].set_title(f"{name}\nimage", fontsize=9)
                ax_row[1].set_title("scribbles" if scr is not None else "(no annotation used)", fontsize=9)
                ax_row[2].set_title("WeakSeg prediction", fontsize=9)
                ax_row[3].set_title("ground truth", fontsize=9)
    handles = [Rectangle((0, 0), 1, 1, color=np.asarray(c.color) / 255.0) for c in classes if c.id]
    names = [c.name for c in classes if c.id]
    if any(r[1] is not None for r in rows):
        handles.append(Rectangle((0, 0), 1, 1, color=BACKGROUND_SCRIBBLE))
        names.append("background scribble")
    fig.legend(handles, names, loc="lower center", ncol=len(handles))
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=90)
    return path


def plot_training_curve(history: list[dict], path: str | Path) -> Path:
    """Loss terms (log scale) and constraint violations against iterations."""
    rows = [h for h in history if "terms" in h]
    fig = _figure((11, 4))
    ax1, ax2 = fig.subplots(1, 2)
    if rows:
        its = [h["iteration"] for h in rows]
        names = sorted({k for h in rows for k in h["terms"]})
        for name in names:
            ax1.plot(its, [max(h["terms"].get(name, np.nan), 1e-6) for h in rows], label=name)
        ax1.plot(its, [h["loss"] for h in rows], "k-", lw=2, label="total")
        ax1.set_yscale("log")
        vnames = sorted({k for h in rows for k in h.get("violations", {})})
        for name in vnames:
            ax2.plot(its, [h.get("violations", {}).get(name, np.nan) for h in rows], ".-", label=name)
    ax1.set_xlabel("iteration")
    ax1.set_title("loss terms")
    ax1.legend(fontsize=8)
    ax2.set_xlabel("iteration")
    ax2.set_title("fraction of violated constraints")
    ax2.set_ylim(-0.05, 1.05)
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=90)
    return path


def plot_dice_vs_time(report: dict, path: str | os.PathLike, styles: Mapping[str, tuple[str, str]],
                      trained: Sequence[str], seeded: Sequence[str] = (), untrained: Sequence[str] = ()) -> Path:
    """Mean test Dice of a ``weakseg bench`` report against training time, one PNG.

    ``report["methods"][name]`` holds ``label``, ``mean_dice`` and, per kind of method: ``trained``
    methods a ``curve`` (points with ``seconds`` and ``mean_dice``), drawn as lines; ``seeded``
    methods (a trained model plus test-volume seeds) a ``train_seconds`` and
    ``predict_seconds_per_volume``, drawn as one marker; ``untrained`` methods (on the test seeds,
    no training) a ``predict_seconds_per_volume``, drawn as a horizontal line.  ``styles`` maps each
    method to its ``(colour, marker)``.  Time is in seconds, or minutes when a curve reaches 2 min.
    """
    methods = report["methods"]
    longest = max([p.get("seconds") or 0.0 for r in methods.values() for p in r.get("curve", [])] + [0.0])
    unit, per = ("min", 60.0) if longest >= 120 else ("s", 1.0)
    fig = _figure((8.5, 5.2))
    ax = fig.subplots()
    xmax = 1.0
    for name in trained:
        res = methods.get(name, {})
        curve = [p for p in res.get("curve", []) if p.get("mean_dice") is not None
                 and not math.isnan(p["mean_dice"])]
        color, marker = styles[name]
        if not curve:
            if res.get("status") == "loaded" and res.get("mean_dice") is not None:   # a model given, not trained
                ax.axhline(res["mean_dice"], color=color, ls=":", lw=2,
                           label=f"{res['label']} (model trained before): {res['mean_dice']:.3f}")
            continue
        xs = [p["seconds"] / per for p in curve]
        ax.plot(xs, [p["mean_dice"] for p in curve], marker=marker, color=color, lw=2,
                label=f"{res['label']}: {curve[-1]['mean_dice']:.3f}")
        xmax = max(xmax, max(xs))
    for name in seeded:
        res = methods.get(name, {})
        if res.get("mean_dice") is None:
            continue
        color, marker = styles[name]
        if res.get("train_seconds") is None:   # from a model trained before: no training time to place it at
            ax.axhline(res["mean_dice"], color=color, ls="-.", lw=2,
                       label=f"{res['label']}: {res['mean_dice']:.3f} "
                             f"({res['predict_seconds_per_volume']:.1f} s/volume)")
            continue
        per_volume = res["predict_seconds_per_volume"]
        ax.plot([res["train_seconds"] / per], [res["mean_dice"]], marker=marker, color=color, ms=14,
                ls="none", label=f"{res['label']}: {res['mean_dice']:.3f} (+{per_volume:.1f} s/volume)")
    for name in untrained:
        res = methods.get(name, {})
        if res.get("mean_dice") is None:
            continue
        color, marker = styles[name]
        ax.axhline(res["mean_dice"], color=color, ls="--", lw=1.5,
                   label=f"{res['label']} on test scribbles (no training): {res['mean_dice']:.3f} "
                         f"({res['predict_seconds_per_volume']:.1f} s/volume)")
    ax.set_xlim(0, xmax * 1.05)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"training time ({unit}, data preparation included)")
    ax.set_ylabel("mean foreground Dice on the test volumes")
    ax.grid(alpha=0.3)
    env = report["environment"]
    ax.set_title(f"{report['dataset']} — {report['annotation']}: {report['n_train']} training / "
                 f"{report['n_test']} test volumes (split by patient)\n{env['device']}", fontsize=10)
    # Below the axes, so it never hides a curve.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
