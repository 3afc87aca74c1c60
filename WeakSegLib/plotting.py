"""PNG figures a person can look at: segmentation overlays and training curves (matplotlib)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .annotation import UNKNOWN


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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(image, scribbles, prediction, ground_truth, title)]
    if extra is not None:
        rows.append(extra)
    n_slices = 3
    fig, axes = plt.subplots(len(rows) * n_slices, 4, figsize=(10, 2.6 * n_slices * len(rows)), squeeze=False)
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
    handles = [plt.Rectangle((0, 0), 1, 1, color=np.asarray(c.color) / 255.0) for c in classes if c.id]
    names = [c.name for c in classes if c.id]
    if any(r[1] is not None for r in rows):
        handles.append(plt.Rectangle((0, 0), 1, 1, color=BACKGROUND_SCRIBBLE))
        names.append("background scribble")
    fig.legend(handles, names, loc="lower center", ncol=len(handles))
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path = Path(path)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_training_curve(history: list[dict], path: str | Path) -> Path:
    """Loss terms (log scale) and constraint violations against iterations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [h for h in history if "terms" in h]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
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
    plt.close(fig)
    return path
