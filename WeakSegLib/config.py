"""The typed training configuration (``TrainConfig``, ``LossWeights``), saved as JSON next to every model.

Every value is type-checked where it enters (a config file, a job file, ``model.json``, a keyword):
:func:`check_option_types` gives one line naming the source, the key and what was expected.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from WeakSegLib.utils import describe_value, expect, is_integer, is_number

DEFAULT_MINUTES = 2.0   # the training budget when neither minutes nor iterations is given
MIN_EXTENT = 16         # voxels along the largest in-plane axis: the network halves it twice (three levels)


@dataclass
class LossWeights:
    """Weights of the objective terms; a term is only used when the annotations feed it."""

    partial_ce: float = 1.0          # scribbles / points (pCE)
    partial_dice: float = 0.5        # Dice on annotated voxels
    propagated: float = 0.5          # CE on random-walker labels propagated from scribbles
    smile: float = 1.0               # partial labels (complete masks of some classes)
    full: float = 1.0                # Dice + CE on fully annotated volumes
    size: float = 10.0               # size ranges (mL); relative violation, see losses.relative_bound_loss
    tags: float = 10.0               # present / absent
    size_proposal: float = 1.0       # size ranges without voxel labels: CE on the mask projected on the ranges
    box_emptiness: float = 1.0
    box_tightness: float = 0.1
    box_fill: float = 10.0           # box fill fractions, relative violation as sizes (TrainConfig.box_fill_bounds)
    box_region: float = 0.3          # two-phase (Chan-Vese) image energy inside each box (where the box terms are on)
    box_mil: float = 0.0             # tightness as MIL: every line / plane of a box holds a confident voxel (off)
    class_ratio: float = 0.1         # dataset-level class-ratio prior (KL)
    moments: float = 0.5             # centroid ranges
    entropy: float = 0.0             # entropy minimisation on unlabelled voxels (off by default)
    crf: float = 3.0                 # pairwise CRF loss: boundaries on intensity edges (scribble / point cases)
    non_adjacency: float = 0.0       # forbidden class contacts (needs TrainConfig.forbidden_adjacency)


@dataclass
class TrainConfig:
    """Everything that defines a training run (see ``weakseg train --help``)."""

    # Budget: time is the main knob; iterations make runs reproducible.  The one budget rule of every door
    # (Python, CLI, worker, bench): minutes alone = a time limit; iterations alone = exactly that many
    # iterations, no time limit; both = whichever comes first; neither = DEFAULT_MINUTES.
    minutes: float | None = None
    iterations: int | None = None
    device: str = "auto"
    seed: int = 0
    # Planning overrides (None = planned from the data).
    dims: int | None = None                  # 2 or 3
    patch_size: list[int] | None = None
    batch_size: int | None = None
    base_filters: int | None = None
    target_spacing: list[float] | None = None  # (x, y, z) mm
    anisotropy_threshold: float = 3.0        # 2D when the slice spacing exceeds in-plane spacing by this factor
    # Optimisation.
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.03
    # Constraints.
    constraint_method: str = "penalty"       # "penalty" | "log_barrier"
    barrier_t0: float = 5.0
    barrier_factor: float = 1.1
    barrier_t_max: float = 100.0
    tag_min_size_voxels: float = 1.0
    forbidden_adjacency: list[list[int]] = field(default_factory=list)
    # Boxes: voxels outside every box are background labels when every foreground class of the volume
    # is boxed or tagged absent (exact, and dense: patch batches then train on them); bounds (lo, hi)
    # on the fraction of each box its class fills (None = no bound).  The two go together: background
    # labels alone teach an empty prediction, the fill bound balances them (docs/benchmarks.md, boxes).
    # Set None for thin or curved objects that fill less of their box.
    box_background: bool = True
    box_fill_bounds: list[float] | None = field(default_factory=lambda: [0.15, 1.0])
    # Box labels: "ellipse" = the inscribed ellipse of each box labels its class, with an unknown band of
    # box_prior_margin (normalised radius) at its rim, where nothing was drawn (training.box_prior); "none" = off;
    # "auto" = per-slice 2D boxes get their ellipses (margin box_prior_margin) and the box constraint terms
    # off (they collapse training on small 2D boxes); 3D boxes get an ellipsoid core (margin
    # box_prior_margin_3d) and keep the box terms. Margins chosen on validation patients: 0.1 on ACDC's
    # per-slice boxes, 0.5 on the left atrium's 3D boxes (docs/benchmarks.md, boxes).
    box_prior: str = "auto"
    box_prior_margin: float = 0.1
    box_prior_margin_3d: float = 0.5
    # Size ranges set the network's initial class proportions: the output layer's bias starts at the log
    # of each class's expected fraction of the volume (the ranges' midpoints), so the size term does not
    # first drive every structure to zero from a uniform start (docs/benchmarks.md, clicks).
    size_prior_init: bool = True
    # Scribble propagation (random walker), down-weighted pseudo-labels.
    propagate_scribbles: bool = True
    propagation_beta: float = 130.0
    propagation_threshold: float = 0.8
    # One threshold per class (background first) instead; e.g. a stricter one for a thin structure
    # scribbled along its middle, whose walked labels spill over its borders.
    propagation_class_thresholds: list[float] | None = None
    # Pairwise CRF loss (LossWeights.crf): window radius in voxels (None = 2 in 2D, 1 in 3D), intensity
    # scale in normalised units (z-score for MR), spatial scale in mm.
    crf_radius: int | None = None
    crf_sigma_intensity: float = 0.3
    crf_sigma_spatial_mm: float = 3.0
    # Partial labels (complete masks of some classes): "marginal" = marginal CE (background and missing
    # classes merged) + Dice on the complete classes (Shi et al. 2021; Fang & Yan 2020), see
    # WeakSegLib.losses.marginal_dice_ce_loss; "smile" = SMILE's per-class binary terms (Petit et al. 2018)
    # on the softmax.  Marginal is the default (docs/benchmarks.md, partial labels).
    partial_label_loss: str = "marginal"
    weights: LossWeights = field(default_factory=LossWeights)
    # Augmentation.
    augment: bool = True
    # Objective shortcuts for baselines: "auto" assembles from the annotations; "pce" = plain partial CE;
    # "full" = Dice + CE on ground truth (upper bound, needs ground truth).
    objective: str = "auto"
    # Learning mode plug-in (see WeakSegLib.training.modes); "standard" = the objective alone.
    mode: str = "standard"
    mode_options: dict[str, Any] = field(default_factory=dict)
    # Bookkeeping.
    checkpoint_every: int = 50               # iterations
    log_every: int = 10
    validate_every: int = 0                  # iterations; 0 = only at the end (needs validation cases)
    init_model: str | None = None            # start from this model folder's weights
    num_threads: int | None = None           # CPU threads (None = OMP_NUM_THREADS, else the cores free at start)
    bf16: bool | None = None                 # bfloat16 autocast: None/True = where native (CUDA, CPUs with
                                             # AVX512-BF16/AMX); False = never (networks.precision.use_bf16)

    def __post_init__(self) -> None:
        if self.minutes is None and self.iterations is None:
            self.minutes = DEFAULT_MINUTES
        if isinstance(self.weights, dict):
            self.weights = LossWeights(**self.weights)
        self.validate()

    def validate(self) -> None:
        check_option_types(self.to_dict(), "Training option")
        if self.minutes is not None and self.minutes <= 0:
            raise ValueError(f"minutes must be > 0, got {self.minutes}.")
        if self.iterations is not None and self.iterations < 1:
            raise ValueError(f"iterations must be >= 1, got {self.iterations}.")
        if self.dims not in (None, 2, 3):
            raise ValueError(f"dims must be 2, 3 or None (planned), got {self.dims}.")
        if self.constraint_method not in ("penalty", "log_barrier"):
            raise ValueError(f"constraint_method must be 'penalty' or 'log_barrier', got '{self.constraint_method}'.")
        if self.partial_label_loss not in ("smile", "marginal"):
            raise ValueError(f"partial_label_loss must be 'smile' or 'marginal', got '{self.partial_label_loss}'.")
        if self.objective not in ("auto", "pce", "full"):
            raise ValueError(f"objective must be 'auto', 'pce' or 'full', got '{self.objective}'.")
        if self.crf_radius is not None and self.crf_radius < 1:
            raise ValueError(f"crf_radius must be >= 1 voxel (or null for the default), got {self.crf_radius}.")
        if self.crf_sigma_intensity <= 0 or self.crf_sigma_spatial_mm <= 0:
            raise ValueError("crf_sigma_intensity and crf_sigma_spatial_mm must be > 0, got "
                             f"{self.crf_sigma_intensity} and {self.crf_sigma_spatial_mm}.")
        if self.box_fill_bounds is not None:
            b = self.box_fill_bounds
            if len(b) != 2 or not 0.0 <= float(b[0]) <= float(b[1]) <= 1.0:
                raise ValueError(f"box_fill_bounds must be [lo, hi] with 0 <= lo <= hi <= 1 (fractions of each "
                                 f"box its class fills), got {b}.")
        if self.box_prior not in ("auto", "ellipse", "none") or not (
                0.0 <= float(self.box_prior_margin) < 1.0 and 0.0 <= float(self.box_prior_margin_3d) < 1.0):
            raise ValueError(f"box_prior must be 'auto', 'ellipse' or 'none' and box_prior_margin and "
                             f"box_prior_margin_3d in [0, 1), got '{self.box_prior}', {self.box_prior_margin} "
                             f"and {self.box_prior_margin_3d}.")
        thresholds = [self.propagation_threshold] + list(self.propagation_class_thresholds or [])
        if not all(0.0 < float(t) <= 1.0 for t in thresholds):
            raise ValueError(f"propagation_threshold and propagation_class_thresholds must lie in (0, 1], got "
                             f"{self.propagation_threshold} and {self.propagation_class_thresholds}.")
        if self.learning_rate <= 0:
            raise ValueError(f"learning_rate must be > 0, got {self.learning_rate}.")
        self._check_ranges()
        from WeakSegLib.training.modes import get_mode  # fail on a bad mode or mode option before any data is loaded

        get_mode(self.mode, self.mode_options)

    def _check_ranges(self) -> None:
        """Values of the right type but outside their range (the type is checked before)."""
        def at_least(name: str, low: float, value) -> None:
            if value is not None and value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}.")

        at_least("batch_size", 1, self.batch_size)
        at_least("base_filters", 1, self.base_filters)
        at_least("num_threads", 1, self.num_threads)
        at_least("log_every", 1, self.log_every)
        at_least("checkpoint_every", 0, self.checkpoint_every)
        at_least("validate_every", 0, self.validate_every)
        at_least("weight_decay", 0, self.weight_decay)
        at_least("anisotropy_threshold", 1, self.anisotropy_threshold)
        if self.patch_size is not None:
            if len(self.patch_size) not in (2, 3) or min(self.patch_size) < 1 or max(self.patch_size) < MIN_EXTENT:
                raise ValueError(f"patch_size must be 2 (2D: y, x) or 3 (3D: z, y, x) sizes in voxels, each "
                                 f">= 1 and the largest >= {MIN_EXTENT} (the network halves an axis at least twice), "
                                 f"got {self.patch_size}.")
            if self.dims is not None and len(self.patch_size) != self.dims:
                raise ValueError(f"patch_size has {len(self.patch_size)} entries but dims is {self.dims}.")
        if self.target_spacing is not None and (len(self.target_spacing) != 3 or min(self.target_spacing) <= 0):
            raise ValueError(f"target_spacing must be 3 positive spacings (x, y, z) in mm, got "
                             f"{self.target_spacing}.")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}.")
        for pair in self.forbidden_adjacency:
            if len(pair) != 2:
                raise ValueError(f"forbidden_adjacency holds pairs of class ids [a, b], got {pair}.")
        for name, value in asdict(self.weights).items():
            if value < 0:
                raise ValueError(f"weights.{name} must be >= 0 (0 switches the term off), got {value}.")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping, source: str = "Training options") -> TrainConfig:
        """A config from a mapping of options; ``source`` names where they come from in error messages
        (e.g. ``"Config file 'c.json'"``)."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{source} must be a JSON object of training options, got {describe_value(data)}.")
        check_option_types(data, source)
        data = dict(data)
        if isinstance(data.get("weights"), Mapping):
            data["weights"] = LossWeights(**data["weights"])
        try:
            return cls(**data)
        except ValueError as exc:
            if source == "Training options":
                raise
            raise ValueError(f"{source}: {exc}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> TrainConfig:
        return cls.from_dict(read_config_file(path), f"Config file '{path}'")

    @classmethod
    def from_layers(cls, *layers: Mapping[str, Any] | None) -> TrainConfig:
        """A config from option layers applied in order (e.g. a config file, then command-line flags).

        A layer holds only the options it gives.  The budget is one pair: a layer that gives ``minutes`` or
        ``iterations`` replaces both (the one it leaves out becomes "no limit"), so an iteration budget on
        the command line is never cut short by a time limit from a file or a default.
        """
        data: dict[str, Any] = {}
        for layer in layers:
            if not layer:
                continue
            layer = dict(layer)
            if "minutes" in layer or "iterations" in layer:
                data["minutes"] = layer.pop("minutes", None)
                data["iterations"] = layer.pop("iterations", None)
            data.update(layer)
        return cls.from_dict(data)


def read_config_file(path: str | Path) -> dict:
    """The options of a JSON config file, type-checked (ranges are checked when the config is built), with
    one clear error for a missing file, invalid JSON, JSON that is not an object, an unknown key or a value
    of the wrong type."""
    from WeakSegLib.utils import read_json_object

    name = f"Config file '{path}'"
    data = read_json_object(path, name)
    check_option_types(data, name)
    return data


# ------------------------------------------------------------------------------ type checks
_EXPECTED = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}


def _check_value(value, hint, where: str) -> None:
    """``value`` against the type hint ``hint`` (the hints of TrainConfig's fields)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return
        inner = [a for a in args if a is not type(None)]
        if len(inner) == 1:
            _check_value(value, inner[0], where)
            return
    if hint is Any:
        return
    if hint is bool:
        expect(isinstance(value, bool), where, "true or false", value)
    elif hint is int:
        expect(is_integer(value), where, "an integer", value)
    elif hint is float:
        expect(is_number(value), where, "a finite number", value)
    elif hint is str:
        expect(isinstance(value, str), where, "a string", value)
    elif origin is list:
        item = args[0] if args else Any
        expect(isinstance(value, (list, tuple)), where, f"a list of {_describe_hint(item)}", value)
        for i, v in enumerate(value):
            _check_value(v, item, f"{where}[{i}]")
    elif origin is dict:
        expect(isinstance(value, Mapping), where, "an object {...}", value)
    elif hint is LossWeights:
        if isinstance(value, LossWeights):
            return
        expect(isinstance(value, Mapping), where, "an object of loss weights, e.g. {\"size\": 10}", value)
        known = {f.name for f in dataclasses.fields(LossWeights)}
        for key, v in value.items():
            if key not in known:
                raise ValueError(f"{where}: Unknown loss weight '{key}'; known: {', '.join(sorted(known))}.")
            _check_value(v, float, f"{where[:-1]}.{key}'")


def _describe_hint(hint) -> str:
    if typing.get_origin(hint) is list:
        return "lists"
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(hint, "values")


def check_option_types(data: Mapping, source: str = "Training option") -> None:
    """Raise ``ValueError("<source>: '<key>' must be <type>, got <value>.")`` for the first unknown key or
    value of the wrong type in a mapping of :class:`TrainConfig` options."""
    hints = typing.get_type_hints(TrainConfig)
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    for key, value in data.items():
        if key not in known:
            close = difflib.get_close_matches(str(key), sorted(known), n=3)
            raise ValueError(f"{source}: Unknown training option '{key}'"
                             + (f" (did you mean {', '.join(close[:3])}?)" if close else "")
                             + "; see docs/training.md for the options.")
        _check_value(value, hints[key], f"{source}: '{key}'")

