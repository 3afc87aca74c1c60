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
    assert main([*argv, "--largest-component", "object", "--overwrite"]) == 0        # the object rule, then the strokes
    capsys.readouterr()
    labels = read_volume(out).array
    assert np.all(labels[strokes != 4] == strokes[strokes != 4])
    assert main([*argv, "--largest-component", "object", "--inside", "Inner:Outer", "--overwrite"]) == 0
    capsys.readouterr()
    assert np.all(read_volume(out).array[strokes != 4] == strokes[strokes != 4])
    assert main([*argv, "--inside", "Inner:Heart", "--overwrite"]) != 0
    assert "'Heart' is not a foreground class; the classes are 1 Outer, 2 Inner" in capsys.readouterr().err
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


# ---------------------------------------------------------------------------------------- warm start
@pytest.fixture(scope="module")
def tiny_2d_model():
    data = make_phantom_dataset(n_cases=1, seed=1, shape=(8, 40, 40))
    config = TrainConfig(iterations=3, base_filters=8, batch_size=2, device="cpu", seed=0, objective="full", dims=2)
    return data.cases[0].image, train(data, config).model


def _counting(monkeypatch):
    """Count the network's forward passes and the walker's runs of complete_strokes."""
    import WeakSegLib.model as model_module
    from WeakSegLib.inference import strokes as strokes_module

    calls = {"network": 0, "walker": 0}
    network, walker = model_module.predict_ensemble, strokes_module.prior_random_walker

    def counted_network(*args, **kwargs):
        calls["network"] += 1
        return network(*args, **kwargs)

    def counted_walker(*args, **kwargs):
        calls["walker"] += 1
        return walker(*args, **kwargs)

    monkeypatch.setattr(model_module, "predict_ensemble", counted_network)
    monkeypatch.setattr(strokes_module, "prior_random_walker", counted_walker)
    return calls


def _strokes(image) -> np.ndarray:
    strokes = np.full(image.shape, UNKNOWN, np.int16)
    for z in (1, 3, 4):
        strokes[z, 12:28, 20] = 1
        strokes[z, 2, 2:38] = 0
    return strokes


def test_an_update_with_the_cache_skips_the_network_and_walks_only_the_changed_slices(tiny_2d_model, tmp_path,
                                                                                      monkeypatch):
    image, model = tiny_2d_model
    assert model.plan.dims == 2
    calls = _counting(monkeypatch)
    cache = tmp_path / "cache.npz"
    strokes = _strokes(image)
    first = complete_strokes(model, image, strokes, largest_component=True, cache=cache)
    assert calls == {"network": 1, "walker": 3} and cache.is_file()
    assert np.all(first.array[strokes != UNKNOWN] == strokes[strokes != UNKNOWN])
    same = complete_strokes(model, image, strokes, largest_component=True, cache=cache)
    assert calls == {"network": 1, "walker": 3} and np.array_equal(same.array, first.array)
    corrected = strokes.copy()
    corrected[3, 30:34, 5:9] = 0                                  # one corrective stroke on slice 3
    warm = complete_strokes(model, image, corrected, largest_component=True, cache=cache)
    assert calls == {"network": 1, "walker": 4}
    cold = complete_strokes(model, image, corrected, largest_component=True, cache=tmp_path / "fresh.npz")
    assert calls == {"network": 2, "walker": 7}
    assert np.array_equal(warm.array, cold.array)                 # the same result as from scratch
    assert np.all(warm.array[corrected != UNKNOWN] == corrected[corrected != UNKNOWN])


def test_the_cache_is_replaced_for_another_image_and_never_overwrites_a_foreign_file(tiny_2d_model, tmp_path,
                                                                                     monkeypatch):
    from WeakSegLib.inference.strokes import StrokeCache

    image, model = tiny_2d_model
    calls = _counting(monkeypatch)
    cache = tmp_path / "cache.npz"
    strokes = _strokes(image)
    complete_strokes(model, image, strokes, cache=cache)
    other = Volume(image.array[..., ::-1].copy(), image.geometry)      # another image on the same grid
    complete_strokes(model, other, strokes, cache=cache)
    assert calls["network"] == 2                                  # not the first image's probabilities
    complete_strokes(model, image, strokes, cache=cache, prior_weight=0.1)
    assert calls["network"] == 3                                  # other parameters: computed again
    foreign = tmp_path / "mine.npz"
    np.savez(foreign, a=np.zeros(3))
    before = foreign.read_bytes()
    with pytest.raises(ValueError, match="is not a WeakSeg stroke cache"):
        complete_strokes(model, image, strokes, cache=foreign)
    (tmp_path / "notes.npz").write_text("my notes")
    with pytest.raises(ValueError, match="is not a WeakSeg stroke cache"):
        StrokeCache(tmp_path / "notes.npz").check()
    assert foreign.read_bytes() == before and (tmp_path / "notes.npz").read_text() == "my notes"
    for bad, message in ((tmp_path / "cache.nii.gz", "must be a .npz file"), (tmp_path / "d.npz", "is a folder")):
        if message == "is a folder":
            bad.mkdir()
        with pytest.raises(ValueError, match=message):
            StrokeCache(bad)


def test_a_3d_plan_walks_the_volume_again_only_when_its_strokes_change(tiny_model, tmp_path, monkeypatch):
    data, model, _ = tiny_model
    image = data.cases[0].image
    calls = _counting(monkeypatch)
    strokes = _strokes(image)
    first = complete_strokes(model, image, strokes, cache=tmp_path / "c.npz")
    again = complete_strokes(model, image, strokes, cache=tmp_path / "c.npz")
    assert calls == {"network": 1, "walker": 1 if model.plan.dims == 3 else 3}
    assert np.array_equal(first.array, again.array)
    strokes[5, 30:33, 30:33] = 0
    complete_strokes(model, image, strokes, cache=tmp_path / "c.npz")
    assert calls["network"] == 1 and calls["walker"] == (2 if model.plan.dims == 3 else 4)


def test_cli_predict_cache_option(tiny_model, tmp_path, capsys):
    from WeakSegLib.cli import main

    data, model, folder = tiny_model
    image = write_volume(data.cases[0].image, tmp_path / "image.nii.gz")
    write_volume(Volume(_strokes(data.cases[0].image), data.cases[0].image.geometry), tmp_path / "s.nii.gz")
    argv = ["predict", "--model", str(folder), "--image", str(image), "--strokes", str(tmp_path / "s.nii.gz"),
            "--out", str(tmp_path / "out.nii.gz"), "--overwrite"]
    results = []
    for _ in range(2):
        assert main([*argv, "--cache", str(tmp_path / "c.npz")]) == 0
        results.append(read_volume(tmp_path / "out.nii.gz").array)
    assert np.array_equal(*results) and (tmp_path / "c.npz").is_file()
    capsys.readouterr()
    (tmp_path / "d.npz").mkdir()
    for extra, message in ((["--cache", str(tmp_path / "d.npz")], "is a folder"),
                           (["--cache", str(tmp_path / "s.nii.gz")], "must be a .npz")):
        assert main([*argv, *extra]) != 0 and message in capsys.readouterr().err
    without = [a for a in argv if a not in ("--strokes", str(tmp_path / "s.nii.gz"))]
    assert main([*without, "--cache", str(tmp_path / "c.npz")]) != 0
    assert "give it with --strokes" in capsys.readouterr().err


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
