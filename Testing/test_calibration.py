"""Per-class offsets of a model's log-probabilities (WeakSegLib.inference.calibration, weakseg calibrate)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from WeakSegLib.inference.calibration import apply_class_offsets, choose_class_offsets, mean_dice


def test_offsets_reweight_the_probabilities_by_exp_offset():
    p = np.array([[0.5, 0.5], [0.2, 0.8]], np.float32)
    out = apply_class_offsets(p, [0.0, np.log(3.0)], axis=1)
    np.testing.assert_allclose(out[0], [0.25, 0.75], atol=1e-6)
    np.testing.assert_allclose(out[1], [0.2 / 2.6, 2.4 / 2.6], atol=1e-6)
    np.testing.assert_allclose(apply_class_offsets(p, [0.0, 0.0], axis=1), p, atol=1e-6)
    tensor = apply_class_offsets(torch.from_numpy(p.T.copy()), [0.0, np.log(3.0)], axis=0)
    assert isinstance(tensor, torch.Tensor)
    np.testing.assert_allclose(tensor.numpy().T, out, atol=1e-6)


def _too_thick_ring():
    """A ring (class 1) whose probability stays above 0.5 two pixels beyond its true borders: the argmax
    makes it too thick; the truth is the ring of radius 6..10."""
    yy, xx = np.mgrid[:40, :40]
    r = np.hypot(yy - 20, xx - 20)
    truth = ((r >= 6) & (r <= 10)).astype(np.int16)[None].repeat(2, 0)
    distance = np.maximum(6 - r, r - 10)                         # < 0 inside the ring
    p1 = 1 / (1 + np.exp(distance - 2.0))                        # 0.5 at two pixels outside
    p = np.stack([1 - p1, p1], -1).astype(np.float32)[None].repeat(2, 0)
    return p, truth


def test_the_chosen_offset_moves_a_too_thick_class_back_to_its_borders():
    p, truth = _too_thick_ring()
    result = choose_class_offsets([p], [truth])
    assert result["offsets"][0] == 0.0 and result["offsets"][1] < -1.0
    assert result["dice_before"] < 0.8 and result["dice_after"] > 0.95 and result["volumes"] == 1
    assert mean_dice([np.log(p)], [truth], result["offsets"], [1]) == pytest.approx(result["dice_after"])
    by_volume = choose_class_offsets([p], [truth], objective="volume")
    assert by_volume["objective"] == "volume" and by_volume["offsets"][1] < -1.0
    assert by_volume["volume_error_after"] < 0.1 < 0.3 < by_volume["volume_error_before"]
    with pytest.raises(ValueError, match="objective must be"):
        choose_class_offsets([p], [truth], objective="hd95")
    # A well-placed class keeps offset 0 (ties keep 0).
    exact = np.stack([1 - truth, truth], -1).astype(np.float32) * 0.98 + 0.01
    assert choose_class_offsets([exact], [truth])["offsets"] == [0.0, 0.0]
    with pytest.raises(ValueError, match="complete masks"):
        choose_class_offsets([], [])
    with pytest.raises(ValueError, match="does not match its mask"):
        choose_class_offsets([p], [truth[:1]])


@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from WeakSegLib.cli import main

    root = tmp_path_factory.mktemp("calibration")
    assert main(["simulate", "--phantom", str(root / "ds"), "--cases", "2", "--seed", "0"]) == 0
    assert main(["train", "--dataset", str(root / "ds"), "--out", str(root / "model"), "--iterations", "3",
                 "--device", "cpu", "--progress", "none"]) == 0
    return root


def test_a_calibrated_model_keeps_its_offsets_and_predicts_with_them(phantom, tmp_path):
    from WeakSegLib import load_dataset
    from WeakSegLib.model import Model

    model = Model.load(phantom / "model")
    assert model.class_offsets is None
    image = load_dataset(phantom / "ds").cases[0].image
    plain = model.predict(image, return_probabilities=True)
    model.calibration = {"offsets": [0.0] + [-50.0] * (len(model.classes) - 1)}
    model.save(tmp_path / "calibrated")
    loaded = Model.load(tmp_path / "calibrated")
    assert loaded.class_offsets == model.class_offsets
    shifted = loaded.predict(image, return_probabilities=True)
    assert not np.any(shifted.labels.array) and plain.labels.array.any()     # every voxel now background
    np.testing.assert_allclose(shifted.probabilities.array,
                               apply_class_offsets(plain.probabilities.array, model.class_offsets, axis=-1),
                               atol=1e-5)
    meta = json.loads((tmp_path / "calibrated" / "model.json").read_text())
    meta["calibration"] = {"offsets": [0.0]}
    (tmp_path / "calibrated" / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="'calibration' must be"):
        Model.load(tmp_path / "calibrated")


def test_cli_calibrate_writes_a_new_model_folder_and_leaves_the_model_alone(phantom, tmp_path, capsys, caplog):
    from WeakSegLib.cli import main
    from WeakSegLib.model import Model

    before = (phantom / "model" / "model.json").read_text()
    argv = ["calibrate", "--model", str(phantom / "model"), "--dataset", str(phantom / "ds"),
            "--largest-component", "--out", str(tmp_path / "calibrated")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Offsets (2 volumes)" in out and "Calibrated model written to" in out
    assert "Only 2 volume(s) with complete masks" in caplog.text                 # too few: a warning
    model = Model.load(tmp_path / "calibrated")
    assert len(model.class_offsets) == len(model.classes) and model.class_offsets[0] == 0.0
    assert model.calibration["largest_component"] == "class" and model.calibration["dice_after"] >= \
        model.calibration["dice_before"]
    assert (phantom / "model" / "model.json").read_text() == before
    assert main([*argv[:-3], "--largest-component", "object", "--inside", "Inner:Outer", "--out",
                 str(tmp_path / "inside")]) == 0
    capsys.readouterr()
    assert Model.load(tmp_path / "inside").calibration["largest_component"] == {"scope": "object",
                                                                                "inside": [[2, 1]]}
    for extra, message in (([], "exists; choose a new folder or pass --overwrite"),
                           (["--groups", "nobody", "--overwrite"], "has ground truth in the groups nobody")):
        assert main([*argv, *extra]) != 0
        assert message in capsys.readouterr().err
    same = [a if a != str(tmp_path / "calibrated") else str(phantom / "model") for a in argv]
    assert main(same) != 0 and "is the --model folder" in capsys.readouterr().err
