"""Completing a volume's strokes with a trained network (WeakSegLib.inference.strokes, weakseg predict --strokes)."""

from __future__ import annotations

import re

import numpy as np
import pytest

from WeakSegLib.data.annotation import UNKNOWN
from WeakSegLib.data.phantom import make_phantom_dataset
from WeakSegLib.data.volume import Geometry, Volume, read_volume, write_volume
from WeakSegLib.inference import refine_with_seeds, stroke_agreement
from WeakSegLib.inference.strokes import complete_strokes
from WeakSegLib.training import TrainConfig, train

SHAPE = (2, 30, 30)


def _square(z_slices: int = 2) -> np.ndarray:
    truth = np.zeros((z_slices, 30, 30), bool)
    truth[:, 8:22, 8:22] = True
    return truth


def test_stroke_agreement_is_the_fraction_of_painted_voxels_labelled_as_painted():
    labels = np.array([[0, 1, 1, 2]])
    seeds = np.array([[0, 1, 2, UNKNOWN]])
    assert stroke_agreement(labels, seeds) == pytest.approx(2 / 3)
    assert stroke_agreement(labels, np.full_like(seeds, UNKNOWN)) is None


def test_the_network_is_trusted_on_the_slices_where_it_agrees_with_the_strokes():
    """A flat image (no edges): with the strokes alone, the walker splits the slice by distance to them.
    Slice 0: the network is right and agrees with the strokes -> its square is kept.  Slice 1: the
    network missed the object, which the object stroke contradicts -> the strokes lead there."""
    truth = _square()
    image = np.zeros(SHAPE, np.float32)
    network = truth.copy()
    network[1] = False                                          # missed on slice 1
    prior = np.stack([np.where(network, 0.1, 0.9), np.where(network, 0.9, 0.1)], -1).astype(np.float32)
    seeds = np.full(SHAPE, UNKNOWN, np.int16)
    seeds[:, 15, 14:17] = 1                                     # a short stroke in the object
    seeds[:, 1, 1:4] = 0                                        # a short background stroke in a corner
    adaptive = refine_with_seeds(prior, image, seeds, (5.0, 1.0, 1.0), dims=2, prior_weight=0.001,
                                 trusted_prior_weight=10.0, agreement=0.97)
    strokes_only = refine_with_seeds(prior, image, seeds, (5.0, 1.0, 1.0), dims=2, prior_weight=0.001)
    assert np.array_equal(adaptive[0] == 1, truth[0])           # trusted: the network's square
    assert not np.array_equal(strokes_only[0] == 1, truth[0])   # one weight for all: the strokes' split
    assert np.array_equal(adaptive[1], strokes_only[1])         # contradicted: the strokes lead
    assert (adaptive[1] == 1).sum() > 100                       # ... and recover an object around the stroke
    for out in (adaptive, strokes_only):
        assert np.all(out[seeds != UNKNOWN] == seeds[seeds != UNKNOWN])


def test_refine_with_seeds_refuses_non_positive_weights():
    prior = np.full((*SHAPE, 2), 0.5, np.float32)
    with pytest.raises(ValueError, match="prior weights must be > 0"):
        refine_with_seeds(prior, np.zeros(SHAPE), np.zeros(SHAPE, np.int16), (1, 1, 1), trusted_prior_weight=0.0)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    data = make_phantom_dataset(n_cases=2, seed=0, shape=(8, 40, 40))
    config = TrainConfig(iterations=3, base_filters=8, batch_size=2, device="cpu", seed=0, objective="full")
    result = train(data, config)
    folder = tmp_path_factory.mktemp("strokes") / "model"
    result.model.save(folder)
    return data, result.model, folder


def test_complete_strokes_keeps_every_painted_voxel_and_checks_the_strokes(tiny_model):
    data, model, _ = tiny_model
    case = data.cases[0]
    strokes = np.full(case.image.shape, UNKNOWN, np.int16)
    strokes[4, 10:30, 20] = 1
    strokes[4, 2, 2:38] = 0
    strokes[1, 5:9, 5:9] = 2 if model.plan.num_classes > 2 else 1
    out = complete_strokes(model, case.image, strokes, largest_component=True)
    assert out.shape == case.image.shape and out.geometry == case.image.geometry
    assert np.all(out.array[strokes != UNKNOWN] == strokes[strokes != UNKNOWN])
    with pytest.raises(ValueError, match="differs from the image"):
        complete_strokes(model, case.image, strokes[:-1])
    bad = strokes.copy()
    bad[0, 0, 0] = 9
    with pytest.raises(ValueError, match="hold labels"):
        complete_strokes(model, case.image, bad)


def test_cli_predict_with_strokes(tiny_model, tmp_path, capsys):
    from WeakSegLib.cli import main

    data, model, folder = tiny_model
    case = data.cases[1]
    image = write_volume(case.image, tmp_path / "image.nii.gz")
    strokes = np.full(case.image.shape, 4, np.int16)             # 4 = unpainted, as the ACDC scribbles
    strokes[4, 10:30, 20] = 1
    strokes[4, 2, 2:38] = 0
    write_volume(Volume(strokes, case.image.geometry), tmp_path / "strokes.nii.gz")
    out = tmp_path / "result.nii.gz"
    argv = ["predict", "--model", str(folder), "--image", str(image), "--strokes", str(tmp_path / "strokes.nii.gz"),
            "--unannotated", "4", "--out", str(out)]
    assert main(argv) == 0
    assert "completing the strokes" in capsys.readouterr().out
    labels = read_volume(out).array
    assert np.all(labels[strokes != 4] == strokes[strokes != 4]) and set(np.unique(labels)) <= {0, 1, 2}
    # Wrong grid, several images, --tta: one readable line each, and the result is not overwritten.
    other = Geometry((8, 40, 41), case.image.geometry.spacing, case.image.geometry.origin)
    write_volume(Volume(np.zeros(other.shape, np.int16), other), tmp_path / "wrong.nii.gz")
    for extra, message in ((["--strokes", str(tmp_path / "wrong.nii.gz"), "--overwrite"], "geometry|shape|grid"),
                           (["--tta", "--overwrite"], "cannot be combined"),
                           ([], "exists")):
        assert main([*argv, *extra]) != 0
        err = capsys.readouterr().err
        assert re.search(message, err, re.IGNORECASE), err
    # Strokes whose unpainted value is not given: the error names the option and the value to give.
    without = [a for a in argv if a not in ("--unannotated", "4")]
    assert main([*without, "--overwrite"]) != 0
    assert "--unannotated 4" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- simulated corrections
def test_corrective_stroke_goes_to_the_innermost_pixel_of_the_largest_wrong_region():
    from WeakSegLib.bench.corrections import corrective_stroke

    truth = np.zeros((3, 30, 30), np.int16)
    truth[1, 5:25, 5:25] = 2                     # a 20 x 20 square missed entirely on slice 1
    truth[2, 0:3, 0:3] = 1                       # and a small miss on slice 2
    labels = np.zeros_like(truth)
    mask, label = corrective_stroke(labels, truth, radius=3)
    assert label == 2 and mask[1].sum() == 29 and not mask[0].any() and not mask[2].any()   # a disk of radius 3
    assert mask[1, 14:16, 14:16].all()           # at the centre of the missed square
    assert corrective_stroke(truth, truth) is None


def test_simulated_corrections_add_strokes_until_the_budget_and_count_the_corrections():
    from WeakSegLib.bench.corrections import number_of_corrections, simulate_corrections

    truth = np.zeros((1, 20, 20), np.int16)
    truth[0, 2:18, 2:18] = 1
    seen = []

    def segment(seeds):                          # a "method" that labels exactly the painted voxels
        seen.append(int((seeds >= 0).sum()))
        return np.where(seeds >= 0, seeds, 0).astype(np.int16)

    first = np.full(truth.shape, -1, np.int16)
    scores = simulate_corrections(segment, truth, first, [1], corrections=3, radius=2)
    assert len(scores) == 4 and scores == sorted(scores) and scores[0] == 0.0 < scores[-1] < 1.0
    assert seen == sorted(seen) and seen[0] == 0 and np.all(first == -1)      # the first strokes are not modified
    assert number_of_corrections([0.5, 0.86, 0.91], 0.85) == 1
    assert number_of_corrections([0.5, 0.86, 0.91], 0.95) == 3
