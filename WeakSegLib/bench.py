"""``weakseg bench``: weak vs full supervision vs Slicer's Grow-from-seeds, on one split and one budget.

One process, one train/test split **by patient** (``Case.group``), one budget per trained method:

====================  =====================================================================================
method                what it is
====================  =====================================================================================
``weakseg``           WeakSeg's objective assembled from the training annotations (``objective="auto"``):
                      pCE + partial Dice + random-walker propagation for scribbles/points, box, tag and size
                      terms for boxes / tags+sizes, SMILE for partial labels, Dice + CE on the labelled
                      volumes of ``semi``
``pce``               plain partial cross-entropy on the annotated voxels, same network and budget — what
                      nnU-Net's ignore label does (the weak baseline); skipped for annotations without voxel
                      labels (boxes, tags+sizes)
``naive``             ``partial`` only, not in the default list: each volume's missing classes read as
                      background, then Dice + CE — the mistake SMILE corrects (:func:`naive_partial_dataset`)
``full``              Dice + CE on the training volumes' full ground-truth masks (the upper bound)
``growcut``           Slicer's Grow-from-seeds (``vtkImageGrowCutSegment``) on each test volume's own
                      scribbles, no training (the classical interactive baseline)
``interactive-seeds`` the trained ``weakseg`` network's probabilities as a prior + the test volume's own
                      scribbles as hard seeds, combined by a random walker with prior (Grady 2005), see
                      :func:`refine_with_seeds`
``interactive-finetune``  the trained ``weakseg`` model fine-tuned briefly (``finetune_iterations``) on each
                      test volume's own scribbles, then applied to that volume
====================  =====================================================================================

"Own scribbles" of a test volume: its real scribbles with ``real-scribbles``, otherwise scribbles (or
points, with ``points``) simulated from its ground truth, seeded.  The three test-seed methods keep
the seeded voxels' labels, so they are compared on equal terms.

Reported per method, on the held-out volumes: per-class Dice and HD95 (mm), mean ± sd over volumes
(:func:`WeakSegLib.metrics.summarise`), training wall time (the trainer's own clock: preparation
included, as the ``minutes`` budget counts it), prediction time, peak RSS sampled during the method
(and its increase over the RSS when the method started), the process-wide peak RSS, peak CUDA
memory, the fraction of annotated voxels.  Model selection never looks at the test volumes: the
reported figure is the model at the end of the budget.  The Dice-vs-time curve evaluates weight
snapshots taken at fixed budget fractions (25/50/75 % by default) *after* training.

Outputs: ``bench.json`` (everything, NaN as null), ``bench.md`` (a table), ``dice_vs_time.png``.

Datasets: any folder :func:`WeakSegLib.dataset.load_dataset` reads (``dataset.json``, ACDC), plus the
LA folder (``LA_<ID>.nii.gz`` / ``LA_<ID>_gt.nii.gz``) through :func:`la_manifest` (kept here until
it moves to :mod:`WeakSegLib.dataset`).  ``benchmarks/README.md`` gives the exact commands.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import platform
import re
import shutil
import tempfile
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .annotation import UNKNOWN, WeakAnnotation
from .dataset import Case, Dataset, acdc_manifest, dataset_from_manifest
from .metrics import describe_paired_difference, evaluate, paired_difference, summarise, to_jsonable
from .utils import atomic_write_json, atomic_write_text, peak_rss_mb
from .volume import Volume

logger = logging.getLogger(__name__)

ANNOTATIONS = ("real-scribbles", "scribbles", "points", "boxes", "tags+sizes", "partial", "semi")
METHODS = ("weakseg", "pce", "naive", "full", "growcut", "interactive-seeds", "interactive-finetune")
METHOD_ALIASES = {"interactive": ("interactive-seeds", "interactive-finetune")}
DEFAULT_METHODS = ("weakseg", "pce", "full", "growcut", "interactive-seeds", "interactive-finetune")
TRAINED_METHODS = ("weakseg", "pce", "naive", "full")
TEST_SEED_METHODS = ("growcut", "interactive-seeds", "interactive-finetune")
METHOD_LABELS = {
    "weakseg": "WeakSeg",
    "pce": "pCE (nnU-Net ignore label)",
    "naive": "Naive (missing classes = background)",
    "full": "Full supervision (upper bound)",
    "growcut": "Slicer Grow-from-seeds",
    "interactive-seeds": "WeakSeg + test scribbles (seeded RW)",
    "interactive-finetune": "WeakSeg + test scribbles (fine-tuned)",
}
_OBJECTIVES = {"weakseg": "auto", "pce": "pce", "naive": "auto", "full": "full"}
_STYLE = {"weakseg": ("tab:red", "o"), "pce": ("tab:blue", "s"), "naive": ("tab:brown", "v"),
          "full": ("tab:green", "^"),
          "growcut": ("tab:gray", "D"), "interactive-seeds": ("tab:purple", "*"),
          "interactive-finetune": ("tab:orange", "P")}

ProgressFn = Callable[[float, str], None]


# ---------------------------------------------------------------------------------------- configuration
@dataclass
class BenchConfig:
    """Everything that defines a benchmark run (saved in ``bench.json``)."""

    dataset: str
    annotation: str = "scribbles"
    methods: list[str] = field(default_factory=lambda: list(DEFAULT_METHODS))
    # Budget per trained method (time is the main knob; iterations for reproducible runs).
    minutes: float | None = None
    iterations: int | None = None
    device: str = "auto"
    seed: int = 0
    # Split by group (patient): explicit group lists, or counts, or a test fraction.
    test_fraction: float = 0.25
    train_groups: int | None = None
    test_groups: int | None = None
    split: dict[str, list[str]] | None = None
    max_cases: int | None = None             # cap on training cases and on test cases (smoke runs)
    # Simulated annotations.
    drop_rate: float = 0.5                   # partial
    labelled: int = 4                        # semi: training volumes with full masks
    slice_fraction: float = 1.0              # simulated scribbles: fraction of the slices drawn
    per_slice: bool = False                  # boxes / tags+sizes: drawn on each z slice (2D) instead of per volume
    # The methods.
    curve_fractions: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    finetune_iterations: int = 30
    finetune_learning_rate: float = 1e-3
    prior_weight: float = 0.03               # interactive-seeds: weight of the network prior (gamma)
    prior_weight_sweep: list[float] = field(default_factory=list)  # extra gammas, reported beside the headline
    walker_beta: float = 130.0               # interactive-seeds: edge sensitivity (as the RW propagation)
    growcut_distance_penalty: float = 0.0    # Slicer's "seed locality"; 0 = Slicer's default
    mode: str = "standard"                   # learning mode of the weakseg method
    largest_component: bool = False          # keep each class's largest component (every trained method)
    train_options: dict = field(default_factory=dict)   # extra TrainConfig options for the trained methods

    def __post_init__(self) -> None:
        self.methods = expand_methods(self.methods)
        self.validate()

    def validate(self) -> None:
        if self.annotation not in ANNOTATIONS:
            raise ValueError(f"Unknown annotation '{self.annotation}'; choose one of "
                             f"{', '.join(ANNOTATIONS)}.")
        if self.minutes is None and self.iterations is None and (
                set(self.methods) & {"weakseg", "pce", "full", "interactive-seeds", "interactive-finetune"}):
            raise ValueError("Give a training budget per method: minutes (e.g. --minutes 20) or iterations "
                             "(e.g. --iterations 2000).")
        if self.minutes is not None and not self.minutes > 0:
            raise ValueError(f"minutes must be > 0, got {self.minutes}.")
        if self.iterations is not None and self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}.")
        if not 0.0 < self.test_fraction < 1.0:
            raise ValueError(f"test_fraction must lie in (0, 1), got {self.test_fraction}.")
        for name in ("train_groups", "test_groups", "max_cases"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        if not 0.0 <= self.drop_rate <= 1.0:
            raise ValueError(f"drop_rate must lie in [0, 1], got {self.drop_rate}.")
        if self.labelled < 1:
            raise ValueError(f"labelled (semi: volumes with full masks) must be >= 1, got {self.labelled}.")
        if not 0.0 < self.slice_fraction <= 1.0:
            raise ValueError(f"slice_fraction must lie in (0, 1], got {self.slice_fraction}.")
        if self.per_slice and self.annotation not in ("boxes", "tags+sizes"):
            raise ValueError(f"per_slice applies to the 'boxes' and 'tags+sizes' annotations, not "
                             f"'{self.annotation}'; drop --per-slice or pick one of those.")
        if any(not 0.0 < f < 1.0 for f in self.curve_fractions):
            raise ValueError(f"curve_fractions are budget fractions in (0, 1), got {self.curve_fractions}.")
        if self.finetune_iterations < 1 or not self.finetune_learning_rate > 0:
            raise ValueError("finetune_iterations must be >= 1 and finetune_learning_rate > 0.")
        if not self.prior_weight > 0 or not self.walker_beta >= 0 or any(g <= 0 for g in self.prior_weight_sweep):
            raise ValueError(f"prior_weight must be > 0 and walker_beta >= 0, got {self.prior_weight} and "
                             f"{self.walker_beta}.")
        if self.split is not None and (set(self.split) != {"train", "test"}
                                       or set(self.split["train"]) & set(self.split["test"])):
            raise ValueError("split must be {'train': [groups], 'test': [groups]} with no group in both.")
        needs_model = [m for m in ("interactive-seeds", "interactive-finetune") if m in self.methods]
        if needs_model and "weakseg" not in self.methods:
            raise ValueError(f"Method(s) {needs_model} start from the trained WeakSeg model: add 'weakseg' "
                             f"to the methods.")

    def to_dict(self) -> dict:
        return asdict(self)


def expand_methods(methods: str | Sequence[str]) -> list[str]:
    """``"weakseg,pce,interactive"`` -> the method names, aliases expanded, in the canonical order."""
    if isinstance(methods, str):
        methods = [m for m in re.split(r"[,\s]+", methods) if m]
    wanted: set[str] = set()
    for m in methods:
        m = m.strip().lower()
        if m in METHOD_ALIASES:
            wanted.update(METHOD_ALIASES[m])
        elif m in METHODS:
            wanted.add(m)
        else:
            raise ValueError(f"Unknown method '{m}'; choose from {', '.join(METHODS)} (or 'interactive' for "
                             f"both interactive methods).")
    if not wanted:
        raise ValueError("No method to run: give --methods, e.g. weakseg,pce,full,growcut,interactive.")
    return [m for m in METHODS if m in wanted]


# ---------------------------------------------------------------------------------------- datasets
def la_manifest(folder: str | os.PathLike) -> dict:
    """Manifest for the LA folder (``LA_<ID>.nii.gz`` + ``LA_<ID>_gt.nii.gz``: 0 background, 1 left atrium).

    One volume per patient, so each case is its own group.  (Belongs in :mod:`WeakSegLib.dataset`
    next to :func:`~WeakSegLib.dataset.acdc_manifest`.)
    """
    folder = Path(folder)
    cases = []
    for img in sorted(folder.glob("LA_*.nii.gz")):
        m = re.fullmatch(r"(LA_[A-Za-z0-9]+)\.nii\.gz", img.name)
        if not m or not (folder / f"{m.group(1)}_gt.nii.gz").exists():
            continue
        cases.append({"id": m.group(1), "image": img.name, "ground_truth": f"{m.group(1)}_gt.nii.gz",
                      "group": m.group(1)})
    if not cases:
        raise FileNotFoundError(f"No LA cases (LA_<ID>.nii.gz with LA_<ID>_gt.nii.gz) found in '{folder}'.")
    return {"name": "LA", "classes": [{"id": 0, "name": "Background", "color": [0, 0, 0]},
                                      {"id": 1, "name": "LeftAtrium", "color": [216, 101, 79]}],
            "channels": ["LGE-MRI"], "modality": "MR", "cases": cases}


def load_manifest(path: str | os.PathLike) -> tuple[dict, Path]:
    """``(manifest, root)`` of a dataset folder: ``dataset.json``, an ACDC folder or an LA folder."""
    path = Path(path)
    if path.is_dir():
        if (path / "dataset.json").exists():
            try:
                return json.loads((path / "dataset.json").read_text()), path
            except json.JSONDecodeError as exc:
                raise ValueError(f"'{path / 'dataset.json'}' is not valid JSON: {exc}") from None
        if any(path.glob("patient*_frame*_gt.nii.gz")):
            return acdc_manifest(path), path
        if any(path.glob("LA_*_gt.nii.gz")):
            return la_manifest(path), path
        raise FileNotFoundError(f"'{path}' has no dataset.json and is neither an ACDC nor an LA folder.")
    if not path.exists():
        raise FileNotFoundError(f"Dataset '{path}' does not exist (give a dataset folder or its "
                                f"dataset.json).")
    try:
        return json.loads(path.read_text()), path.parent
    except json.JSONDecodeError as exc:
        raise ValueError(f"'{path}' is not valid JSON: {exc}") from None


def _entry_id(entry: dict) -> str:
    # The same rule as WeakSegLib.dataset.dataset_from_manifest.
    return str(entry.get("id") or Path(str(entry["image"])).name.split(".")[0])


def _entry_group(entry: dict) -> str:
    return str(entry.get("group") or _entry_id(entry))


def split_groups(groups: Sequence[str], test_groups: int | None = None, train_groups: int | None = None,
                 test_fraction: float = 0.25, seed: int = 0) -> tuple[list[str], list[str]]:
    """Seeded split of group names (patients) into ``(train, test)``, each sorted, never overlapping.

    ``test_groups`` (a count) wins over ``test_fraction``; ``train_groups`` caps the training groups
    (default: all the others).
    """
    unique = sorted({str(g) for g in groups})
    n = len(unique)
    n_test = int(test_groups) if test_groups is not None else max(1, int(round(test_fraction * n)))
    n_train = int(train_groups) if train_groups is not None else n - n_test
    if n_test < 1 or n_train < 1 or n_test + n_train > n:
        raise ValueError(f"Cannot split {n} group(s) into {n_train} for training and {n_test} for testing; "
                         f"lower --train-groups / --test-groups (or --test-fraction).")
    order = np.random.default_rng(seed).permutation(n)
    test = sorted(unique[i] for i in order[:n_test])
    train = sorted(unique[i] for i in order[n_test:n_test + n_train])
    return train, test


def _case_seed(seed: int, case_id: str, salt: str) -> int:
    return (int(seed) * 1_000_003 + zlib.crc32(f"{salt}:{case_id}".encode())) % (2**31 - 1)


def _simulate(case: Case, num_classes: int, kind: str, config: BenchConfig, salt: str) -> WeakAnnotation:
    from .simulate import simulate

    options: dict = {}
    if kind == "scribbles":
        options["slice_fraction"] = config.slice_fraction
    if kind in ("boxes", "tags+sizes") and config.per_slice:
        options["per_slice"] = True
    if kind == "partial":
        options["drop_rate"] = config.drop_rate
    seed = _case_seed(config.seed, case.id, salt)
    return simulate(case.ground_truth, num_classes, kind, seed=seed, **options)


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


# ---------------------------------------------------------------------------------------- memory
def current_rss_mb() -> float | None:
    """Resident set size of this process now, in MB (Linux ``/proc``; None elsewhere)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return None
    return None


class MemorySampler:
    """Samples the RSS in a background thread while a block runs: ``start_mb``, ``peak_mb``, ``increase_mb``.

    Where the device is CUDA it also resets and reads ``torch.cuda.max_memory_allocated``.
    """

    def __init__(self, interval_s: float = 0.05, cuda: bool = False):
        self.interval_s = interval_s
        self.cuda = cuda
        self.start_mb: float | None = None
        self.peak_mb: float | None = None
        self.peak_gpu_mb: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        value = current_rss_mb()
        if value is not None:
            self.peak_mb = value if self.peak_mb is None else max(self.peak_mb, value)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> MemorySampler:
        gc.collect()
        self.start_mb = current_rss_mb()
        self.peak_mb = self.start_mb
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        if self.start_mb is not None:
            self._thread = threading.Thread(target=self._run, name="weakseg-rss-sampler", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self._sample()
        if self.cuda:
            import torch

            torch.cuda.synchronize()
            self.peak_gpu_mb = torch.cuda.max_memory_allocated() / 2**20

    @property
    def increase_mb(self) -> float | None:
        if self.start_mb is None or self.peak_mb is None:
            return None
        return self.peak_mb - self.start_mb

    def report(self) -> dict:
        rnd = lambda v: None if v is None else round(float(v), 1)  # noqa: E731
        return {"peak_rss_mb": rnd(self.peak_mb), "rss_increase_mb": rnd(self.increase_mb),
                "process_peak_rss_mb": rnd(peak_rss_mb()), "peak_gpu_mb": rnd(self.peak_gpu_mb)}


# ---------------------------------------------------------------------------------------- seeded refinement
def _normalise01(image: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(image, [1, 99])
    return np.clip((image - lo) / max(hi - lo, 1e-6), 0, 1)


def _prior_random_walker(image: np.ndarray, prior: np.ndarray, seeds: np.ndarray, spacing: Sequence[float],
                         gamma: float, beta: float, tol: float = 1e-5) -> np.ndarray:
    """Random walker with prior (Grady 2005) on one 2D/3D block; returns per-class probabilities.

    ``image``: (*spatial, C) in [0, 1]; ``prior``: (*spatial, K) probabilities; ``seeds``: (*spatial) with
    UNKNOWN where free.  Solves ``(L_UU + gamma I) x_k = gamma p_k + W_US m_k`` for each class k, with
    the graph Laplacian ``L`` of edge weights ``exp(-beta |grad I|^2 / (10 std(I)))`` (scikit-image's
    convention, gradients per mm relative to the finest spacing).
    """
    from scipy import sparse
    from scipy.sparse import linalg as splinalg

    shape = seeds.shape
    n = int(np.prod(shape))
    k = prior.shape[-1]
    index = np.arange(n).reshape(shape)
    rel = np.asarray(spacing, float) / min(spacing)
    std = float(image.std()) or 1.0
    scale = -beta / (10.0 * std) / math.sqrt(image.shape[-1])
    rows, cols, weights = [], [], []
    for ax in range(len(shape)):
        if shape[ax] < 2:
            continue
        grad2 = (np.diff(image, axis=ax) / rel[ax]) ** 2
        rows.append(np.delete(index, -1, axis=ax).ravel())
        cols.append(np.delete(index, 0, axis=ax).ravel())
        weights.append(np.exp(scale * grad2.sum(-1)).ravel() + 1e-10)
    r, c, w = np.concatenate(rows), np.concatenate(cols), np.concatenate(weights)
    adjacency = sparse.csr_array((np.concatenate([w, w]), (np.concatenate([r, c]), np.concatenate([c, r]))),
                                 shape=(n, n))
    flat_seeds = seeds.ravel()
    seeded = flat_seeds != UNKNOWN
    free = np.nonzero(~seeded)[0]
    fixed = np.nonzero(seeded)[0]
    degree = np.asarray(adjacency.sum(axis=1)).ravel()
    a_uu = (sparse.diags_array(degree[free] + gamma) - adjacency[free][:, free]).tocsc()
    w_us = adjacency[free][:, fixed]
    flat_prior = prior.reshape(n, k)
    out = np.zeros((n, k), np.float32)
    out[fixed, np.clip(flat_seeds[fixed], 0, k - 1)] = 1.0
    if free.size:
        rhs = gamma * flat_prior[free].astype(np.float64)
        if fixed.size:
            onehot = np.zeros((fixed.size, k))
            onehot[np.arange(fixed.size), np.clip(flat_seeds[fixed], 0, k - 1)] = 1.0
            rhs += w_us @ onehot
        # Priors and seeds sum to one over the classes, so the solutions do too: solve K - 1 systems.
        if free.size <= 150_000:   # a 2D slice: a sparse direct solve is exact and fast
            solve = splinalg.factorized(a_uu)
            sol = [solve(rhs[:, j]) for j in range(k - 1)]
        else:                      # a 3D volume: Jacobi-preconditioned CG (gamma keeps it well conditioned)
            inv_diag = sparse.diags_array(1.0 / a_uu.diagonal())
            sol = [splinalg.cg(a_uu, rhs[:, j], x0=flat_prior[free, j].astype(np.float64), rtol=tol,
                               maxiter=2000, M=inv_diag)[0] for j in range(k - 1)]
        sol.append(1.0 - np.sum(sol, axis=0))
        out[free] = np.stack(sol, 1)
    return out.reshape(*shape, k)


def refine_with_seeds(probabilities: np.ndarray, image: np.ndarray, seeds: np.ndarray,
                      spacing_zyx: Sequence[float], dims: int = 3, prior_weight: float = 0.03,
                      beta: float = 130.0) -> np.ndarray:
    """Network probabilities + hard seeds -> labels, by a random walker with the network as prior.

    ``probabilities``: (z, y, x, K) softmax of the network on the image grid; ``image``: (z, y, x[, C]);
    ``seeds``: (z, y, x) class ids with ``UNKNOWN`` (-1) where not annotated.  Each class's walker
    probability is pulled towards the seeds along image-homogeneous paths and towards the network
    prior with weight ``prior_weight`` (gamma; large = trust the network, small = trust the seeds).
    Seeded voxels keep their label.  With ``dims=2`` (the model's 2D plan, anisotropic volumes) the
    walker runs per z slice and slices without seeds keep the network's labels; with ``dims=3`` it
    runs on the whole volume with the voxel spacing.  Returns (z, y, x) int16 labels.
    """
    probabilities = np.asarray(probabilities, np.float32)
    if probabilities.ndim != 4 or probabilities.shape[:3] != seeds.shape:
        raise ValueError(f"probabilities must be (z, y, x, K) on the seeds' grid {seeds.shape}, got "
                         f"{probabilities.shape}.")
    img = np.asarray(image, np.float32)
    img = img[..., None] if img.ndim == 3 else img
    if img.shape[:3] != seeds.shape:
        raise ValueError(f"image shape {img.shape[:3]} differs from the seeds' shape {seeds.shape}.")
    img = np.stack([_normalise01(img[..., c]) for c in range(img.shape[-1])], -1)
    labels = probabilities.argmax(-1).astype(np.int16)
    if dims == 2:
        for z in range(seeds.shape[0]):
            if np.any(seeds[z] != UNKNOWN):
                prob = _prior_random_walker(img[z], probabilities[z], seeds[z], tuple(spacing_zyx[1:]),
                                            prior_weight, beta)
                labels[z] = prob.argmax(-1)
    elif np.any(seeds != UNKNOWN):
        labels = _prior_random_walker(img, probabilities, seeds, tuple(spacing_zyx), prior_weight,
                                      beta).argmax(-1).astype(np.int16)
    known = seeds != UNKNOWN
    labels[known] = seeds[known]
    return labels


# ---------------------------------------------------------------------------------------- training
def _curve_trainer_class():
    from .training.trainer import Trainer

    class CurveTrainer(Trainer):
        """A trainer that snapshots its weights when given fractions of the budget are reached.

        The check runs at the start of every ``train_step`` (``on_epoch_end`` fires only every 50
        iterations, too coarse for short budgets); snapshots are evaluated after training.
        """

        def __init__(self, *args, fractions: Sequence[float] = (), **kwargs):
            super().__init__(*args, **kwargs)
            self._pending = sorted(float(f) for f in fractions)
            self.snapshots: list[dict] = []
            self.prepare_seconds: float | None = None   # trainer clock when the first step starts

        def train_step(self):
            if self.prepare_seconds is None:
                self.prepare_seconds = self.elapsed()
            if self._pending and self.iteration > 0:
                done = self.fraction_done()
                if done >= self._pending[0]:
                    while self._pending and done >= self._pending[0]:
                        self._pending.pop(0)
                    net = self.dist.unwrap(self.network)
                    self.snapshots.append({
                        "fraction": round(done, 4), "iteration": self.iteration, "seconds": self.elapsed(),
                        "state": {k: v.detach().to("cpu", copy=True) for k, v in net.state_dict().items()}})
            return super().train_step()

    return CurveTrainer


def _train_config(config: BenchConfig, objective: str, **overrides):
    from .training import TrainConfig

    data = TrainConfig().to_dict()
    data.update(config.train_options)
    data.update({"minutes": config.minutes, "iterations": config.iterations, "device": config.device,
                 "seed": config.seed, "objective": objective})
    if objective != "auto" or config.mode == "standard":   # the baselines never use a learning mode
        data.update({"mode": "standard", "mode_options": {}})
    else:
        data["mode"] = config.mode
    data.update(overrides)
    return TrainConfig.from_dict(data)


def _model_from_state(trainer, state: dict):
    from .model import Model
    from .training.planning import build_network

    net = build_network(trainer.plan)
    net.load_state_dict(state)
    net.to(trainer.device).eval()
    return Model(net, trainer.plan, trainer.preprocessing, trainer.dataset.classes, trainer.config)


# ---------------------------------------------------------------------------------------- evaluation
def _evaluate_labels(labels: dict[str, np.ndarray], test: Dataset) -> tuple[dict, dict]:
    reports = {}
    for case in test.cases:
        reports[case.id] = evaluate(Volume(labels[case.id].astype(np.int16), case.image.geometry),
                                    case.ground_truth, test.class_names)
    return reports, summarise(list(reports.values()))


def _dice_only(labels: dict[str, np.ndarray], test: Dataset) -> dict[str, float]:
    """Mean Dice per class over the test volumes (as ``summarise`` means it: per volume, then averaged)."""
    from .metrics import dice

    ids = list(range(1, test.num_classes))
    per_case = [dice(labels[c.id], c.ground_truth.array, ids) for c in test.cases]
    return {test.class_names[i]: float(np.mean([d[i] for d in per_case])) for i in ids}


def _predict_all(model, test: Dataset, largest_component: bool = False) -> tuple[dict[str, np.ndarray], float]:
    labels = {}
    start = time.monotonic()
    for case in test.cases:
        labels[case.id] = model.predict(case.image, largest_component=largest_component).labels.array
    return labels, time.monotonic() - start


def _mean_dice(summary: dict) -> float:
    return float(summary["mean"]["dice"]["mean"])


def _class_dice(summary: dict) -> dict[str, float]:
    return {name: float(m["dice"]["mean"]) for name, m in summary["classes"].items()}


# ---------------------------------------------------------------------------------------- the benchmark
class _Bench:
    def __init__(self, config: BenchConfig, progress: ProgressFn | None):
        self.config = config
        self.progress = progress
        self.results: dict[str, dict] = {}
        self.workdir = Path(tempfile.mkdtemp(prefix="weakseg-bench-"))
        self.weakseg_model = None
        self.weakseg_model_dir: Path | None = None
        self.weakseg_train_seconds: float | None = None
        self.cuda = False

    def _emit(self, fraction: float, message: str) -> None:
        logger.info("%s", message)
        if self.progress is not None:
            self.progress(fraction, message)

    # ------------------------------------------------------------------ data
    def load(self) -> None:
        cfg = self.config
        manifest, root = load_manifest(cfg.dataset)
        entries = manifest.get("cases", [])
        groups = [_entry_group(e) for e in entries]
        if cfg.split is not None:
            known = set(groups)
            missing = sorted((set(cfg.split["train"]) | set(cfg.split["test"])) - known)
            if missing:
                raise ValueError(f"The split names group(s) not in the dataset: {missing[:5]}.")
            train_groups, test_groups = sorted(cfg.split["train"]), sorted(cfg.split["test"])
        else:
            train_groups, test_groups = split_groups(groups, cfg.test_groups, cfg.train_groups,
                                                     cfg.test_fraction, cfg.seed)
        train_ids = [_entry_id(e) for e in entries if _entry_group(e) in set(train_groups)]
        test_ids = [_entry_id(e) for e in entries if _entry_group(e) in set(test_groups)]
        if cfg.max_cases is not None:
            train_ids, test_ids = train_ids[:cfg.max_cases], test_ids[:cfg.max_cases]
        wanted = set(train_ids) | set(test_ids)
        with_annotations = cfg.annotation == "real-scribbles"
        dataset = dataset_from_manifest(manifest, root, with_annotations=with_annotations,
                                        with_ground_truth=True, case_filter=lambda e: _entry_id(e) in wanted)
        missing_gt = [c.id for c in dataset.cases if c.ground_truth is None]
        if missing_gt:
            raise ValueError(f"The benchmark needs ground truth for every case; missing for "
                             f"{missing_gt[:5]}.")
        self.dataset = dataset
        train = dataset.subset(train_ids)
        self.test = dataset.subset(test_ids)
        self.train = build_training_annotations(train, cfg)
        self.split = {"train_groups": sorted({c.group for c in self.train.cases}),
                      "test_groups": sorted({c.group for c in self.test.cases}),
                      "train_cases": [c.id for c in self.train.cases],
                      "test_cases": [c.id for c in self.test.cases],
                      "test_case_groups": {c.id: c.group for c in self.test.cases}}
        overlap = set(self.split["train_groups"]) & set(self.split["test_groups"])
        if overlap:  # cannot happen with split_groups; guards explicit splits and odd manifests
            raise RuntimeError(f"Group(s) {sorted(overlap)} are in both the training and the test set.")
        self.train_fraction = annotated_fraction(self.train)
        needs_seeds = any(m in cfg.methods for m in TEST_SEED_METHODS)
        self.test_seeds = build_test_seeds(self.test, cfg) if needs_seeds else {}
        total = sum(int(np.prod(c.image.shape)) for c in self.test.cases)
        self.test_seed_fraction = (sum(int(np.count_nonzero(s != UNKNOWN)) for s in self.test_seeds.values())
                                   / total) if self.test_seeds else None
        logger.info("Split by group: %d training group(s) (%d volumes), %d test group(s) (%d volumes); "
                    "annotation '%s' marks %.3f%% of the training voxels.", len(self.split["train_groups"]),
                    len(self.train), len(self.split["test_groups"]), len(self.test), cfg.annotation,
                    100 * self.train_fraction)

    # ------------------------------------------------------------------ methods
    def _record(self, name: str, result: dict, reports: dict | None = None, summary: dict | None = None
                ) -> None:
        result = {"method": name, "label": METHOD_LABELS[name], **result}
        if summary is not None:
            result["summary"] = summary
            result["mean_dice"] = _mean_dice(summary)
            result["dice_per_class"] = _class_dice(summary)
            result["per_case"] = reports
        self.results[name] = result

    def run_trained(self, name: str) -> None:
        from .training.trainer import TrainingError

        cfg = self.config
        if name == "pce" and not any(c.annotation is not None and c.annotation.num_annotated_voxels()
                                     for c in self.train.cases):
            self._record(name, {"status": "skipped", "reason": f"plain pCE needs annotated voxels; the "
                                f"'{cfg.annotation}' annotation has none"})
            return
        train = self.train
        if name == "naive":
            if cfg.annotation != "partial":
                self._record(name, {"status": "skipped", "reason": "the naive baseline is for '--annotation "
                                    "partial' (missing classes read as background)"})
                return
            train = naive_partial_dataset(train)
        tcfg = _train_config(cfg, _OBJECTIVES[name])
        trainer_cls = _curve_trainer_class()
        with MemorySampler(cuda=self.cuda) as memory:
            wall = time.monotonic()
            trainer = trainer_cls(train, tcfg, fractions=cfg.curve_fractions)
            try:
                result = trainer.fit()
            except TrainingError as exc:
                self._record(name, {"status": "failed", "reason": str(exc)})
                return
            train_wall = time.monotonic() - wall
            labels, predict_seconds = _predict_all(result.model, self.test, self.config.largest_component)
        reports, summary = _evaluate_labels(labels, self.test)
        curve = []
        for snap in trainer.snapshots:   # Dice only: HD95 of an early, noisy prediction is slow and not plotted
            snap_labels, _ = _predict_all(_model_from_state(trainer, snap["state"]), self.test,
                                          self.config.largest_component)
            per_class = _dice_only(snap_labels, self.test)
            curve.append({"fraction": snap["fraction"], "iteration": snap["iteration"],
                          "seconds": round(snap["seconds"], 2), "mean_dice": float(np.mean(list(per_class.values()))),
                          "dice_per_class": per_class})
        curve.append({"fraction": 1.0, "iteration": result.iterations, "seconds": round(result.seconds, 2),
                      "mean_dice": _mean_dice(summary), "dice_per_class": _class_dice(summary)})
        fraction = 1.0 if name == "full" else self.train_fraction
        self._record(name, {
            "status": result.status, "objective": tcfg.objective, "objective_terms": trainer.term_names,
            "plan": trainer.plan.to_dict(), "train_seconds": round(result.seconds, 2),
            "prepare_seconds": None if trainer.prepare_seconds is None else round(trainer.prepare_seconds, 2),
            "train_wall_seconds": round(train_wall, 2), "train_iterations": result.iterations,
            "predict_seconds": round(predict_seconds, 2),
            "predict_seconds_per_volume": round(predict_seconds / len(self.test), 3),
            "annotated_fraction": fraction, **memory.report(), "curve": curve}, reports, summary)
        if name == "weakseg":
            self.weakseg_model = result.model
            self.weakseg_train_seconds = result.seconds
            if "interactive-finetune" in cfg.methods:
                self.weakseg_model_dir = result.model.save(self.workdir / "weakseg-model")
        del trainer, result
        gc.collect()

    def run_growcut(self) -> None:
        try:
            from .mrml import grow_from_seeds  # the MRML bridge is the one module importing slicer
        except ImportError as exc:
            self._record("growcut", {"status": "skipped", "reason": f"Slicer's Grow-from-seeds is not "
                                     f"available ({exc}); pip install slicer-core or run inside 3D Slicer"})
            return
        labels, per_volume = {}, []
        with MemorySampler() as memory:
            for case in self.test.cases:
                seeds = self.test_seeds[case.id]
                image = case.image.array if case.image.num_channels == 1 else case.image.array[..., 0]
                start = time.monotonic()
                grown = grow_from_seeds(image, np.where(seeds == UNKNOWN, 0, seeds + 1).astype(np.int16),
                                        case.image.geometry.spacing_zyx,
                                        distance_penalty=self.config.growcut_distance_penalty)
                per_volume.append(time.monotonic() - start)
                out = np.clip(grown.astype(np.int16) - 1, 0, None)   # unreached voxels -> background
                labels[case.id] = out
        reports, summary = _evaluate_labels(labels, self.test)
        self._record("growcut", {
            "status": "completed", "train_seconds": 0.0, "predict_seconds": round(sum(per_volume), 2),
            "predict_seconds_per_volume": round(float(np.mean(per_volume)), 3),
            "annotated_fraction": 0.0, "test_seed_fraction": self.test_seed_fraction,
            "test_seeds": test_seed_kind(self.config.annotation),
            "intensity_channel": self.test.channels[0], **memory.report()}, reports, summary)

    def run_interactive_seeds(self) -> None:
        cfg = self.config
        model = self.weakseg_model
        if model is None:
            self._record("interactive-seeds", {"status": "skipped",
                                               "reason": "the weakseg model did not train"})
            return
        labels, refine = {}, []
        sweep = [g for g in cfg.prior_weight_sweep if g != cfg.prior_weight]
        swept: dict[float, dict[str, np.ndarray]] = {g: {} for g in sweep}
        predict_seconds = 0.0
        with MemorySampler(cuda=self.cuda) as memory:
            for case in self.test.cases:   # one volume at a time: probabilities are (z, y, x, K) floats
                start = time.monotonic()
                prob = model.predict(case.image, return_probabilities=True).probabilities.array
                predict_seconds += time.monotonic() - start
                args = (prob, case.image.array, self.test_seeds[case.id], case.image.geometry.spacing_zyx,
                        model.plan.dims)
                start = time.monotonic()
                labels[case.id] = refine_with_seeds(*args, cfg.prior_weight, cfg.walker_beta)
                refine.append(time.monotonic() - start)
                for g in sweep:
                    swept[g][case.id] = refine_with_seeds(*args, g, cfg.walker_beta)
        reports, summary = _evaluate_labels(labels, self.test)
        sweep_report = [{"prior_weight": g, "mean_dice": _mean_dice(_evaluate_labels(swept[g], self.test)[1])}
                        for g in sweep]
        self._record("interactive-seeds", {
            "status": "completed", "train_seconds": self.weakseg_train_seconds,
            "predict_seconds": round(predict_seconds + sum(refine), 2),
            "predict_seconds_per_volume": round((predict_seconds + sum(refine)) / len(self.test), 3),
            "refine_seconds_per_volume": round(float(np.mean(refine)), 3),
            "prior_weight": cfg.prior_weight, "walker_beta": cfg.walker_beta, "prior_weight_sweep": sweep_report,
            "annotated_fraction": self.train_fraction, "test_seed_fraction": self.test_seed_fraction,
            "test_seeds": test_seed_kind(cfg.annotation), **memory.report()}, reports, summary)

    def run_interactive_finetune(self) -> None:
        from .training.trainer import Trainer

        cfg = self.config
        model = self.weakseg_model
        if model is None or self.weakseg_model_dir is None:
            self._record("interactive-finetune", {"status": "skipped",
                                                  "reason": "the weakseg model did not train"})
            return
        plan = model.plan
        # Ask planning for exactly the trained model's plan, so the fine-tuning data is prepared on the
        # model's grid (a different plan would make the trainer swap in the loaded plan after preparing).
        spacing = plan.target_spacing_zyx
        overrides = {"minutes": None, "iterations": cfg.finetune_iterations,
                     "learning_rate": cfg.finetune_learning_rate, "init_model": str(self.weakseg_model_dir),
                     "dims": plan.dims, "patch_size": list(plan.patch_size), "batch_size": plan.batch_size,
                     "base_filters": plan.filters[0], "target_spacing": [spacing[2], spacing[1], spacing[0]],
                     "checkpoint_every": 0, "validate_every": 0, "mode": "standard", "mode_options": {}}
        tcfg = _train_config(cfg, "auto", **overrides)
        labels, per_volume = {}, []
        with MemorySampler(cuda=self.cuda) as memory:
            for case in self.test.cases:
                seeds = self.test_seeds[case.id]
                start = time.monotonic()
                if not np.any(seeds != UNKNOWN):   # nothing to fine-tune on: the model as it is
                    labels[case.id] = model.predict(case.image).labels.array
                    per_volume.append(time.monotonic() - start)
                    continue
                annotation = WeakAnnotation(case.image.geometry, self.test.num_classes, seeds,
                                            allow_empty=True)
                one = Dataset(self.test.classes, [Case(case.id, case.image, annotation, None, case.group)],
                              self.test.channels, self.test.modality, dict(self.train.priors), "finetune")
                trainer = Trainer(one, tcfg)
                tuned = trainer.fit().model
                if tuned.plan.to_dict() != plan.to_dict():
                    logger.warning("Fine-tuning on %s planned %s instead of the model's plan.", case.id,
                                   tuned.plan)
                out = tuned.predict(case.image).labels.array.astype(np.int16)
                known = seeds != UNKNOWN
                out[known] = seeds[known]
                labels[case.id] = out
                per_volume.append(time.monotonic() - start)
                del trainer, tuned
        reports, summary = _evaluate_labels(labels, self.test)
        self._record("interactive-finetune", {
            "status": "completed", "train_seconds": self.weakseg_train_seconds,
            "predict_seconds": round(sum(per_volume), 2),
            "predict_seconds_per_volume": round(float(np.mean(per_volume)), 3),
            "finetune_iterations": cfg.finetune_iterations,
            "finetune_learning_rate": cfg.finetune_learning_rate,
            "annotated_fraction": self.train_fraction, "test_seed_fraction": self.test_seed_fraction,
            "test_seeds": test_seed_kind(cfg.annotation), **memory.report()}, reports, summary)

    # ------------------------------------------------------------------ driver
    def run(self, strict: bool) -> dict:
        import torch

        from .utils import describe_device, resolve_device

        cfg = self.config
        device = resolve_device(cfg.device)
        self.cuda = device.type == "cuda"
        started = time.monotonic()
        self._emit(0.0, f"Loading '{cfg.dataset}'")
        self.load()
        # Imports that the first method would otherwise pay in its time and memory figures.
        import monai.networks.nets  # noqa: F401
        import scipy.sparse.linalg  # noqa: F401
        import skimage.segmentation  # noqa: F401
        runners = {"weakseg": lambda: self.run_trained("weakseg"), "pce": lambda: self.run_trained("pce"),
                   "naive": lambda: self.run_trained("naive"),
                   "full": lambda: self.run_trained("full"), "growcut": self.run_growcut,
                   "interactive-seeds": self.run_interactive_seeds,
                   "interactive-finetune": self.run_interactive_finetune}
        try:
            for i, name in enumerate(cfg.methods):
                self._emit(i / len(cfg.methods), f"Method {i + 1}/{len(cfg.methods)}: {METHOD_LABELS[name]}")
                method_start = time.monotonic()
                try:
                    runners[name]()
                except Exception as exc:  # noqa: BLE001 - one failing method must not lose the others
                    if strict:
                        raise
                    logger.exception("Method %s failed", name)
                    self._record(name, {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"})
                self.results[name]["method_seconds"] = round(time.monotonic() - method_start, 2)
                res = self.results[name]
                if "mean_dice" in res:
                    logger.info("%s: mean Dice %.3f on %d test volume(s)", METHOD_LABELS[name],
                                res["mean_dice"], len(self.test))
                else:
                    logger.info("%s: %s (%s)", METHOD_LABELS[name], res["status"], res.get("reason", ""))
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
        self._emit(1.0, "Benchmark done")
        return {
            "benchmark": "weakseg bench", "dataset": self.dataset.name, "dataset_path": str(cfg.dataset),
            "annotation": cfg.annotation, "classes": self.test.class_names,
            "config": cfg.to_dict(), "split": self.split, "n_train": len(self.train),
            "n_test": len(self.test),
            "annotated_fraction": self.train_fraction, "test_seeds": test_seed_kind(cfg.annotation),
            "test_seed_fraction": self.test_seed_fraction,
            "environment": {"device": describe_device(device), "torch": torch.__version__,
                            "threads": torch.get_num_threads(), "python": platform.python_version(),
                            "machine": platform.machine(), "cpu_count": os.cpu_count()},
            "seconds_total": round(time.monotonic() - started, 2),
            "methods": self.results,
            "comparisons": paired_comparisons(self.results, self.split["test_case_groups"]),
        }


def run_bench(config: BenchConfig, out_dir: str | os.PathLike | None = None,
              progress: ProgressFn | None = None, strict: bool = False, overwrite: bool = False) -> dict:
    """Run the benchmark described by ``config``; write ``bench.json``/``bench.md``/``dice_vs_time.png``
    into ``out_dir`` when given.  Returns the report (the content of ``bench.json``, NaN kept as NaN).

    ``strict=True`` re-raises a failing method's error instead of recording it and going on.
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
    report = _Bench(config, progress).run(strict)
    if out is not None:
        write_outputs(report, out)
    return report


# ---------------------------------------------------------------------------------------- outputs
# WeakSeg against each baseline, paired over the test volumes (a method that ran on them all).
COMPARED_WITH = ("pce", "naive", "growcut", "full")


def per_case_mean_dice(result: dict) -> dict[str, float]:
    """A method's mean foreground Dice on each test volume (NaN where it has none)."""
    return {cid: float("nan") if r["mean"]["dice"] is None else float(r["mean"]["dice"])
            for cid, r in (result.get("per_case") or {}).items()}


def paired_comparisons(methods: dict, groups: dict[str, str] | None = None) -> dict:
    """``{"weakseg-vs-pce": metrics.paired_difference(...), ...}`` for every baseline run next to WeakSeg.

    ``groups`` (test case id -> patient, the report's ``split["test_case_groups"]``): the bootstrap
    resamples patients, not volumes (both frames of a heart are one piece of evidence)."""
    out = {}
    for name in COMPARED_WITH:
        ids, ours, theirs = _paired_scores(methods, "weakseg", name)
        if ids:
            out[f"weakseg-vs-{name}"] = paired_difference(ours, theirs, clusters=_clusters(ids, groups))
    return out


def _paired_scores(methods: dict, method: str, baseline: str) -> tuple[list[str], list[float], list[float]]:
    """The test volumes both methods scored, and their per-volume mean Dice (``[]`` when none)."""
    ours = per_case_mean_dice(methods.get(method, {}))
    theirs = per_case_mean_dice(methods.get(baseline, {}))
    ids = [cid for cid in ours if cid in theirs]
    return ids, [ours[c] for c in ids], [theirs[c] for c in ids]


def _clusters(ids: list[str], groups: dict[str, str] | None) -> list[str] | None:
    return [groups.get(i, i) for i in ids] if groups else None


def pooled_comparison(reports: Sequence[dict], baseline: str = "pce", method: str = "weakseg") -> dict:
    """``method`` against ``baseline`` over several benchmark runs (e.g. two split seeds), paired per test
    volume and pooled: every run's volumes count, the bootstrap resamples within each run
    (:func:`metrics.paired_difference` with the runs as strata and, where the reports name them, the
    patients as clusters).  Returns ``{"runs": [...], "pooled": ...}``."""
    a, b, strata, clusters, runs = [], [], [], [], []
    for i, report in enumerate(reports):
        ids, ours, theirs = _paired_scores(report["methods"], method, baseline)
        if not ids:
            raise ValueError(f"Benchmark report {i + 1} has no test volume scored by both '{method}' and "
                             f"'{baseline}' (methods: {', '.join(report['methods'])}).")
        groups = _clusters(ids, report.get("split", {}).get("test_case_groups"))
        a += ours
        b += theirs
        strata += [i] * len(ids)
        clusters += groups or ids
        runs.append({"seed": report.get("config", {}).get("seed"),
                     **paired_difference(ours, theirs, clusters=groups)})
    return {"method": method, "baseline": baseline, "runs": runs,
            "pooled": paired_difference(a, b, strata=strata, clusters=clusters)}


def write_outputs(report: dict, out: str | os.PathLike) -> dict[str, Path]:
    out = Path(out)
    paths = {"json": atomic_write_json(out / "bench.json", to_jsonable(report)),
             "markdown": atomic_write_text(out / "bench.md", format_markdown(report))}
    paths["plot"] = plot_dice_vs_time(report, out / "dice_vs_time.png")
    return paths


def _fmt(value, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"


def _fmt_stat(stat: dict, digits: int = 3) -> str:
    if not stat or stat.get("n", 0) == 0:
        return "n/a"
    text = f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"
    return text + (f" ({stat['skipped']} n/a)" if stat.get("skipped") else "")


def _fmt_seconds(seconds) -> str:
    if seconds is None:
        return "n/a"
    return f"{seconds:.0f} s" if seconds >= 10 else f"{seconds:.1f} s"


def format_markdown(report: dict) -> str:
    """The benchmark as a markdown table plus the headline comparisons."""
    classes = report["classes"][1:]
    methods = report["methods"]
    cfg = report["config"]
    budget = (f"{cfg['iterations']} iterations" if cfg.get("iterations")
              else f"{cfg['minutes']:g} min" if cfg.get("minutes") else "none") + " per trained method"
    per_slice = " (per slice)" if cfg.get("per_slice") else ""
    lines = [f"# WeakSeg benchmark: {report['dataset']}, annotation `{report['annotation']}`{per_slice}", "",
             f"- Split by patient (seed {cfg['seed']}): {len(report['split']['train_groups'])} training "
             f"patients ({report['n_train']} volumes), {len(report['split']['test_groups'])} test patients "
             f"({report['n_test']} volumes).",
             f"- Budget: {budget}; device: {report['environment']['device']}; "
             f"total {report['seconds_total'] / 60:.1f} min.",
             f"- Annotated voxels in the training annotations: {100 * report['annotated_fraction']:.3f} %."]
    if report.get("test_seed_fraction") is not None:
        lines.append(f"- Test-volume seeds for Grow-from-seeds and the interactive modes: "
                     f"{report['test_seeds']} ({100 * report['test_seed_fraction']:.3f} % of the test voxels).")
    lines += ["- Dice and HD95: mean ± sd over the test volumes (HD95 'n/a' counts volumes where a class was "
              "missed or predicted while absent).", ""]
    header = (["method"] + [f"{c} Dice" for c in classes]
              + ["mean Dice", "HD95 mm", "train time", "predict / volume", "peak RSS MB (+Δ)", "annotated"])
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "|".join(["---"] * len(header)) + "|")
    for name, res in methods.items():
        label = res["label"]
        if "summary" not in res:
            lines.append("| " + " | ".join([label, f"{res['status']}: {res.get('reason', '')}"]
                                           + [""] * (len(header) - 2)) + " |")
            continue
        summary = res["summary"]
        rss = "n/a" if res.get("peak_rss_mb") is None else \
            f"{res['peak_rss_mb']:.0f} (+{res.get('rss_increase_mb') or 0:.0f})"
        if res.get("peak_gpu_mb") is not None:
            rss += f", GPU {res['peak_gpu_mb']:.0f}"
        if name in ("interactive-seeds", "interactive-finetune"):
            train_time = f"{_fmt_seconds(res.get('train_seconds'))} (WeakSeg's)"
        elif name == "growcut":
            train_time = "none"
        else:
            train_time = f"{_fmt_seconds(res.get('train_seconds'))} ({res.get('train_iterations')} it"
            if res.get("prepare_seconds") is not None:
                train_time += f", prep {_fmt_seconds(res['prepare_seconds'])}"
            train_time += ")"
        if name in TEST_SEED_METHODS:
            annotated = f"{100 * (res.get('test_seed_fraction') or 0):.2f} % (test)"
            if name != "growcut":
                annotated = f"{100 * res['annotated_fraction']:.2f} % + " + annotated
        else:
            annotated = f"{100 * res['annotated_fraction']:.2f} %"
        row = ([label] + [_fmt_stat(summary["classes"][c]["dice"]) for c in classes]
               + [_fmt_stat(summary["mean"]["dice"]), _fmt_stat(summary["mean"]["hd95_mm"], 1), train_time,
                  _fmt_seconds(res.get("predict_seconds_per_volume")), rss, annotated])
        lines.append("| " + " | ".join(row) + " |")
    lines.append("")
    dice = {n: r.get("mean_dice") for n, r in methods.items() if r.get("mean_dice") is not None}
    if "weakseg" in dice and "full" in dice and dice["full"] > 0:
        lines.append(f"- WeakSeg reaches **{100 * dice['weakseg'] / dice['full']:.1f} %** of the fully "
                     f"supervised upper bound's mean Dice ({dice['weakseg']:.3f} vs {dice['full']:.3f}), with "
                     f"{100 * report['annotated_fraction']:.2f} % of the voxels annotated.")
    comparisons = report.get("comparisons") or paired_comparisons(methods, report.get("split", {}).get(
        "test_case_groups"))

    def versus(name: str) -> str:
        paired = comparisons.get(f"weakseg-vs-{name}")
        if paired is None:
            return f": {dice['weakseg'] - dice[name]:+.3f} mean Dice"
        return f", mean Dice paired over the test volumes: {describe_paired_difference(paired)}"

    if "weakseg" in dice and "pce" in dice:
        lines.append(f"- WeakSeg vs plain pCE{versus('pce')}.")
    if "weakseg" in dice and "naive" in dice:
        lines.append(f"- WeakSeg vs naive training (missing classes as background){versus('naive')}.")
    if "growcut" in dice:
        for name in ("weakseg", "interactive-seeds", "interactive-finetune"):
            if name in dice:
                what = ("without the test volumes' scribbles" if name == "weakseg"
                        else "with the same test scribbles")
                lines.append(f"- {METHOD_LABELS[name]} vs Slicer Grow-from-seeds ({what}): "
                             f"{dice[name] - dice['growcut']:+.3f} mean Dice.")
    sweep = methods.get("interactive-seeds", {}).get("prior_weight_sweep")
    if sweep:
        values = ", ".join(f"{p['prior_weight']:g}: {p['mean_dice']:.3f}" for p in sweep)
        lines.append(f"- Seeded random walker, other prior weights (reported, not used for the headline "
                     f"{methods['interactive-seeds']['prior_weight']:g}): {values}.")
    lines += ["", "Peak RSS: sampled during each method; (+Δ) is its increase over the RSS when the method "
              "started (process-wide peak in bench.json). Train time is the trainer's clock, data "
              "preparation (prep: normalisation, resampling, scribble propagation) included, as the budget "
              "counts it.", ""]
    return "\n".join(lines)


def plot_dice_vs_time(report: dict, path: str | os.PathLike) -> Path:
    """Mean test Dice against training time per method (GrowCut: no training, a horizontal line)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = report["methods"]
    longest = max([p.get("seconds") or 0.0 for r in methods.values() for p in r.get("curve", [])] + [0.0])
    unit, per = ("min", 60.0) if longest >= 120 else ("s", 1.0)
    fig, ax = plt.subplots(figsize=(8.5, 5.2))
    xmax = 1.0
    for name in TRAINED_METHODS:
        res = methods.get(name, {})
        curve = [p for p in res.get("curve", []) if p.get("mean_dice") is not None
                 and not math.isnan(p["mean_dice"])]
        if not curve:
            continue
        color, marker = _STYLE[name]
        xs = [p["seconds"] / per for p in curve]
        ax.plot(xs, [p["mean_dice"] for p in curve], marker=marker, color=color, lw=2,
                label=f"{res['label']}: {curve[-1]['mean_dice']:.3f}")
        xmax = max(xmax, max(xs))
    for name in ("interactive-seeds", "interactive-finetune"):
        res = methods.get(name, {})
        if res.get("mean_dice") is None or res.get("train_seconds") is None:
            continue
        color, marker = _STYLE[name]
        per_volume = res["predict_seconds_per_volume"]
        ax.plot([res["train_seconds"] / per], [res["mean_dice"]], marker=marker, color=color, ms=14,
                ls="none", label=f"{res['label']}: {res['mean_dice']:.3f} (+{per_volume:.1f} s/volume)")
    res = methods.get("growcut", {})
    if res.get("mean_dice") is not None:
        color, marker = _STYLE["growcut"]
        ax.axhline(res["mean_dice"], color=color, ls="--", lw=1.5,
                   label=f"{res['label']} on test scribbles (no training): {res['mean_dice']:.3f} "
                         f"({res['predict_seconds_per_volume']:.1f} s/volume)")
    ax.set_xlim(0, xmax * 1.05)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(f"training time ({unit}, data preparation included)")
    ax.set_ylabel("mean foreground Dice on the test volumes")
    ax.grid(alpha=0.3)
    env = report["environment"]
    ax.set_title(f"{report['dataset']} — {report['annotation']}: {report['n_train']} training / "
                 f"{report['n_test']} test volumes (split by patient)\n{env['device']}", fontsize=10)
    # Below the axes, so it never hides a curve.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=2, frameon=False)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------- CLI
def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``bench`` subcommand to the ``weakseg`` parser."""
    p = subparsers.add_parser(
        "bench", help="benchmark on a dataset with ground truth: WeakSeg vs plain pCE vs full supervision vs "
                      "Slicer's Grow-from-seeds (+ interactive modes); writes bench.json, bench.md, a plot",
        description="Train and evaluate side by side, on one split by patient and one budget per method. "
                    "See benchmarks/README.md for the ACDC and LA commands.")
    p.add_argument("--dataset", required=True, help="dataset folder (dataset.json, ACDC or LA folder)")
    p.add_argument("--annotation", required=True, choices=ANNOTATIONS,
                   help="real-scribbles (the dataset's own) or simulated from the ground truth")
    p.add_argument("--drop-rate", type=float, default=0.5,
                   help="partial: probability of dropping a class (0.5)")
    p.add_argument("--labelled", type=int, default=4, help="semi: training volumes with full masks (4)")
    p.add_argument("--slice-fraction", type=float, default=1.0,
                   help="simulated scribbles: fraction of the slices drawn (1.0 = every slice, as ACDC)")
    p.add_argument("--per-slice", action="store_true",
                   help="boxes / tags+sizes: one box (tag) per 2D component on each z slice, as drawn on the "
                        "slices of a 2D dataset such as ACDC (default: 3D boxes, volume tags)")
    split = p.add_argument_group("split by patient (Case.group), seeded")
    split.add_argument("--test-fraction", type=float, default=0.25,
                       help="fraction of patients held out (0.25)")
    split.add_argument("--test-groups", type=int, default=None,
                       help="number of test patients (wins over the fraction)")
    split.add_argument("--train-groups", type=int, default=None,
                       help="number of training patients (default: all the others)")
    split.add_argument("--split", default=None, help='JSON file {"train": [groups], "test": [groups]}')
    split.add_argument("--max-cases", type=int, default=None,
                       help="at most N training and N test volumes (smoke runs)")
    budget = p.add_argument_group("budget per trained method")
    budget.add_argument("--minutes", type=float, default=None, help="minutes of training per method")
    budget.add_argument("--iterations", type=int, default=None, help="iterations per method (reproducible)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:N or mps")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help="comma-separated: weakseg,pce,naive,full,growcut,interactive-seeds,interactive-finetune "
                        "('interactive' = both interactive modes); default: all but naive (partial labels only)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the simulations and training (0)")
    p.add_argument("--curve-fractions", default="0.25,0.5,0.75",
                   help="budget fractions at which weights are snapshotted for the Dice-vs-time plot")
    p.add_argument("--finetune-iterations", type=int, default=30, help="interactive-finetune iterations (30)")
    p.add_argument("--finetune-lr", type=float, default=1e-3,
                   help="interactive-finetune learning rate (1e-3)")
    p.add_argument("--prior-weight", type=float, default=0.03,
                   help="interactive-seeds: weight of the network prior in the random walker (0.03)")
    p.add_argument("--prior-weight-sweep", default="",
                   help="interactive-seeds: extra prior weights evaluated and reported beside the headline "
                        "(e.g. 0.003,0.01,0.1); never used to pick the headline number")
    p.add_argument("--growcut-distance-penalty", type=float, default=0.0,
                   help="Grow-from-seeds 'seed locality' (0, Slicer's default)")
    p.add_argument("--mode", default="standard", help="learning mode of the weakseg method (standard)")
    p.add_argument("--largest-component", action="store_true",
                   help="post-process every trained method's predictions: largest component per class")
    p.add_argument("--config", default=None,
                   help="JSON file with extra TrainConfig options for the trained methods")
    p.add_argument("--out", required=True, help="output folder (bench.json, bench.md, dice_vs_time.png)")
    p.add_argument("--overwrite", action="store_true", help="replace the outputs of an earlier run in --out")
    p.set_defaults(func=run_bench_cli)
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    split = None
    if args.split:
        path = Path(args.split)
        if not path.exists():
            raise FileNotFoundError(f"Split file '{path}' does not exist.")
        split = json.loads(path.read_text())
    train_options = {}
    if args.config:
        from .training import TrainConfig
        from .training.config import read_config_file

        train_options = read_config_file(args.config)
        # Validate with a readable error; mode_options belong to the --mode given unless the file names one.
        TrainConfig.from_dict({"mode": args.mode, **train_options})
        for key in ("minutes", "iterations", "device", "seed", "objective", "mode", "init_model"):
            train_options.pop(key, None)
    fractions = [float(f) for f in re.split(r"[,\s]+", args.curve_fractions) if f]
    return BenchConfig(
        dataset=str(args.dataset), annotation=args.annotation, methods=expand_methods(args.methods),
        minutes=args.minutes, iterations=args.iterations, device=args.device, seed=args.seed,
        test_fraction=args.test_fraction, train_groups=args.train_groups, test_groups=args.test_groups,
        split=split, max_cases=args.max_cases, drop_rate=args.drop_rate, labelled=args.labelled,
        slice_fraction=args.slice_fraction, per_slice=args.per_slice, curve_fractions=fractions,
        finetune_iterations=args.finetune_iterations, finetune_learning_rate=args.finetune_lr,
        prior_weight=args.prior_weight,
        prior_weight_sweep=[float(g) for g in re.split(r"[,\s]+", args.prior_weight_sweep) if g],
        growcut_distance_penalty=args.growcut_distance_penalty,
        mode=args.mode, train_options=train_options, largest_component=args.largest_component)


def run_bench_cli(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    report = run_bench(config, args.out, overwrite=args.overwrite)
    out = Path(args.out)
    for name, res in report["methods"].items():
        dice = res.get("mean_dice")
        status = f"mean Dice {dice:.3f}" if dice is not None else f"{res['status']} ({res.get('reason', '')})"
        print(f"{METHOD_LABELS[name]:<42} {status}")
    print(f"Benchmark written to {out / 'bench.md'}, {out / 'bench.json'} and {out / 'dice_vs_time.png'}.")
    return 0
