"""The volume being annotated without a model: the stroke classifier and geodesic competition
(WeakSegLib.inference.geodesic), ``weakseg predict --strokes`` without ``--model``, and the
``interactive-geodesic`` bench method."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from WeakSegLib.data.annotation import UNKNOWN
from WeakSegLib.data.volume import Geometry, Volume, read_volume, write_volume
from WeakSegLib.evaluation.metrics import dice
from WeakSegLib.inference.geodesic import (
    fit_stroke_classifier,
    geodesic_competition,
    segment_from_strokes,
    stroke_features,
    thick_slices,
)

THICK = (10.0, 1.5, 1.5)


def _two_cavities(z: int = 4, noise: float = 0.05, seed: int = 0):
    """Two bright discs of the same brightness in a dark wall (5-6 voxels thick), in a grey background.

    Returns the image, the truth (0 background, 1 left disc, 2 right disc, 3 wall) and strokes: a line
    inside each disc, four on the wall and a background ring, on every slice."""
    yy, xx = np.mgrid[:64, :80]
    truth = np.zeros((64, 80), np.int16)
    truth[(yy - 32) ** 2 + (xx - 40) ** 2 < 24 ** 2] = 3
    truth[(yy - 32) ** 2 + (xx - 29) ** 2 < 8 ** 2] = 1
    truth[(yy - 32) ** 2 + (xx - 51) ** 2 < 8 ** 2] = 2
    image = np.choose(truth, [0.5, 1.0, 1.0, 0.1]).astype(np.float32)
    rng = np.random.default_rng(seed)
    image = np.repeat(image[None], z, 0) + noise * rng.standard_normal((z, 64, 80)).astype(np.float32)
    strokes = np.full((64, 80), UNKNOWN, np.int16)
    strokes[28:37, 29] = 1
    strokes[28:37, 51] = 2
    strokes[32, 38:43] = 3          # the wall: between the discs and along the ring, as a user paints it
    strokes[14, 34:47] = 3
    strokes[50, 34:47] = 3
    strokes[28:37, 18] = 3
    strokes[28:37, 62] = 3
    strokes[8:57, 6] = 0
    strokes[8:57, 74] = 0
    strokes[3, 10:71] = 0
    strokes[61, 10:71] = 0
    assert np.all(truth[strokes != UNKNOWN][None] == strokes[strokes != UNKNOWN])
    return image, np.repeat(truth[None], z, 0), np.repeat(strokes[None], z, 0)


def test_thick_slices_follows_the_spacing():
    assert thick_slices(THICK) and thick_slices((5.0, 1.25, 2.0)) and not thick_slices((1.0, 1.0, 1.0))
    assert not thick_slices((2.5, 1.25, 1.25))


def test_features_are_finite_and_carry_the_position_relative_to_the_foreground_strokes():
    image, _, strokes = _two_cavities()
    features = stroke_features(image, strokes, THICK)
    assert features.shape[:-1] == image.shape and features.dtype == np.float32 and np.all(np.isfinite(features))
    assert features.shape[-1] == 1 + 3 * 5 + 3                  # per-slice: 5 filters per scale, y, x, height
    centre = np.mean(np.nonzero(strokes[0] > 0)[1])             # the x centre of the foreground strokes
    assert np.allclose(features[0, 0, :, -2], (np.arange(80) - centre) * 1.5 / 50.0)     # x, in 50 mm
    assert features[0, 0, 0, -1] == 0.0 and features[-1, 0, 0, -1] == 1.0
    assert stroke_features(image, strokes, (1.0, 1.0, 1.0)).shape[-1] == 1 + 3 * 3 + 3
    with pytest.raises(ValueError, match="shape"):
        stroke_features(image[:2], strokes, THICK)


def test_the_classifier_learns_the_painted_voxels_and_leaves_the_global_random_state_alone():
    image, truth, strokes = _two_cavities()
    features = stroke_features(image, strokes, THICK)
    before = torch.random.get_rng_state()
    probabilities = fit_stroke_classifier(features, strokes, 4)
    assert torch.equal(before, torch.random.get_rng_state())
    assert probabilities.shape == (*image.shape, 4) and np.allclose(probabilities.sum(-1), 1, atol=1e-5)
    painted = strokes != UNKNOWN
    assert np.mean(probabilities.argmax(-1)[painted] == strokes[painted]) > 0.98
    assert np.array_equal(probabilities, fit_stroke_classifier(features, strokes, 4))    # deterministic
    with pytest.raises(ValueError, match="Nothing is painted"):
        fit_stroke_classifier(features, np.full(strokes.shape, UNKNOWN, np.int16), 4)


def test_geodesic_competition_follows_intensity_changes_hand_case():
    # One row: a bright run and a dark run, a stroke at each end; the border is the intensity step.
    image = np.array([[[1, 1, 1, 1, 0, 0, 0, 0]]], np.float32)
    strokes = np.array([[[1, -1, -1, -1, -1, -1, -1, 0]]], np.int16)
    labels = geodesic_competition(image[..., None], strokes, (1.0, 1.0, 1.0), per_slice=False)
    assert labels.tolist() == [[[1, 1, 1, 1, 0, 0, 0, 0]]]
    # Flat image: the nearer stroke wins (the cost per mm breaks the tie).
    flat = geodesic_competition(np.zeros((1, 1, 8, 1), np.float32), strokes, (1.0, 1.0, 1.0), per_slice=False)
    assert flat.tolist() == [[[1, 1, 1, 1, 0, 0, 0, 0]]]
    with pytest.raises(ValueError, match="grid"):
        geodesic_competition(image[..., None], strokes[:, :, :4], (1.0, 1.0, 1.0))


def test_two_cavities_of_one_brightness_are_told_apart_and_every_stroke_is_kept():
    image, truth, strokes = _two_cavities()
    labels = segment_from_strokes(image, strokes, THICK)
    assert labels.dtype == np.int16 and labels.shape == image.shape
    painted = strokes != UNKNOWN
    assert np.array_equal(labels[painted], strokes[painted])
    scores = dice(labels, truth, [1, 2, 3])
    assert min(scores.values()) > 0.9, scores
    assert np.array_equal(labels, segment_from_strokes(image, strokes, THICK))     # deterministic


def test_an_unpainted_slice_takes_its_neighbours_labels_and_nothing_is_labelled_beyond_the_strokes():
    image, truth, strokes = _two_cavities(z=6)
    strokes[2] = UNKNOWN          # between painted slices
    strokes[5] = UNKNOWN          # after the last painted slice
    labels = segment_from_strokes(image, strokes, THICK)
    assert min(dice(labels[2:3], truth[2:3], [1, 2, 3]).values()) > 0.85
    assert not np.any(labels[5])


def test_a_sphere_in_an_isotropic_volume():
    zz, yy, xx = np.mgrid[:24, :32, :32]
    truth = ((zz - 12) ** 2 + (yy - 16) ** 2 + (xx - 16) ** 2 < 7 ** 2).astype(np.int16)
    image = (0.2 + 0.6 * truth + 0.05 * np.random.default_rng(1).standard_normal(truth.shape)).astype(np.float32)
    strokes = np.full(truth.shape, UNKNOWN, np.int16)
    strokes[11:14, 15:18, 15:18] = 1
    strokes[12, 3:29, 4] = 0
    strokes[12, 3:29, 28] = 0
    strokes[3, 16, 6:26] = 0
    strokes[21, 16, 6:26] = 0
    labels = segment_from_strokes(image, strokes, (1.0, 1.0, 1.0), largest_component=True)
    assert dice(labels, truth, [1])[1] > 0.9


@pytest.mark.parametrize("change, message", [
    (lambda s: np.where(s == 0, UNKNOWN, s), "background must be painted"),
    (lambda s: np.where(s > 0, UNKNOWN, s), "at least one structure"),
    (lambda s: np.where(s == 3, -2, s), "class ids"),
])
def test_ill_strokes(change, message):
    image, _, strokes = _two_cavities(z=2)
    with pytest.raises(ValueError, match=message):
        segment_from_strokes(image, change(strokes).astype(np.int16), THICK)


def test_ill_opts():
    image, _, strokes = _two_cavities(z=2)
    with pytest.raises(ValueError, match="one \\(z, y, x\\) grid"):
        segment_from_strokes(image[:1], strokes, THICK)
    with pytest.raises(ValueError, match="spacing"):
        segment_from_strokes(image, strokes, (0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="classes"):
        segment_from_strokes(image, strokes, THICK, num_classes=3)


def test_cli_predict_strokes_without_a_model(tmp_path, capsys):
    from WeakSegLib.cli import main

    image, truth, strokes = _two_cavities()
    geometry = Geometry(image.shape, THICK[::-1])
    write_volume(Volume(image, geometry), tmp_path / "image.nii.gz")
    write_volume(Volume(np.where(strokes == UNKNOWN, 9, strokes).astype(np.int16), geometry),
                 tmp_path / "strokes.nii.gz")
    out = tmp_path / "result.nii.gz"
    argv = ["predict", "--image", str(tmp_path / "image.nii.gz"), "--strokes", str(tmp_path / "strokes.nii.gz"),
            "--unannotated", "9", "--out", str(out)]
    assert main(argv) == 0
    assert "(no model)" in capsys.readouterr().out
    labels = read_volume(out).array
    assert min(dice(labels, truth, [1, 2, 3]).values()) > 0.9
    mtime = out.stat().st_mtime_ns
    for args, message in (([a for a in argv if a not in ("--unannotated", "9")] + ["--overwrite"],
                           "--unannotated 9"),
                          ([*argv, "--overwrite", "--cache", str(tmp_path / "c.npz")], "need a network"),
                          ([*argv, "--overwrite", "--tta"], "need a network"),
                          (["predict", "--image", argv[2], "--out", str(out), "--overwrite"], "Give --model"),
                          (argv, "exists")):
        assert main(args) != 0
        err = capsys.readouterr().err
        assert re.search(re.escape(message), err), err
        assert len(err.strip().splitlines()) == 1, err
    assert out.stat().st_mtime_ns == mtime


def test_bench_method_without_a_model(tmp_path):
    from WeakSegLib.bench import BenchConfig, run_bench
    from WeakSegLib.data.phantom import write_phantom_dataset

    # 2D plan (4 mm slices vs 1.2 mm pixels); scribbles stored as the dataset's "real" ones.
    write_phantom_dataset(tmp_path, n_cases=4, seed=0, kind="scribbles", shape=(8, 40, 40), spacing=(1.2, 1.2, 4.0))
    report = run_bench(BenchConfig(str(tmp_path), "real-scribbles", ["interactive-geodesic"], test_groups=2,
                                   device="cpu"))
    result = report["methods"]["interactive-geodesic"]
    assert result["status"] == "completed" and result["train_seconds"] == 0.0
    assert result["seeds_kept_min"] == 1.0 and result["mean_dice"] > 0.5


@pytest.mark.slow
def test_real_acdc_scribbles_without_a_model_beat_grow_from_seeds(acdc_dir):
    """Two ACDC volumes (validation patients of benchmarks/configs/acdc_val_split.json) with their real
    scribbles: the strokes completed without a model score above Slicer's Grow from seeds."""
    pytest.importorskip("slicer", reason="Grow from seeds needs slicer-core")
    from WeakSegLib.bench.split import load_groups
    from WeakSegLib.mrml import grow_from_seeds

    data = load_groups(acdc_dir, ["patient030", "patient052"])
    for case in data.cases[::2]:
        seeds = case.annotation.labels.astype(np.int16)
        truth = case.ground_truth.array
        ours = np.mean(list(dice(segment_from_strokes(case.image.array, seeds, case.image.geometry.spacing_zyx,
                                                      4), truth, [1, 2, 3]).values()))
        grown = grow_from_seeds(case.image.array, np.where(seeds < 0, 0, seeds + 1).astype(np.int16),
                                case.image.geometry.spacing_zyx)
        theirs = np.mean(list(dice(np.clip(grown.astype(np.int16) - 1, 0, None), truth, [1, 2, 3]).values()))
        assert ours > 0.8 and ours > theirs, (case.id, ours, theirs)
