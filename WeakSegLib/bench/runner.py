"""Running a benchmark: load and split the dataset, build the annotations, run each method, assemble the report."""

from __future__ import annotations

import logging
import os
import platform
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from WeakSegLib.bench.annotations import (
    annotated_fraction,
    build_test_seeds,
    build_training_annotations,
    test_seed_kind,
)
from WeakSegLib.bench.comparisons import paired_comparisons
from WeakSegLib.bench.config import METHOD_LABELS, TEST_SEED_METHODS, BenchConfig
from WeakSegLib.bench.context import BenchContext
from WeakSegLib.bench.methods import run_method
from WeakSegLib.bench.report import write_outputs
from WeakSegLib.bench.scoring import method_record
from WeakSegLib.bench.split import split_case_ids
from WeakSegLib.data.annotation import UNKNOWN
from WeakSegLib.data.dataset import Dataset, dataset_from_manifest, load_manifest, manifest_case_id
from WeakSegLib.inference.postprocessing import rule_with_inside

logger = logging.getLogger(__name__)

ProgressFn = Callable[[float, str], None]


def load_split(config: BenchConfig, workdir: Path, cuda: bool) -> tuple[Dataset, BenchContext, dict]:
    """``(dataset, context, split)``: the dataset's cases with ground truth, split by group, with the
    benchmark's training annotations and test seeds; ``split`` lists groups and cases of both sides."""
    manifest, root = load_manifest(config.dataset)
    train_ids, test_ids = split_case_ids(manifest.get("cases", []), config)
    wanted = set(train_ids) | set(test_ids)
    with_annotations = config.annotation == "real-scribbles"
    dataset = dataset_from_manifest(manifest, root, with_annotations=with_annotations, with_ground_truth=True,
                                    case_filter=lambda e: manifest_case_id(e) in wanted)
    if config.inside:   # class names are known now: the rule names the enclosed classes by id
        config.largest_component = rule_with_inside(config.largest_component or None, config.inside,
                                                    dataset.class_names)
    missing_gt = [c.id for c in dataset.cases if c.ground_truth is None]
    if missing_gt:
        raise ValueError(f"The benchmark needs ground truth for every case; missing for {missing_gt[:5]}.")
    test = dataset.subset(test_ids)
    train = build_training_annotations(dataset.subset(train_ids), config)
    split = {"train_groups": sorted({c.group for c in train.cases}),
             "test_groups": sorted({c.group for c in test.cases}),
             "train_cases": [c.id for c in train.cases],
             "test_cases": [c.id for c in test.cases],
             "test_case_groups": {c.id: c.group for c in test.cases}}
    overlap = set(split["train_groups"]) & set(split["test_groups"])
    if overlap:  # cannot happen with split_groups; guards explicit splits and odd manifests
        raise RuntimeError(f"Group(s) {sorted(overlap)} are in both the training and the test set.")
    train_fraction = annotated_fraction(train)
    needs_seeds = any(m in config.methods for m in TEST_SEED_METHODS)
    test_seeds = build_test_seeds(test, config) if needs_seeds else {}
    total = sum(int(np.prod(c.image.shape)) for c in test.cases)
    test_seed_fraction = (sum(int(np.count_nonzero(s != UNKNOWN)) for s in test_seeds.values())
                          / total) if test_seeds else None
    logger.info("Split by group: %d training group(s) (%d volumes), %d test group(s) (%d volumes); "
                "annotation '%s' marks %.3f%% of the training voxels.", len(split["train_groups"]),
                len(train), len(split["test_groups"]), len(test), config.annotation, 100 * train_fraction)
    context = BenchContext(config, train, test, test_seeds, train_fraction, test_seed_fraction, workdir, cuda)
    return dataset, context, split


def _run_methods(context: BenchContext, strict: bool, emit: ProgressFn) -> dict[str, dict]:
    """Each method in turn; a failing method is recorded as failed (re-raised with ``strict``)."""
    methods = context.config.methods
    results: dict[str, dict] = {}
    for i, name in enumerate(methods):
        emit(i / len(methods), f"Method {i + 1}/{len(methods)}: {METHOD_LABELS[name]}")
        method_start = time.monotonic()
        try:
            results[name] = run_method(name, context)
        except Exception as exc:  # noqa: BLE001 - one failing method must not lose the others
            if strict:
                raise
            logger.exception("Method %s failed", name)
            results[name] = method_record(name, {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"})
        results[name]["method_seconds"] = round(time.monotonic() - method_start, 2)
        res = results[name]
        if "mean_dice" in res:
            logger.info("%s: mean Dice %.3f on %d test volume(s)", METHOD_LABELS[name], res["mean_dice"],
                        len(context.test))
        else:
            logger.info("%s: %s (%s)", METHOD_LABELS[name], res["status"], res.get("reason", ""))
    return results


def _bench(config: BenchConfig, progress: ProgressFn | None, strict: bool) -> dict:
    import torch

    from WeakSegLib.utils import describe_device, resolve_device

    def emit(fraction: float, message: str) -> None:
        logger.info("%s", message)
        if progress is not None:
            progress(fraction, message)

    device = resolve_device(config.device)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="weakseg-bench-"))
    try:
        emit(0.0, f"Loading '{config.dataset}'")
        dataset, context, split = load_split(config, workdir, cuda=device.type == "cuda")
        # Imports that the first method would otherwise pay in its time and memory figures.
        import monai.networks.nets  # noqa: F401
        import scipy.sparse.linalg  # noqa: F401
        import skimage.segmentation  # noqa: F401
        results = _run_methods(context, strict, emit)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    emit(1.0, "Benchmark done")
    return {
        "benchmark": "weakseg bench", "dataset": dataset.name, "dataset_path": str(config.dataset),
        "annotation": config.annotation, "classes": context.test.class_names,
        "config": config.to_dict(), "split": split, "n_train": len(context.train),
        "n_test": len(context.test),
        "annotated_fraction": context.train_fraction, "test_seeds": test_seed_kind(config.annotation),
        "test_seed_fraction": context.test_seed_fraction,
        "environment": {"device": describe_device(device), "torch": torch.__version__,
                        "threads": torch.get_num_threads(), "python": platform.python_version(),
                        "machine": platform.machine(), "cpu_count": os.cpu_count()},
        "seconds_total": round(time.monotonic() - started, 2),
        "methods": results,
        "comparisons": paired_comparisons(results, split["test_case_groups"]),
    }


def run_bench(config: BenchConfig, out_dir: str | os.PathLike | None = None,
              progress: ProgressFn | None = None, strict: bool = False, overwrite: bool = False) -> dict:
    """Run the benchmark described by ``config``; write ``bench.json``/``bench.md``/``dice_vs_time.png``
    into ``out_dir`` when given.  Returns the report (the content of ``bench.json``, NaN kept as NaN).

    ``progress(fraction, message)`` hears of each method as it starts.  ``strict=True`` re-raises a
    failing method's error instead of recording it and going on.
    """
    if not isinstance(config, BenchConfig):
        raise TypeError(f"run_bench takes a BenchConfig, got {type(config).__name__}.")
    config.validate()
    out = None
    if out_dir is not None:
        out = Path(out_dir)
        if (out / "bench.json").exists() and not overwrite:
            raise FileExistsError(f"'{out / 'bench.json'}' exists; pass --overwrite or choose another --out.")
        out.mkdir(parents=True, exist_ok=True)
    report = _bench(config, progress, strict)
    if out is not None:
        write_outputs(report, out)
    return report
