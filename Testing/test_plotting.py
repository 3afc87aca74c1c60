"""PNG figures: the overlay picks slices that show every class, and writes a real PNG."""

from __future__ import annotations

import numpy as np

from WeakSegLib.annotation import UNKNOWN
from WeakSegLib.phantom import make_phantom
from WeakSegLib.plotting import _pick_slices, plot_overlay


def test_picked_slices_show_every_class_even_a_small_one():
    gt = np.zeros((30, 20, 20), np.int16)
    gt[5:25, 5:15, 5:15] = 1          # a large class over most slices
    gt[27, 2:4, 2:4] = 2              # a tiny class on one slice, outside the quantile picks
    picks = _pick_slices(gt, 3)
    assert len(picks) == 3 and 27 in picks
    assert all((gt[z] == 1).any() for z in picks if z != 27)


def test_overlay_png_is_written(tmp_path):
    from WeakSegLib.phantom import PHANTOM_CLASSES

    case = make_phantom(seed=0)
    image, gt = case.image, case.ground_truth
    scribbles = np.full(gt.array.shape, UNKNOWN, np.int16)
    z = int(np.argmax((gt.array > 0).reshape(gt.array.shape[0], -1).sum(1)))
    scribbles[z][gt.array[z] == 1] = 1
    scribbles[z, :3, :3] = 0
    path = plot_overlay(image.array, scribbles, gt.array, gt.array, tmp_path / "overlay.png", PHANTOM_CLASSES,
                        title="phantom")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 10_000
