"""Metrics against hand-computed values (Dice, HD95/ASD with anisotropic spacing) and a brute-force oracle."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import ndimage
from scipy.spatial.distance import cdist

from WeakSegLib.data.volume import Geometry, GeometryMismatchError, Volume
from WeakSegLib.evaluation.metrics import (
    average_surface_distance,
    dice,
    evaluate,
    hd95,
    summarise,
    volume_error_ml,
)
from WeakSegLib.evaluation.reports import format_report, to_jsonable
from WeakSegLib.evaluation.statistics import describe_paired_difference, paired_difference


def _cube(shape, start, size, value=1):
    arr = np.zeros(shape, np.int16)
    z, y, x = start
    arr[z:z + size, y:y + size, x:x + size] = value
    return arr


def _brute_force(a: np.ndarray, b: np.ndarray, spacing) -> tuple[float, float]:
    """HD95 (max of directed 95th percentiles) and symmetric ASD from all surface-voxel pairs."""
    structure = ndimage.generate_binary_structure(3, 1)
    sa = np.argwhere(a & ~ndimage.binary_erosion(a, structure, border_value=0)) * np.asarray(spacing)
    sb = np.argwhere(b & ~ndimage.binary_erosion(b, structure, border_value=0)) * np.asarray(spacing)
    d = cdist(sa, sb)
    d_ab, d_ba = d.min(axis=1), d.min(axis=0)
    return max(np.percentile(d_ab, 95), np.percentile(d_ba, 95)), float(np.concatenate([d_ab, d_ba]).mean())


# ---------------------------------------------------------------------------------------- Dice
def test_dice_hand_computed():
    gt = np.array([[[1, 1, 0, 0, 2, 2]]])
    pred = np.array([[[1, 0, 0, 2, 2, 2]]])
    d = dice(pred, gt)
    assert d[1] == pytest.approx(2 * 1 / (1 + 2))
    assert d[2] == pytest.approx(2 * 2 / (3 + 2))
    assert set(d) == {1, 2}


def test_dice_empty_cases():
    empty = np.zeros((2, 3, 3), np.int16)
    full = np.ones((2, 3, 3), np.int16)
    assert dice(empty, empty, labels=[1]) == {1: 1.0}
    assert dice(full, empty, labels=[1]) == {1: 0.0}
    assert dice(empty, full, labels=[1]) == {1: 0.0}
    assert dice(empty, empty) == {}  # no class present, none requested


def test_dice_accepts_volumes_and_bool_masks():
    a = np.zeros((2, 4, 4), bool)
    a[0, :2, :2] = True
    assert dice(Volume(a), Volume(a.astype(np.uint8))) == {1: 1.0}


# ---------------------------------------------------------------------------------------- surface distances
@pytest.mark.parametrize("axis, spacing_zyx, expected_hd, expected_asd", [
    # 3x3x3 cubes, the second 3 voxels further along one axis (no overlap). The 26 surface voxels
    # of one cube lie 1, 2 and 3 voxel steps from the other's facing side (9, 8 and 9 of them):
    # HD95 = 3 steps, ASD = (9*1 + 8*2 + 9*3) / 26 = 2 steps; a step is the spacing along that axis.
    (0, (2.5, 1.0, 1.0), 7.5, 5.0),
    (2, (2.5, 1.0, 0.8), 2.4, 1.6),
    (1, (3.0, 0.7, 1.1), 2.1, 1.4),
])
def test_hd95_and_asd_offset_cubes_anisotropic(axis, spacing_zyx, expected_hd, expected_asd):
    shape = (12, 12, 12)
    gt = _cube(shape, (2, 2, 2), 3)
    start = [2, 2, 2]
    start[axis] += 3
    pred = _cube(shape, tuple(start), 3)
    assert hd95(pred, gt, spacing_zyx, [1])[1] == pytest.approx(expected_hd)
    assert hd95(gt, pred, spacing_zyx, [1])[1] == pytest.approx(expected_hd)
    assert average_surface_distance(pred, gt, spacing_zyx, [1])[1] == pytest.approx(expected_asd)


def test_single_voxels_distance_is_the_physical_offset():
    a = np.zeros((8, 8, 8), np.int16)
    b = a.copy()
    a[2, 2, 2] = 1
    b[5, 2, 6] = 1  # 3 slices (2 mm) and 4 columns (0.5 mm) away
    expected = math.hypot(3 * 2.0, 4 * 0.5)
    assert hd95(a, b, (2.0, 1.0, 0.5))[1] == pytest.approx(expected)
    assert average_surface_distance(a, b, (2.0, 1.0, 0.5))[1] == pytest.approx(expected)


def test_identical_masks_have_zero_distance():
    gt = _cube((10, 10, 10), (1, 2, 3), 4, value=2)
    assert hd95(gt, gt, (1.0, 1.0, 1.0))[2] == 0.0
    assert average_surface_distance(gt, gt, (3.0, 1.0, 1.0))[2] == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_surface_distances_match_brute_force(seed):
    rng = np.random.default_rng(seed)
    shape = (9, 14, 13)
    spacing = (3.0, 0.9, 1.3)
    a = ndimage.binary_opening(rng.random(shape) > 0.55)
    b = ndimage.binary_opening(rng.random(shape) > 0.6)
    a[0, :3, :3] = True  # masks touching the image border: border voxels are surface
    b[-1, -4:, -2:] = True
    exp_hd, exp_asd = _brute_force(a, b, spacing)
    assert hd95(a.astype(int), b.astype(int), spacing, [1])[1] == pytest.approx(exp_hd)
    assert average_surface_distance(a.astype(int), b.astype(int), spacing, [1])[1] == pytest.approx(exp_asd)


def test_surface_distance_crop_is_exact_away_from_the_border():
    shape = (20, 30, 30)
    a = _cube(shape, (5, 5, 5), 4).astype(bool)
    b = _cube(shape, (8, 12, 6), 5).astype(bool)
    exp_hd, exp_asd = _brute_force(a, b, (2.0, 1.0, 1.0))
    assert hd95(a, b, (2.0, 1.0, 1.0), [1])[1] == pytest.approx(exp_hd)
    assert average_surface_distance(a, b, (2.0, 1.0, 1.0), [1])[1] == pytest.approx(exp_asd)


def test_empty_masks():
    empty = np.zeros((4, 4, 4), np.int16)
    one = _cube((4, 4, 4), (1, 1, 1), 2)
    assert hd95(empty, empty, (1, 1, 1), [1]) == {1: 0.0}
    assert average_surface_distance(empty, empty, (1, 1, 1), [1]) == {1: 0.0}
    assert math.isnan(hd95(one, empty, (1, 1, 1), [1])[1])
    assert math.isnan(hd95(empty, one, (1, 1, 1), [1])[1])
    assert math.isnan(average_surface_distance(empty, one, (1, 1, 1), [1])[1])


def test_volume_error_ml():
    gt = _cube((5, 5, 5), (0, 0, 0), 2)  # 8 voxels
    pred = _cube((5, 5, 5), (0, 0, 0), 3)  # 27 voxels
    assert volume_error_ml(pred, gt, 0.002)[1] == pytest.approx(19 * 0.002)
    assert volume_error_ml(gt, pred, 0.002)[1] == pytest.approx(-19 * 0.002)


def test_ill_inputs():
    a = np.zeros((3, 3, 3), np.int16)
    with pytest.raises(ValueError, match="shape"):
        dice(a, np.zeros((3, 3, 4), np.int16))
    with pytest.raises(ValueError, match="integer class ids"):
        dice(a.astype(float) + 0.5, a)
    with pytest.raises(ValueError, match=r"\(z, y, x\)"):
        dice(np.zeros((3, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="spacing_zyx"):
        hd95(a, a, (1.0, 0.0, 1.0))
    with pytest.raises(ValueError, match="voxel_volume_ml"):
        volume_error_ml(a, a, 0.0)


# ------------------------------------------------------------------------------------ evaluate / summarise
def _geometry(shape=(6, 10, 10)):
    return Geometry(shape, (0.8, 0.8, 2.5), (10.0, -20.0, 5.0))


def test_evaluate_report_and_means_skip_nan():
    g = _geometry()
    gt = np.zeros(g.shape, np.int16)
    gt[1:4, 2:6, 2:6] = 1
    gt[4:6, 6:9, 6:9] = 2
    pred = gt.copy()
    pred[pred == 2] = 0  # class 2 missed entirely: Dice 0, HD95/ASD undefined
    report = evaluate(Volume(pred, g), Volume(gt, g), ["Background", "A", "B", "C"])
    a, b, c = report["classes"]["A"], report["classes"]["B"], report["classes"]["C"]
    assert a["dice"] == 1.0 and a["hd95_mm"] == 0.0 and a["asd_mm"] == 0.0 and a["id"] == 1
    assert a["volume_gt_ml"] == pytest.approx(48 * g.voxel_volume_ml)
    assert a["volume_error_ml"] == 0.0
    assert b["dice"] == 0.0 and math.isnan(b["hd95_mm"]) and math.isnan(b["asd_mm"])
    assert b["volume_error_ml"] == pytest.approx(-18 * g.voxel_volume_ml)
    assert c["dice"] == 1.0 and c["hd95_mm"] == 0.0  # absent in both: correct
    assert report["mean"]["dice"] == pytest.approx(2 / 3)
    assert report["mean"]["hd95_mm"] == 0.0
    assert report["skipped"] == {"dice": 0, "hd95_mm": 1, "asd_mm": 1, "volume_pred_ml": 0,
                                 "volume_gt_ml": 0, "volume_error_ml": 0}
    text = json.dumps(to_jsonable(report), allow_nan=False)
    assert json.loads(text)["classes"]["B"]["hd95_mm"] is None
    table = format_report(report)
    assert "A" in table and "n/a" in table and "hd95_mm: 1" in table


def test_evaluate_default_names_and_geometry_mismatch():
    g = _geometry()
    gt = np.zeros(g.shape, np.int16)
    gt[2, 2:5, 2:5] = 3
    report = evaluate(Volume(gt, g), Volume(gt, g))
    assert list(report["classes"]) == ["class_3"]
    other = Geometry(g.shape, (0.8, 0.8, 3.0), g.origin)
    with pytest.raises(GeometryMismatchError) as info:
        evaluate(Volume(gt, other), Volume(gt, g))
    assert "spacing (x,y,z)=(0.8, 0.8, 3)" in str(info.value) and "(0.8, 0.8, 2.5)" in str(info.value)
    with pytest.raises(ValueError, match="class id"):
        evaluate(Volume(gt, g), Volume(gt, g), ["Background", "A"])
    with pytest.raises(TypeError):
        evaluate(gt, gt)


def test_summarise_mean_sd_and_skipped():
    g = _geometry()
    gt = np.zeros(g.shape, np.int16)
    gt[1:3, 1:5, 1:5] = 1
    half = gt.copy()
    half[2] = 0
    reports = [evaluate(Volume(gt, g), Volume(gt, g), ["bg", "A"]),
               evaluate(Volume(half, g), Volume(gt, g), ["bg", "A"]),
               evaluate(Volume(np.zeros_like(gt), g), Volume(gt, g), ["bg", "A"])]
    summary = summarise(reports)
    dice_stats = summary["classes"]["A"]["dice"]
    values = [1.0, 2 * 16 / 48, 0.0]
    assert dice_stats["mean"] == pytest.approx(np.mean(values))
    assert dice_stats["sd"] == pytest.approx(np.std(values, ddof=1))
    assert dice_stats["n"] == 3 and dice_stats["skipped"] == 0
    hd = summary["classes"]["A"]["hd95_mm"]
    assert hd["n"] == 2 and hd["skipped"] == 1
    assert summary["n_cases"] == 3
    assert summary["mean"]["dice"]["mean"] == pytest.approx(np.mean(values))
    assert "±" in format_report(summary)
    with pytest.raises(ValueError):
        summarise([])


def test_paired_difference_hand_values():
    # Five volumes, A better on each by 1..5: exact two-sided Wilcoxon p = 2 / 2**5.
    d = paired_difference([1.0, 2.0, 3.0, 4.0, 5.0], [0.0] * 5)
    assert d["n"] == 5 and d["mean"] == 3.0 and d["median"] == 3.0
    assert (d["wins"], d["losses"], d["ties"]) == (5, 0, 0)
    assert d["wilcoxon_p"] == pytest.approx(0.0625)
    assert 1.0 <= d["ci95"][0] < 3.0 < d["ci95"][1] <= 5.0
    # A constant difference has a zero-width interval; NaN pairs are left out; ties are counted.
    c = paired_difference([0.5, 0.6, np.nan, 0.7, 0.2], [0.4, 0.5, 0.9, 0.6, 0.2])
    assert c["n"] == 4 and (c["wins"], c["ties"]) == (3, 1)
    assert c["mean"] == pytest.approx(0.075) and 0.0 <= c["ci95"][0] <= c["mean"] <= c["ci95"][1] <= 0.1
    assert describe_paired_difference(d).startswith("+3.000 (95 % CI +")
    assert "better on 5 of 5 volumes" in describe_paired_difference(d)


def test_paired_difference_bootstrap_interval_and_strata():
    rng = np.random.default_rng(3)
    diff = rng.normal(0.02, 0.05, 400)
    d = paired_difference(diff, np.zeros_like(diff))
    se = diff.std(ddof=1) / np.sqrt(len(diff))
    # The percentile interval of the mean is about mean +- 1.96 standard errors.
    assert d["ci95"][0] == pytest.approx(diff.mean() - 1.96 * se, abs=0.4 * se)
    assert d["ci95"][1] == pytest.approx(diff.mean() + 1.96 * se, abs=0.4 * se)
    assert d == paired_difference(diff, np.zeros_like(diff))           # seeded
    # Two runs (strata) of different sizes: the mean weighs volumes, and resampling stays within a run,
    # so a run whose volumes all differ by the same amount adds no spread.
    a = np.r_[np.full(30, 0.1), np.full(10, -0.1)]
    s = paired_difference(a, np.zeros(40), strata=["seed0"] * 30 + ["seed1"] * 10)
    assert s["mean"] == pytest.approx(0.05) and s["ci95"] == pytest.approx([0.05, 0.05])
    assert paired_difference(a, np.zeros(40))["ci95"][1] > 0.06      # unstratified: the mixture spreads


def test_paired_difference_resamples_clusters():
    # Two frames of each of 20 hearts: the frames agree, so the evidence is 20 differences, not 40.
    rng = np.random.default_rng(5)
    per_heart = rng.normal(0.02, 0.05, 20)
    diff = np.repeat(per_heart, 2)
    hearts = np.repeat([f"patient{i:03d}" for i in range(20)], 2)
    by_volume = paired_difference(diff, np.zeros(40))
    by_heart = paired_difference(diff, np.zeros(40), clusters=hearts)
    assert by_heart["n"] == 40 and by_heart["clusters"] == 20 and by_volume["clusters"] == 40
    assert by_heart["mean"] == by_volume["mean"]
    width = lambda d: d["ci95"][1] - d["ci95"][0]  # noqa: E731
    assert width(by_heart) == pytest.approx(np.sqrt(2) * width(by_volume), rel=0.15)
    assert width(by_heart) == pytest.approx(width(paired_difference(per_heart, np.zeros(20))), rel=0.1)
    assert "resampling 20 patients" in describe_paired_difference(by_heart)
    assert "resampling" not in describe_paired_difference(by_volume)
    # Clusters of unequal size: a resample's mean is over the volumes it holds.
    one = paired_difference([1.0, 1.0, 1.0, 0.0], [0.0] * 4, clusters=["a", "a", "a", "b"], n_boot=2000)
    assert one["mean"] == 0.75 and one["ci95"] == [0.0, 1.0]


def test_paired_difference_ill_inputs():
    with pytest.raises(ValueError, match="equally long"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="strata"):
        paired_difference([1.0, 2.0], [1.0, 0.0], strata=["a"])
    with pytest.raises(ValueError, match="clusters has 1 entries"):
        paired_difference([1.0, 2.0], [1.0, 0.0], clusters=["a"])
    with pytest.raises(ValueError, match="no volume"):
        paired_difference([np.nan], [1.0])
    assert paired_difference([1.0], [1.0])["wilcoxon_p"] is None
