"""The benchmark's annotations: the training volumes' (real, simulated or ``semi``) and each test volume's seeds.

Simulations are seeded per case (the run's seed, the case id and which side of the split it is on),
so a case gets the same annotation whatever else is in the run.
"""

from __future__ import annotations

import zlib

import numpy as np

from WeakSegLib.bench.config import BenchConfig
from WeakSegLib.data.annotation import UNKNOWN, WeakAnnotation
from WeakSegLib.data.dataset import Case, Dataset


def _case_seed(seed: int, case_id: str, salt: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(f"{salt}:{case_id}".encode())) % (2**31 - 1)


def _simulate(case: Case, num_classes: int, kind: str, config: BenchConfig, salt: str) -> WeakAnnotation:
    from WeakSegLib.data.simulate import combine, simulate, simulate_size_ranges

    options: dict = {}
    if kind == "scribbles":
        options["slice_fraction"] = config.slice_fraction
    if kind in ("boxes", "points", "tags+sizes") and config.per_slice:
        options["per_slice"] = True
    if kind == "points":
        options.update(n_per_object=config.points_per_object, radius_mm=config.point_radius_mm,
                       background_per_slice=config.background_per_slice)
    if kind == "partial":
        options["drop_rate"] = config.drop_rate
    if kind == "tags+sizes" and config.size_margin is not None:
        options["margin"] = config.size_margin
    seed = _case_seed(config.seed, case.id, salt)
    annotation = simulate(case.ground_truth, num_classes, kind, seed=seed, **options)
    if config.size_margin is not None and kind != "tags+sizes":
        annotation = combine(annotation, simulate_size_ranges(case.ground_truth, num_classes, config.size_margin))
    if config.with_scribbles and kind in ("boxes", "points", "tags+sizes"):
        scribbles = simulate(case.ground_truth, num_classes, "scribbles", slice_fraction=config.slice_fraction,
                             seed=_case_seed(config.seed, case.id, salt + ":scribbles"))
        if annotation.labels is not None:   # clicks: a click wins over a scribble where both label a voxel
            scribbles.labels[annotation.labels != UNKNOWN] = UNKNOWN
        annotation = combine(annotation, scribbles)
    return annotation


def build_training_annotations(train: Dataset, config: BenchConfig) -> Dataset:
    """The training cases with the benchmark's annotation (real, simulated or ``semi``), ground truth kept."""
    kind = config.annotation
    k = train.num_classes
    cases = []
    if kind == "semi":
        ids = sorted(c.id for c in train.cases)
        if config.labelled > len(ids):
            raise ValueError(f"--labelled {config.labelled} exceeds the {len(ids)} training volume(s).")
        order = np.random.default_rng(config.seed).permutation(len(ids))
        labelled = {ids[i] for i in order[:config.labelled]}
    for case in train.cases:
        if case.ground_truth is None:
            raise ValueError(f"Training case '{case.id}' has no ground truth; the benchmark needs it for "
                             f"every case (the 'full' upper bound and simulated annotations use it).")
        if kind == "real-scribbles":
            if case.annotation is None or case.annotation.num_annotated_voxels() == 0:
                raise ValueError(f"Case '{case.id}' has no real scribbles; '--annotation real-scribbles' "
                                 f"needs annotation files (ACDC's *_scribble.nii.gz). Use a simulated kind "
                                 f"instead.")
            annotation = case.annotation
        elif kind == "semi":
            gt = case.ground_truth
            annotation = (WeakAnnotation.from_ground_truth(gt.array, gt.geometry, k)
                          if case.id in labelled else None)
        else:
            annotation = _simulate(case, k, kind, config, "train")
        cases.append(Case(case.id, case.image, annotation, case.ground_truth, case.group))
    return Dataset(train.classes, cases, train.channels, train.modality, dict(train.priors), train.name,
                   train.root)


def naive_partial_dataset(train: Dataset) -> Dataset:
    """Partial labels read naively: every voxel not in an annotated class mask is background.

    The usual mistake SMILE corrects: a class that was not drawn in a volume is taught as background
    there.  Each case becomes "fully annotated" (Dice + CE); the given annotations are not modified.
    """
    cases = []
    for case in train.cases:
        ann = case.annotation
        if ann is None or ann.labels is None:
            cases.append(case)
            continue
        labels = np.where(ann.labels == UNKNOWN, 0, ann.labels).astype(np.int16)
        naive = WeakAnnotation(geometry=ann.geometry, num_classes=ann.num_classes, labels=labels,
                               complete_classes=frozenset(range(1, ann.num_classes)))
        cases.append(Case(case.id, case.image, naive, case.ground_truth, case.group))
    return Dataset(train.classes, cases, train.channels, train.modality, dict(train.priors), train.name, train.root)


def test_seed_kind(annotation: str) -> str:
    """Which seeds the test-seed methods get: real scribbles, the same simulated points, else scribbles."""
    return {"real-scribbles": "real-scribbles", "points": "points"}.get(annotation, "scribbles")


def build_test_seeds(test: Dataset, config: BenchConfig) -> dict[str, np.ndarray]:
    """Each test volume's own seeds, ``(z, y, x)`` int16 with ``UNKNOWN`` (-1) where not annotated."""
    kind = test_seed_kind(config.annotation)
    seeds = {}
    for case in test.cases:
        if kind == "real-scribbles":
            if case.annotation is None or case.annotation.labels is None:
                raise ValueError(f"Test case '{case.id}' has no real scribbles for the interactive "
                                 f"baselines.")
            seeds[case.id] = case.annotation.labels.astype(np.int16)
        else:
            seeds[case.id] = _simulate(case, test.num_classes, kind, config, "test").labels.astype(np.int16)
    return seeds


def annotated_fraction(dataset: Dataset) -> float:
    """Annotated voxels (voxel labels) over **all** voxels of the dataset (unannotated volumes included)."""
    total = sum(int(np.prod(c.image.shape)) for c in dataset.cases)
    annotated = sum(c.annotation.num_annotated_voxels() for c in dataset.cases if c.annotation is not None)
    return annotated / total if total else 0.0
