"""``weakseg simulate`` / ``weakseg evaluate`` handlers, called through argparse on real NIfTI files."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from WeakSegLib.cli import evaluate as evaluate_command
from WeakSegLib.cli import simulate as simulate_command
from WeakSegLib.data.annotation import UNKNOWN, WeakAnnotation
from WeakSegLib.data.dataset import load_dataset
from WeakSegLib.data.phantom import make_phantom
from WeakSegLib.data.simulate import simulate_boxes
from WeakSegLib.data.volume import GeometryMismatchError, Volume, read_volume, write_volume

SHAPE = (12, 48, 48)


@pytest.fixture(scope="module")
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="weakseg")
    sub = p.add_subparsers(dest="command")
    simulate_command.add_parser(sub)
    evaluate_command.add_parser(sub)
    return p


@pytest.fixture
def files(tmp_path):
    case = make_phantom(2, shape=SHAPE)
    gt_path = write_volume(case.ground_truth, tmp_path / "case_gt.nii.gz")
    image_path = write_volume(case.image, tmp_path / "case.nii.gz")
    return case, gt_path, image_path


def _run(parser, argv: list[str]) -> int:
    args = parser.parse_args([str(a) for a in argv])
    return args.func(args)


def test_every_option_has_help(parser):
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name in ("simulate", "evaluate"):
        for action in sub.choices[name]._actions:
            assert action.help, f"{name} {action.option_strings} has no help text"


def test_simulate_scribbles_writes_labels(parser, files, tmp_path, capsys):
    case, gt_path, image_path = files
    out = tmp_path / "scribbles.nii.gz"
    assert _run(parser, ["simulate", "--gt", gt_path, "--image", image_path, "--out", out, "--seed", 3,
                         "--slice-fraction", 0.5]) == 0
    text = capsys.readouterr().out
    assert "% of the voxels annotated" in text and str(out) in text
    annotation = WeakAnnotation.from_label_map(out, 4)
    assert annotation.geometry.isclose(case.ground_truth.geometry)
    known = annotation.labels != UNKNOWN
    assert known.any() and not out.with_name("scribbles.json").exists()
    np.testing.assert_array_equal(annotation.labels[known], case.ground_truth.array[known])
    # Same seed, same file content.
    out2 = tmp_path / "again.nii.gz"
    _run(parser, ["simulate", "--gt", gt_path, "--out", out2, "--seed", 3, "--slice-fraction", 0.5])
    np.testing.assert_array_equal(read_volume(out2).array, read_volume(out).array)


def test_simulate_boxes_sidecar_round_trip(parser, files, tmp_path):
    case, gt_path, _ = files
    out = tmp_path / "boxes.nii.gz"
    _run(parser, ["simulate", "--gt", gt_path, "--kind", "boxes", "--out", out])
    sidecar = tmp_path / "boxes.json"
    assert sidecar.exists()
    loaded = WeakAnnotation.from_sidecar(sidecar, case.ground_truth.geometry, 4,
                                         read_volume(out).array.astype(np.int16))
    expected = simulate_boxes(case.ground_truth, 4)
    assert sorted(loaded.boxes, key=str) == sorted(expected.boxes, key=str)


def test_simulate_partial_and_explicit_sidecar(parser, files, tmp_path, capsys):
    case, gt_path, _ = files
    out, side = tmp_path / "partial.nii.gz", tmp_path / "side" / "partial_meta.json"
    side.parent.mkdir()
    _run(parser, ["simulate", "--gt", gt_path, "--kind", "partial", "--drop-rate", 0.7, "--seed", 1,
                  "--out", out, "--sidecar", side, "--num-classes", 4])
    data = json.loads(side.read_text())
    assert data["complete_classes"] and set(data["complete_classes"]) <= {1, 2, 3}
    assert "complete classes" in capsys.readouterr().out


def test_simulate_without_out_only_prints(parser, files, tmp_path, capsys):
    _, gt_path, _ = files
    assert _run(parser, ["simulate", "--gt", gt_path, "--kind", "tags+sizes", "--margin", 0.2]) == 0
    assert "tags {1: True, 2: True, 3: True}" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["case.nii.gz", "case_gt.nii.gz"]


def test_simulate_errors(parser, files, tmp_path):
    case, gt_path, _ = files
    with pytest.raises(FileNotFoundError, match="does not exist"):
        _run(parser, ["simulate", "--gt", tmp_path / "missing.nii.gz"])
    with pytest.raises(ValueError, match="--jitter-mm does not apply to --kind scribbles"):
        _run(parser, ["simulate", "--gt", gt_path, "--jitter-mm", 2])
    other = Volume(case.image.array, make_phantom(2, shape=SHAPE, spacing=(1.0, 1.0, 3.0)).image.geometry)
    bad_image = write_volume(other, tmp_path / "other.nii.gz")
    with pytest.raises(GeometryMismatchError):
        _run(parser, ["simulate", "--gt", gt_path, "--image", bad_image])
    with pytest.raises(ValueError, match="class id"):
        _run(parser, ["simulate", "--gt", gt_path, "--num-classes", 3])
    with pytest.raises(ValueError, match="--sidecar needs --out"):
        _run(parser, ["simulate", "--gt", gt_path, "--sidecar", tmp_path / "x.json"])
    with pytest.raises(ValueError, match="go with --gt"):
        _run(parser, ["simulate", "--phantom", tmp_path / "ph", "--out", tmp_path / "x.nii.gz"])
    with pytest.raises(SystemExit):  # argparse: --gt or --phantom is required
        parser.parse_args(["simulate", "--kind", "points"])


def test_simulate_phantom_dataset(parser, tmp_path, capsys):
    folder = tmp_path / "phantom"
    assert _run(parser, ["simulate", "--phantom", folder, "--cases", 2, "--kind", "points", "--seed", 5]) == 0
    assert "dataset.json" in capsys.readouterr().out
    manifest = json.loads((folder / "dataset.json").read_text())
    assert {"image", "ground_truth", "annotation", "sidecar"} <= set(manifest["cases"][0])
    ds = load_dataset(folder)
    assert len(ds) == 2 and ds.class_names == ["Background", "Outer", "Inner", "Lesion"]
    for case in ds:
        known = case.annotation.labels != UNKNOWN
        assert known.any()
        np.testing.assert_array_equal(case.annotation.labels[known], case.ground_truth.array[known])


def test_evaluate_files_and_json(parser, files, tmp_path, capsys):
    case, gt_path, _ = files
    pred = case.ground_truth.array.copy()
    pred[pred == 3] = 0  # the lesion is missed
    pred_path = write_volume(case.ground_truth.with_array(pred), tmp_path / "pred.nii.gz")
    out_json = tmp_path / "report.json"
    assert _run(parser, ["evaluate", "--pred", pred_path, "--gt", gt_path, "--json", out_json,
                         "--classes", "Background,Outer,Inner,Lesion"]) == 0
    text = capsys.readouterr().out
    assert "Outer" in text and "Lesion" in text and "n/a" in text and "1.000" in text
    report = json.loads(out_json.read_text())["cases"]["case_gt"]
    assert report["classes"]["Outer"]["dice"] == 1.0
    assert report["classes"]["Lesion"]["dice"] == 0.0 and report["classes"]["Lesion"]["hd95_mm"] is None
    assert report["skipped"]["hd95_mm"] == 1


def test_evaluate_folders(parser, tmp_path, capsys):
    gt_dir, pred_dir = tmp_path / "gt", tmp_path / "pred"
    for seed in (1, 2):
        c = make_phantom(seed, shape=SHAPE)
        write_volume(c.ground_truth, gt_dir / f"case{seed}_gt.nii.gz")
        write_volume(c.image, gt_dir / f"case{seed}.nii.gz")  # an image next to the labels is ignored
        write_volume(c.ground_truth, pred_dir / f"case{seed}.nii.gz")
    out_json = tmp_path / "r.json"
    assert _run(parser, ["evaluate", "--pred", pred_dir, "--gt", gt_dir, "--json", out_json]) == 0
    assert "2 cases" in capsys.readouterr().out
    data = json.loads(out_json.read_text())
    assert set(data["cases"]) == {"case1", "case2"}
    assert data["summary"]["classes"]["class_1"]["dice"]["mean"] == 1.0
    (pred_dir / "case2.nii.gz").unlink()
    with pytest.raises(ValueError, match="case2_gt.nii.gz"):
        _run(parser, ["evaluate", "--pred", pred_dir, "--gt", gt_dir])


def test_evaluate_errors(parser, files, tmp_path):
    case, gt_path, _ = files
    with pytest.raises(FileNotFoundError, match="prediction"):
        _run(parser, ["evaluate", "--pred", tmp_path / "nope.nii.gz", "--gt", gt_path])
    with pytest.raises(ValueError, match="both be files or both be folders"):
        _run(parser, ["evaluate", "--pred", tmp_path, "--gt", gt_path])
    other_grid = make_phantom(2, shape=SHAPE, spacing=(1.0, 1.0, 3.0)).image.geometry
    shifted = Volume(case.ground_truth.array, other_grid)
    bad = write_volume(shifted, tmp_path / "bad.nii.gz")
    with pytest.raises(GeometryMismatchError, match="prediction"):
        _run(parser, ["evaluate", "--pred", bad, "--gt", gt_path])
