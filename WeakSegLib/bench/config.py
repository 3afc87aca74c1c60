"""What defines a benchmark run: the annotation, the methods, the budget, the split and the methods' options."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from WeakSegLib.inference.postprocessing import ComponentRule
from WeakSegLib.inference.strokes import STROKE_AGREEMENT, STROKE_PRIOR_WEIGHT, TRUSTED_PRIOR_WEIGHT

ANNOTATIONS = ("real-scribbles", "scribbles", "points", "boxes", "tags+sizes", "partial", "semi")
METHODS = ("weakseg", "weakseg-offsets", "pce", "naive", "full", "growcut", "interactive-seeds",
           "interactive-finetune", "interactive-geodesic")
METHOD_ALIASES = {"interactive": ("interactive-seeds", "interactive-finetune")}
DEFAULT_METHODS = ("weakseg", "pce", "full", "growcut", "interactive-seeds", "interactive-finetune")
TRAINED_METHODS = ("weakseg", "pce", "naive", "full")
TEST_SEED_METHODS = ("growcut", "interactive-seeds", "interactive-finetune", "interactive-geodesic")
UNTRAINED_METHODS = ("growcut", "interactive-geodesic")   # on the test seeds alone, no model
METHOD_LABELS = {
    "weakseg": "WeakSeg",
    "weakseg-offsets": "WeakSeg + class offsets chosen on other volumes",
    "pce": "pCE (nnU-Net ignore label)",
    "naive": "Naive (missing classes = background)",
    "full": "Full supervision (upper bound)",
    "growcut": "Slicer Grow-from-seeds",
    "interactive-seeds": "WeakSeg + test scribbles (seeded RW)",
    "interactive-finetune": "WeakSeg + test scribbles (fine-tuned)",
    "interactive-geodesic": "WeakSeg without a model (stroke classifier + geodesic)",
}


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
    per_slice: bool = False                  # boxes / points / tags+sizes: per z slice (2D) instead of per volume
    points_per_object: int = 1               # points: clicks per object (per slice with per_slice)
    point_radius_mm: float = 0.0             # points: radius of each click's ball
    background_per_slice: bool = False       # points: one background click on each slice with foreground
    size_margin: float | None = None         # add each class's volume as a range of +/- this fraction (e.g. 0.2)
    with_scribbles: bool = False             # boxes / points / tags+sizes: add simulated scribbles (slice_fraction)
    # The methods.
    curve_fractions: list[float] = field(default_factory=lambda: [0.25, 0.5, 0.75])
    finetune_iterations: int = 30
    finetune_learning_rate: float = 1e-3
    prior_weight: float = STROKE_PRIOR_WEIGHT  # interactive-seeds: weight of the network prior (gamma)
    trusted_prior_weight: float | None = TRUSTED_PRIOR_WEIGHT  # ... gamma on slices where the network agrees
    stroke_agreement: float = STROKE_AGREEMENT   # ... with this fraction of their seeds (None: one gamma)
    prior_weight_sweep: list[float] = field(default_factory=list)  # extra gammas, reported beside the headline
    walker_beta: float = 130.0               # interactive-seeds: edge sensitivity (as the RW propagation)
    growcut_distance_penalty: float = 0.0    # Slicer's "seed locality"; 0 = Slicer's default
    mode: str = "standard"                   # learning mode of the weakseg method
    largest_component: bool | str | ComponentRule = False  # False, "class", "object" or a ComponentRule
    inside: list[str] = field(default_factory=list)  # "INNER:OUTER" classes (resolved when the dataset loads)
    model: str | None = None                 # a trained model folder as the weakseg method (no training)
    class_offsets: list[float] | None = None  # weakseg-offsets: per-class log-probability offsets
    class_offsets_source: str | None = None  # ... and where they were chosen (a calibrated model folder)
    train_options: dict = field(default_factory=dict)   # extra TrainConfig options for the trained methods

    def __post_init__(self) -> None:
        self.methods = expand_methods(self.methods)
        self.validate()

    def validate(self) -> None:
        if self.annotation not in ANNOTATIONS:
            raise ValueError(f"Unknown annotation '{self.annotation}'; choose one of "
                             f"{', '.join(ANNOTATIONS)}.")
        trained = set(self.methods) & {"pce", "full"}
        if self.model is None:   # the weakseg model the interactive methods start from is trained here
            trained |= set(self.methods) & {"weakseg", "interactive-seeds", "interactive-finetune"}
        if self.minutes is None and self.iterations is None and trained:
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
        if self.per_slice and self.annotation not in ("boxes", "points", "tags+sizes"):
            raise ValueError(f"per_slice applies to the 'boxes', 'points' and 'tags+sizes' annotations, not "
                             f"'{self.annotation}'; drop --per-slice or pick one of those.")
        if self.with_scribbles and self.annotation not in ("boxes", "points", "tags+sizes"):
            raise ValueError(f"with_scribbles adds simulated scribbles to 'boxes', 'points' or 'tags+sizes', not "
                             f"'{self.annotation}'; drop --with-scribbles or pick one of those.")
        if self.points_per_object < 1 or self.point_radius_mm < 0:
            raise ValueError(f"points_per_object must be >= 1 and point_radius_mm >= 0, got "
                             f"{self.points_per_object} and {self.point_radius_mm}.")
        if self.size_margin is not None and (not 0.0 <= self.size_margin < 1.0
                                             or self.annotation in ("real-scribbles", "semi")):
            raise ValueError(f"size_margin adds size ranges (a fraction in [0, 1)) to a simulated annotation "
                             f"(scribbles, points, boxes, partial; the ranges' width for tags+sizes), got "
                             f"{self.size_margin} with "
                             f"'{self.annotation}'.")
        if any(not 0.0 < f < 1.0 for f in self.curve_fractions):
            raise ValueError(f"curve_fractions are budget fractions in (0, 1), got {self.curve_fractions}.")
        if self.finetune_iterations < 1 or not self.finetune_learning_rate > 0:
            raise ValueError("finetune_iterations must be >= 1 and finetune_learning_rate > 0.")
        if not self.prior_weight > 0 or not self.walker_beta >= 0 or any(g <= 0 for g in self.prior_weight_sweep):
            raise ValueError(f"prior_weight must be > 0 and walker_beta >= 0, got {self.prior_weight} and "
                             f"{self.walker_beta}.")
        if (self.trusted_prior_weight is not None and not self.trusted_prior_weight > 0) or \
                not 0.0 < self.stroke_agreement <= 1.0:
            raise ValueError(f"trusted_prior_weight must be > 0 (or None) and stroke_agreement in (0, 1], got "
                             f"{self.trusted_prior_weight} and {self.stroke_agreement}.")
        if self.split is not None and (set(self.split) != {"train", "test"}
                                       or set(self.split["train"]) & set(self.split["test"])):
            raise ValueError("split must be {'train': [groups], 'test': [groups]} with no group in both.")
        if ("weakseg-offsets" in self.methods) != (self.class_offsets is not None):
            raise ValueError("The weakseg-offsets method and class offsets go together: give --class-offsets "
                             "(a calibrated model folder) with --methods weakseg,weakseg-offsets,..., or neither.")
        if self.class_offsets is not None and not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                for v in self.class_offsets):
            raise ValueError(f"class_offsets must be finite numbers, got {self.class_offsets}.")
        needs_model = [m for m in ("interactive-seeds", "interactive-finetune", "weakseg-offsets")
                       if m in self.methods]
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
