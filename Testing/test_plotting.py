"""PNG figures: the overlay picks slices that show every class, and writes a real PNG."""

from __future__ import annotations

import numpy as np

from WeakSegLib.data.annotation import UNKNOWN
from WeakSegLib.data.phantom import make_phantom
from WeakSegLib.evaluation.plots import _pick_slices, plot_overlay


def test_picked_slices_show_every_class_even_a_small_one():
    gt = np.zeros((30, 20, 20), np.int16)
    gt[5:25, 5:15, 5:15] = 1          # a large class over most slices
    gt[27, 2:4, 2:4] = 2              # a tiny class on one slice, outside the quantile picks
    picks = _pick_slices(gt, 3)
    assert len(picks) == 3 and 27 in picks
    assert all((gt[z] == 1).any() for z in picks if z != 27)


def test_overlay_png_is_written(tmp_path):
    from WeakSegLib.data.phantom import PHANTOM_CLASSES

    case = make_phantom(seed=0)
    image, gt = case.image, case.ground_truth
    scribbles = np.full(gt.array.shape, UNKNOWN, np.int16)
    z = int(np.argmax((gt.array > 0).reshape(gt.array.shape[0], -1).sum(1)))
    scribbles[z][gt.array[z] == 1] = 1
    scribbles[z, :3, :3] = 0
    path = plot_overlay(image.array, scribbles, gt.array, gt.array, tmp_path / "overlay.png", PHANTOM_CLASSES,
                        title="phantom")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000


def test_plots_never_switch_the_backend_nor_load_pyplot(tmp_path):
    """A notebook's backend stays as it is: figures are drawn on their own Agg canvas, without pyplot."""
    import subprocess
    import sys

    code = f"""
import sys, matplotlib
matplotlib.use("svg")
import numpy as np
from WeakSegLib.data.phantom import PHANTOM_CLASSES
from WeakSegLib.evaluation.plots import plot_dice_vs_time, plot_overlay, plot_training_curve
gt = np.zeros((6, 20, 20), np.int16)
gt[1:5, 5:15, 5:15] = 1
plot_overlay(gt.astype(np.float32), None, gt, gt, r"{tmp_path}/overlay.png", PHANTOM_CLASSES)
plot_training_curve([{{"iteration": 1, "loss": 1.0, "terms": {{"a": 1.0}}}}], r"{tmp_path}/curve.png")
report = {{"dataset": "d", "annotation": "scribbles", "n_train": 2, "n_test": 1, "environment": {{"device": "CPU"}},
          "methods": {{"a": {{"label": "A", "mean_dice": 0.5, "curve": [{{"seconds": 1.0, "mean_dice": 0.5}}]}},
                      "b": {{"label": "B", "mean_dice": 0.6, "train_seconds": 1.0,
                            "predict_seconds_per_volume": 0.1}},
                      "c": {{"label": "C", "mean_dice": 0.4, "predict_seconds_per_volume": 0.1}}}}}}
styles = {{"a": ("tab:red", "o"), "b": ("tab:blue", "s"), "c": ("tab:gray", "D")}}
plot_dice_vs_time(report, r"{tmp_path}/dvt.png", styles, trained=["a"], seeded=["b"], untrained=["c"])
sys.exit(int(matplotlib.get_backend() != "svg" or "matplotlib.pyplot" in sys.modules))
"""
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0
    for name in ("overlay.png", "curve.png", "dvt.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
