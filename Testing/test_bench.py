"""``weakseg bench``: the split by patient, Grow-from-seeds, the seeded refinement, and a tiny smoke run.

Benchmarks are not tests: the smoke run trains a few iterations on tiny phantom volumes only to keep
the bench code working (every method, the three output files, numbers finite and in range).
"""

from __future__ import annotations

import json
import math
import mmap
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from WeakSegLib.bench import (
    BenchConfig,
    MemorySampler,
    entry_group,
    expand_methods,
    naive_partial_dataset,
    refine_with_seeds,
    run_bench,
    split_groups,
)
from WeakSegLib.data.annotation import UNKNOWN
from WeakSegLib.data.dataset import load_dataset, load_manifest, manifest_case_id
from WeakSegLib.data.datasets.acdc import acdc_manifest
from WeakSegLib.data.datasets.la import la_manifest
from WeakSegLib.data.phantom import write_phantom_dataset


def _has_growcut() -> bool:
    try:
        from slicer import vtkImageGrowCutSegment  # noqa: F401
    except ImportError:
        return False
    return True


needs_growcut = pytest.mark.skipif(not _has_growcut(), reason="Slicer's vtkImageGrowCutSegment is not importable "
                                   "(pip install slicer-core, or run inside 3D Slicer)")


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


# ---------------------------------------------------------------------------------------- split
def test_split_groups_disjoint_seeded_and_counted():
    groups = [f"patient{i:03d}" for i in range(1, 41) for _ in range(2)]   # two frames per patient
    train, test = split_groups(groups, test_groups=10, train_groups=25, seed=3)
    assert len(test) == 10 and len(train) == 25
    assert not set(train) & set(test)
    assert (train, test) == split_groups(groups, test_groups=10, train_groups=25, seed=3)
    assert test != split_groups(groups, test_groups=10, train_groups=25, seed=4)[1]
    train, test = split_groups(groups, test_fraction=0.25)
    assert len(test) == 10 and len(train) == 30


@pytest.mark.parametrize("kwargs", [{"test_groups": 41}, {"test_groups": 10, "train_groups": 31},
                                    {"test_groups": 0}])
def test_split_groups_ill_counts(kwargs):
    with pytest.raises(ValueError, match="Cannot split 40 group"):
        split_groups([f"p{i}" for i in range(40)], **kwargs)


def test_acdc_split_keeps_each_patient_on_one_side(acdc_dir):
    manifest = acdc_manifest(acdc_dir)
    entries = manifest["cases"]
    groups = [entry_group(e) for e in entries]
    train, test = split_groups(groups, test_groups=20, train_groups=60, seed=0)
    assert len(train) == 60 and len(test) == 20
    assert not set(train) & set(test)
    side = {}
    for e in entries:   # both frames (ED and ES) of a patient fall on the same side
        group = entry_group(e)
        where = "train" if group in train else "test" if group in test else "unused"
        assert side.setdefault(group, where) == where, f"{group} is split across train and test"
        assert manifest_case_id(e).startswith(group)


def test_la_manifest(la_dir):
    manifest, root = load_manifest(la_dir)
    assert manifest["name"] == "LA" and root == la_dir
    assert manifest == la_manifest(la_dir)
    assert len(manifest["cases"]) == 24
    assert len({e["group"] for e in manifest["cases"]}) == 24
    assert all((la_dir / e["image"]).exists() and (la_dir / e["ground_truth"]).exists() for e in manifest["cases"])
    one = load_dataset(la_dir, case_filter=lambda e: e["id"] == manifest["cases"][0]["id"])   # read as a dataset too
    assert one.name == "LA" and one.class_names == ["Background", "LeftAtrium"] and len(one) == 1


# ---------------------------------------------------------------------------------------- options
@pytest.mark.parametrize("kwargs, message", [
    ({"annotation": "scribble"}, "Unknown annotation"),
    ({"iterations": None}, "Give a training budget"),
    ({"methods": ["growcut", "interactive"]}, "start from the trained WeakSeg model"),
    ({"methods": "weakseg,grabcut"}, "Unknown method 'grabcut'"),
    ({"test_fraction": 1.0}, "test_fraction"),
    ({"curve_fractions": [0.5, 1.0]}, "curve_fractions"),
    ({"per_slice": True}, "per_slice applies to the 'boxes', 'points' and 'tags\\+sizes'"),
    ({"size_margin": 1.5}, "size_margin adds size ranges"),
    ({"points_per_object": 0}, "points_per_object must be >= 1"),
    ({"with_scribbles": True}, "with_scribbles adds simulated scribbles to 'boxes'"),
    ({"split": {"train": ["a"], "test": ["a"]}}, "no group in both"),
])
def test_bench_config_ill_opts(kwargs, message):
    options = {"dataset": "x", "annotation": "scribbles", "iterations": 5, **kwargs}
    with pytest.raises(ValueError, match=message):
        BenchConfig(**options)


def test_expand_methods_alias_and_order():
    assert expand_methods("interactive, weakseg") == ["weakseg", "interactive-seeds", "interactive-finetune"]
    assert expand_methods(["full", "pce"]) == ["pce", "full"]


def test_naive_partial_reads_missing_classes_as_background_and_keeps_the_given_annotation():
    from WeakSegLib.data.phantom import PHANTOM_CLASSES, make_phantom_dataset
    from WeakSegLib.data.simulate import simulate

    k = len(PHANTOM_CLASSES)
    data = make_phantom_dataset(n_cases=2, seed=0, shape=(8, 32, 32))
    for i, case in enumerate(data.cases):
        case.annotation = simulate(case.ground_truth, k, "partial", seed=i, drop_rate=0.5)
    before = [case.annotation.labels.copy() for case in data.cases]
    naive = naive_partial_dataset(data)
    for case, original, kept in zip(naive.cases, data.cases, before):
        assert np.array_equal(original.annotation.labels, kept)          # the given annotation is untouched
        assert case.annotation.is_complete and not (case.annotation.labels == UNKNOWN).any()
        gt = case.ground_truth.array
        for c in range(1, k):
            if c in original.annotation.complete_classes:
                assert np.array_equal(case.annotation.labels == c, gt == c)
            else:                                                     # dropped class: taught as background
                assert not (case.annotation.labels == c).any()


def test_memory_sampler_sees_an_allocation():
    with MemorySampler(interval_s=0.01) as memory:
        # A fresh anonymous mapping, touched page by page: new resident memory whatever the allocator
        # kept from earlier tests (a numpy block may reuse freed pages the process still holds).
        block = mmap.mmap(-1, 60 * 2**20)
        for offset in range(0, len(block), 4096):
            block[offset] = 1
        # The sampler is a background thread: hold the block until it has looked, at most 10 s.
        deadline = time.monotonic() + 10.0
        while (memory.increase_mb or 0.0) <= 40 and time.monotonic() < deadline:
            time.sleep(0.01)
        block.close()
    assert memory.increase_mb is not None and memory.increase_mb > 40
    report = memory.report()
    assert report["peak_rss_mb"] >= report["rss_increase_mb"] and report["peak_gpu_mb"] is None


# ---------------------------------------------------------------------------------------- Grow-from-seeds
def _two_regions(rng):
    """A bright box in a dark noisy volume, 6 slices of 10 mm, seeds on the first and last slice only."""
    image = np.zeros((6, 50, 60), np.float32)
    truth = np.zeros(image.shape, bool)
    truth[:, 12:38, 15:45] = True
    image[truth] = 1.0
    image += rng.normal(0.0, 0.1, image.shape).astype(np.float32)
    seeds = np.zeros(image.shape, np.int16)
    seeds[0, 25, 20:40] = 2
    seeds[-1, 20:30, 30] = 2
    seeds[0, 3, 5:55] = 1
    seeds[-1, 46, 5:55] = 1
    return image, seeds, truth


@needs_growcut
def test_grow_from_seeds_two_regions(rng):
    from WeakSegLib.mrml import grow_from_seeds

    image, seeds, truth = _two_regions(rng)
    result = grow_from_seeds(image, seeds, spacing_zyx=(10.0, 1.4, 1.4))
    assert result.shape == image.shape and result.dtype == seeds.dtype
    assert set(np.unique(result)) == {1, 2}
    assert _dice(result == 2, truth) > 0.9
    assert np.all(result[seeds > 0] == seeds[seeds > 0])
    # A mask restricts the result; voxels outside it stay 0.
    mask = np.zeros(image.shape, bool)
    mask[:, :, :30] = True
    masked = grow_from_seeds(image, seeds, (10.0, 1.4, 1.4), mask=mask)
    assert np.all(masked[~mask] == 0) and _dice(masked == 2, truth & mask) > 0.9


@needs_growcut
def test_grow_from_seeds_ill_inputs():
    from WeakSegLib.mrml import grow_from_seeds

    image = np.zeros((4, 8, 8), np.float32)
    with pytest.raises(ValueError, match="one shape"):
        grow_from_seeds(image, np.zeros((4, 8, 7), np.int16))
    with pytest.raises(ValueError, match="integer labelmap"):
        grow_from_seeds(image, np.zeros((4, 8, 8), np.float32))
    with pytest.raises(ValueError, match="spacing_zyx"):
        grow_from_seeds(image, np.zeros((4, 8, 8), np.int16), (1.0, 0.0, 1.0))
    assert not grow_from_seeds(image, np.zeros((4, 8, 8), np.int16)).any()   # no seed: nothing grows


def test_core_bench_never_imports_vtk():
    code = "import sys, WeakSegLib.bench, WeakSegLib.cli; sys.exit(int(any(m.split('.')[0] in ('vtk', 'slicer') " \
           "for m in sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], timeout=120).returncode == 0


# ---------------------------------------------------------------------------------------- seeded refinement
@pytest.mark.parametrize("dims", [2, 3])
def test_refine_with_seeds_corrects_a_wrong_prior(rng, dims):
    image, _, truth = _two_regions(rng)
    prior = np.zeros(image.shape + (2,), np.float32)
    wrong = truth.copy()
    wrong[:, 12:38, 30:45] = False                     # the network missed the right half of the box
    prior[..., 1] = np.where(wrong, 0.9, 0.1)
    prior[..., 0] = 1.0 - prior[..., 1]
    seeds = np.full(image.shape, UNKNOWN, np.int16)
    seeds[:, 25, 20:43] = 1                            # a stroke through the whole box on every slice
    seeds[:, 3, 5:55] = 0
    labels = refine_with_seeds(prior, image, seeds, (10.0, 1.4, 1.4), dims=dims, prior_weight=0.01)
    assert labels.dtype == np.int16 and labels.shape == image.shape
    assert _dice(labels == 1, truth) > 0.95 > _dice(wrong, truth)
    assert np.all(labels[seeds != UNKNOWN] == seeds[seeds != UNKNOWN])
    # Without seeds, the network's labels are kept.
    empty = np.full(image.shape, UNKNOWN, np.int16)
    assert np.array_equal(refine_with_seeds(prior, image, empty, (10.0, 1.4, 1.4), dims=dims), wrong.astype(int))


def test_refine_with_seeds_ill_shapes():
    with pytest.raises(ValueError, match=r"\(z, y, x, K\)"):
        refine_with_seeds(np.zeros((2, 4, 4)), np.zeros((2, 4, 4)), np.zeros((2, 4, 4), np.int16), (1, 1, 1))


# ---------------------------------------------------------------------------------------- smoke run
@pytest.fixture(scope="module")
def phantom_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bench_phantom")
    # 2D plan (4 mm slices vs 1.2 mm pixels), tiny volumes; scribbles stored as the dataset's "real" ones.
    write_phantom_dataset(folder, n_cases=4, seed=0, kind="scribbles", shape=(8, 40, 40), spacing=(1.2, 1.2, 4.0))
    return folder


def _check_numbers(method: dict) -> None:
    assert 0.0 <= method["mean_dice"] <= 1.0
    for value in method["dice_per_class"].values():
        assert math.isfinite(value) and 0.0 <= value <= 1.0
    for key in ("predict_seconds", "predict_seconds_per_volume", "annotated_fraction"):
        assert math.isfinite(method[key]) and method[key] >= 0.0
    assert 0.0 <= method["annotated_fraction"] <= 1.0
    for point in method.get("curve", []):
        assert 0.0 <= point["mean_dice"] <= 1.0 and point["seconds"] >= 0.0


@pytest.mark.slow
def test_bench_smoke_cli_all_methods(phantom_folder, tmp_path, monkeypatch):
    from WeakSegLib.cli import main

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    out = tmp_path / "out"
    argv = ["bench", "--dataset", str(phantom_folder), "--annotation", "real-scribbles", "--test-groups", "2",
            "--iterations", "4", "--device", "cpu", "--finetune-iterations", "2", "--out", str(out),
            "--methods", "weakseg,pce,full,growcut,interactive"]
    assert main(argv) == 0
    for name in ("bench.json", "bench.md", "dice_vs_time.png"):
        assert (out / name).stat().st_size > 0
    assert (out / "dice_vs_time.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = json.loads((out / "bench.json").read_text())
    split = report["split"]
    assert len(split["test_cases"]) == 2 and not set(split["train_groups"]) & set(split["test_groups"])
    methods = report["methods"]
    assert list(methods) == ["weakseg", "pce", "full", "growcut", "interactive-seeds", "interactive-finetune"]
    for name, method in methods.items():
        if name == "growcut" and not _has_growcut():
            assert method["status"] == "skipped" and "slicer" in method["reason"].lower()
            continue
        assert method["status"] == "completed", (name, method.get("reason"))
        _check_numbers(method)
    assert methods["full"]["annotated_fraction"] == 1.0
    assert 0.0 < methods["weakseg"]["annotated_fraction"] < 0.2
    assert [p["fraction"] for p in methods["weakseg"]["curve"]] == [0.25, 0.5, 0.75, 1.0]
    assert methods["weakseg"]["train_iterations"] == 4
    assert "partial_ce" in methods["weakseg"]["objective_terms"]
    assert methods["pce"]["objective_terms"] == ["partial_ce"]
    assert methods["weakseg"]["peak_rss_mb"] is None or methods["weakseg"]["peak_rss_mb"] > 0
    table = (out / "bench.md").read_text()
    assert "| method |" in table and "Outer Dice" in table and "of the fully supervised upper bound" in table
    # WeakSeg against each baseline, paired over the same test volumes.
    paired = report["comparisons"]["weakseg-vs-pce"]
    assert paired["n"] == 2 and paired["wins"] + paired["losses"] + paired["ties"] == 2
    assert paired["clusters"] == len(split["test_groups"])            # the bootstrap resamples patients
    assert sorted(split["test_case_groups"]) == sorted(split["test_cases"])
    assert sorted(set(split["test_case_groups"].values())) == split["test_groups"]
    ours, theirs = (np.mean([c["mean"]["dice"] for c in methods[m]["per_case"].values()]) for m in ("weakseg", "pce"))
    assert paired["mean"] == pytest.approx(ours - theirs)
    assert "WeakSeg vs plain pCE, mean Dice paired over the test volumes" in table and "95 % CI" in table
    # Outputs are not overwritten silently (checked before any work is done).
    assert main(argv) != 0


def test_bench_with_a_trained_model_scores_it_and_completes_the_test_strokes(phantom_folder, tmp_path, monkeypatch):
    """--model: the weakseg method is that model (no training, no budget needed); interactive-seeds starts
    from it and keeps every painted voxel of the test volumes."""
    from WeakSegLib.bench.report import write_outputs
    from WeakSegLib.training import TrainConfig, train

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = load_dataset(phantom_folder)
    model_dir = train(data, TrainConfig(iterations=2, base_filters=8, batch_size=2, device="cpu")).model.save(
        tmp_path / "model")
    report = run_bench(BenchConfig(str(phantom_folder), "real-scribbles", ["weakseg", "interactive-seeds"],
                                   test_groups=2, model=str(model_dir), device="cpu"), strict=True)
    loaded, seeded = report["methods"]["weakseg"], report["methods"]["interactive-seeds"]
    assert loaded["status"] == "loaded" and loaded["model"] == str(model_dir) and loaded["train_iterations"] is None
    assert seeded["status"] == "completed" and seeded["seeds_kept_min"] == 1.0
    assert seeded["trusted_prior_weight"] == 0.3 and seeded["stroke_agreement"] == 0.97
    assert 0.0 <= seeded["mean_dice"] <= 1.0 and seeded["annotated_fraction"] is None
    paths = write_outputs(report, tmp_path / "out")
    assert "trained before (--model)" in paths["markdown"].read_text()
    with pytest.raises(ValueError, match="budget"):
        BenchConfig(str(phantom_folder), "real-scribbles", ["weakseg", "interactive-seeds"])
    # Fine-tuning a given model has its own budget (finetune_iterations): no training budget needed either.
    BenchConfig(str(phantom_folder), "real-scribbles", ["weakseg", "interactive-finetune"], model=str(model_dir))


def test_class_offsets_method_is_the_same_model_shifted_and_reads_a_calibrated_folder(phantom_folder, tmp_path,
                                                                                       monkeypatch):
    """weakseg-offsets predicts with the weakseg model and the given offsets: zero offsets give the same labels
    volume by volume, a large background offset empties every class (volume error -100 %); the offsets are
    read from a calibrated model folder or a JSON file, with a clear error otherwise."""
    from WeakSegLib.bench.report import format_markdown
    from WeakSegLib.cli.bench import read_class_offsets
    from WeakSegLib.model import Model
    from WeakSegLib.training import TrainConfig, train

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    data = load_dataset(phantom_folder)
    model = train(data, TrainConfig(iterations=2, base_filters=8, batch_size=2, device="cpu")).model
    model_dir = model.save(tmp_path / "model")
    k = len(model.classes)
    model.calibration = {"offsets": [0.0] * k, "groups": ["a", "b"]}
    calibrated = model.save(tmp_path / "calibrated")
    read = read_class_offsets(str(calibrated))
    assert read == {"class_offsets": [0.0] * k, "class_offsets_source": f"{calibrated} (2 patients)"}

    def bench(offsets):
        return run_bench(BenchConfig(str(phantom_folder), "real-scribbles", ["weakseg", "weakseg-offsets"],
                                     test_groups=2, model=str(model_dir), device="cpu", class_offsets=offsets,
                                     class_offsets_source="test"), strict=True)

    same = bench(read["class_offsets"])
    ours, plain = same["methods"]["weakseg-offsets"], same["methods"]["weakseg"]
    assert ours["status"] == "completed" and ours["class_offsets"] == [0.0] * k
    assert {c: r["mean"]["dice"] for c, r in ours["per_case"].items()} == \
        {c: r["mean"]["dice"] for c, r in plain["per_case"].items()}
    assert same["comparisons"]["weakseg-offsets-vs-weakseg"]["mean"] == 0.0
    empty = bench([30.0] + [0.0] * (k - 1))["methods"]["weakseg-offsets"]
    for case in empty["per_case"].values():
        for m in case["classes"].values():
            assert m["volume_pred_ml"] == 0.0
    table = format_markdown(same)
    assert "## Median volume error per class" in table and "Class offsets (" in table
    (tmp_path / "offsets.json").write_text(json.dumps({"offsets": [0, 0.5]}))
    assert read_class_offsets(str(tmp_path / "offsets.json"))["class_offsets"] == [0.0, 0.5]
    with pytest.raises(ValueError, match="has no offsets"):
        read_class_offsets(str(model_dir))
    with pytest.raises(FileNotFoundError, match="neither a model folder nor a JSON file"):
        read_class_offsets(str(tmp_path / "nothing"))
    with pytest.raises(ValueError, match="go together"):
        BenchConfig(str(phantom_folder), "real-scribbles", ["weakseg", "weakseg-offsets"], model=str(model_dir))
    assert Model.load(calibrated).class_offsets == [0.0] * k


def test_bench_semi_and_boxes(phantom_folder, monkeypatch):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    semi = run_bench(BenchConfig(str(phantom_folder), "semi", ["weakseg", "pce", "full"], iterations=2,
                                 test_groups=1, labelled=1, curve_fractions=[0.5], device="cpu"), strict=True)
    assert semi["n_train"] == 3 and semi["annotated_fraction"] == pytest.approx(1 / 3)
    for method in semi["methods"].values():
        _check_numbers(method)
    assert semi["methods"]["weakseg"]["objective_terms"] == ["dice_ce"]
    boxes = run_bench(BenchConfig(str(phantom_folder), "boxes", ["weakseg", "pce"], iterations=2, test_groups=1,
                                  max_cases=2, device="cpu"), strict=True)
    assert boxes["n_train"] == 2
    assert boxes["methods"]["pce"]["status"] == "skipped" and "voxel" in boxes["methods"]["pce"]["reason"]
    assert {"box_emptiness", "box_tightness"} <= set(boxes["methods"]["weakseg"]["objective_terms"])
    _check_numbers(boxes["methods"]["weakseg"])


def test_bench_per_slice_boxes_are_one_slice_thick_and_cover_the_ground_truth(phantom_folder):
    from WeakSegLib.bench import build_training_annotations

    data = load_dataset(phantom_folder)
    data = type(data)(data.classes, data.cases[:2], data.channels, data.modality, dict(data.priors), data.name,
                      data.root)
    for per_slice in (False, True):
        config = BenchConfig(str(phantom_folder), "boxes", ["weakseg"], iterations=1, per_slice=per_slice)
        for case in build_training_annotations(data, config).cases:
            boxes = case.annotation.boxes
            thin = [b.is_per_slice for b in boxes]
            assert boxes and (all(thin) if per_slice else not all(thin))
            gt = case.ground_truth.array
            covered = np.zeros(gt.shape, bool)
            for b in boxes:
                region = tuple(slice(a, e) for a, e in zip(b.start, b.stop))
                covered[region] |= gt[region] == b.class_id
            assert np.array_equal(covered, gt > 0)     # every object voxel lies in a box of its class


def test_bench_boxes_with_scribbles_keep_the_boxes_and_label_only_true_voxels_on_the_chosen_slices(phantom_folder):
    from WeakSegLib.bench import build_training_annotations

    data = load_dataset(phantom_folder)
    data = type(data)(data.classes, data.cases[:2], data.channels, data.modality, dict(data.priors), data.name,
                      data.root)
    plain = build_training_annotations(data, BenchConfig(str(phantom_folder), "boxes", ["weakseg"], iterations=1))
    both = build_training_annotations(data, BenchConfig(str(phantom_folder), "boxes", ["weakseg"], iterations=1,
                                                        with_scribbles=True, slice_fraction=0.3))
    for box_only, case in zip(plain.cases, both.cases):
        assert box_only.annotation.labels is None
        assert [(b.class_id, b.start, b.stop) for b in case.annotation.boxes] == \
            [(b.class_id, b.start, b.stop) for b in box_only.annotation.boxes]
        labels, gt = case.annotation.labels, case.ground_truth.array
        known = labels != UNKNOWN
        assert known.any() and np.array_equal(labels[known], gt[known])     # scribbles are drawn on the truth
        assert set(np.unique(labels[known])) == set(np.unique(gt))         # every class, background included
        scribbled = np.flatnonzero((known & (labels > 0)).any(axis=(1, 2)))
        with_objects = np.flatnonzero((gt > 0).any(axis=(1, 2)))
        assert 0 < len(scribbled) < len(with_objects)                      # a fraction of the object slices


def test_bench_config_file_with_mode_options_is_checked_against_the_cli_mode(tmp_path):
    """A --config holding only mode_options is valid with the --mode it belongs to, refused without it."""
    from WeakSegLib.cli import build_parser
    from WeakSegLib.cli.bench import config_from_args

    cfg = tmp_path / "mt.json"
    cfg.write_text(json.dumps({"weights": {"crf": 0.0}, "mode_options": {"final_weights": "teacher"}}))
    base = ["bench", "--dataset", "x", "--annotation", "scribbles", "--iterations", "5", "--out", str(tmp_path / "o"),
            "--config", str(cfg)]
    config = config_from_args(build_parser().parse_args([*base, "--mode", "mean-teacher"]))
    assert config.mode == "mean-teacher"
    assert config.train_options["mode_options"] == {"final_weights": "teacher"}
    with pytest.raises(ValueError, match="Mode 'standard' has no option"):
        config_from_args(build_parser().parse_args(base))
    cfg.write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        config_from_args(build_parser().parse_args([*base, "--mode", "mean-teacher"]))


def _fake_report(seed: int, ours: list[float], theirs: list[float]) -> dict:
    def per_case(values):
        return {f"s{seed}_v{i}": {"mean": {"dice": v}} for i, v in enumerate(values)}

    return {"config": {"seed": seed}, "methods": {"weakseg": {"per_case": per_case(ours)},
                                                  "pce": {"per_case": per_case(theirs)}}}


def test_pooled_comparison_over_two_runs(tmp_path):
    from WeakSegLib.bench import pooled_comparison

    first = _fake_report(0, [0.9, 0.8, 0.7], [0.8, 0.8, 0.6])
    second = _fake_report(1, [0.5, None], [0.4, 0.3])               # None: a volume WeakSeg has no score for
    second["split"] = {"test_case_groups": {"s1_v0": "p", "s1_v1": "p"}}
    result = pooled_comparison([first, second])
    assert [r["seed"] for r in result["runs"]] == [0, 1]
    assert [r["n"] for r in result["runs"]] == [3, 1] and result["pooled"]["clusters"] == 4
    assert result["pooled"]["n"] == 4 and result["pooled"]["mean"] == pytest.approx(0.3 / 4)
    assert (result["pooled"]["wins"], result["pooled"]["ties"]) == (3, 1)
    with pytest.raises(ValueError, match="no test volume scored by both 'weakseg' and 'full'"):
        pooled_comparison([first], baseline="full")
    # The script prints one line per run and the pooled line.
    paths = []
    for i, report in enumerate((first, second)):
        paths.append(tmp_path / f"bench{i}.json")
        paths[-1].write_text(json.dumps(report))
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "paired_comparison.py"
    done = subprocess.run([sys.executable, str(script), *map(str, paths), "--json", str(tmp_path / "p.json")],
                          capture_output=True, text=True, check=True)
    assert "pooled, 4 volumes: +0.075 (95 % CI" in done.stdout and "(seed 1): +0.100" in done.stdout
    assert json.loads((tmp_path / "p.json").read_text())["pooled"]["n"] == 4
