"""The learning-mode interface, option checking, and the helpers the modes share.

A mode is a plug-in into the trainer's hooks (the loop itself never changes).  It may add loss
terms on labelled patch batches (``extra_terms``), terms on unlabelled data (``unlabelled_terms``,
called every step), update state after each optimiser step (``after_step``, e.g. a mean teacher's
EMA or a relabeling round), act every epoch (``on_epoch_end``) or after the loop (``finish``).
Every state a mode keeps is saved in the checkpoint (``state_dict``: tensors and numbers only),
so a resumed run continues exactly; all randomness comes from the sampler's seeded generator.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

import torch

from WeakSegLib.data.annotation import UNKNOWN
from WeakSegLib.inference.predictor import Predictor
from WeakSegLib.networks.precision import autocast_forward
from WeakSegLib.training import semi
from WeakSegLib.training.data import BatchSampler

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ helpers
def plain_network(trainer) -> torch.nn.Module:
    """The network without its DDP wrapper (for passes that need no gradient synchronisation)."""
    dist = getattr(trainer, "dist", None)
    return dist.unwrap(trainer.network) if dist is not None else trainer.network


def run_network(trainer, network: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``network(x)`` (B, K, *spatial) under the precision policy of the trainer's device, as float32."""
    return autocast_forward(network, x, trainer.device, trainer.config.bf16)


def budget_fraction(trainer) -> float:
    """Fraction of the training budget spent (for ramp-ups), in [0, 1]."""
    return min(max(float(trainer.fraction_done()), 0.0), 1.0)


def progress_after_step(trainer) -> float:
    """Budget fraction once the current step is counted (``after_step`` runs before ``iteration += 1``)."""
    cfg = trainer.config
    value = (trainer.iteration + 1) / cfg.iterations if cfg.iterations else trainer.fraction_done()
    dist = getattr(trainer, "dist", None)
    return dist.same(value) if dist is not None else value


def stack_volume(logits: torch.Tensor, batch) -> torch.Tensor:
    """Volume batch logits as (1, K, *spatial): 2D slices (z, K, y, x) are stacked back into a volume."""
    return logits.permute(1, 0, 2, 3).unsqueeze(0) if batch.stack_slices else logits


def grid_logits(trainer, image: torch.Tensor, network: torch.nn.Module | None = None) -> torch.Tensor:
    """Sliding-window logits (K, z, y, x) of a whole (C, z, y, x) image on the network grid."""
    net = plain_network(trainer) if network is None else network
    return Predictor(net, trainer.plan, trainer.device, trainer.config.bf16).logits(image)


def grid_probabilities(trainer, image: torch.Tensor) -> torch.Tensor:
    """Softmax of :func:`grid_logits` (K, z, y, x), on the CPU."""
    return torch.softmax(grid_logits(trainer, image), 0).cpu()


def rebuild_sampler(trainer) -> None:
    """A new sampler over ``trainer.prepared`` (labels changed) that continues the old one's random stream."""
    old = trainer.sampler
    new = BatchSampler(old.cases, old.plan, old.augment, 0, old.oversample)
    new.generator.set_state(old.generator.get_state())
    new.unlabelled_share = old.unlabelled_share
    trainer.sampler = new
    with contextlib.suppress(Exception):        # cosmetic: the objective's term list in the summary
        trainer.term_names = trainer.objective.describe(trainer.prepared)


# ------------------------------------------------------------------------------------ options
def check_option(mode: str, key: str, default: Any, value: Any, choices: tuple | None) -> Any:
    """``value`` of option ``key`` as the type of its ``default`` (TypeError / ValueError if it is not one)."""
    where = f"Mode '{mode}', option '{key}'"
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise TypeError(f"{where} must be true or false, got {value!r}.")
        return value
    if isinstance(default, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{where} must be an integer, got {value!r}.")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise TypeError(f"{where} must be a finite number, got {value!r}.")
        return float(value)
    if isinstance(default, str):
        if choices is not None and value not in choices:
            raise ValueError(f"{where} must be one of {list(choices)}, got {value!r}.")
        if not isinstance(value, str):
            raise TypeError(f"{where} must be a string, got {value!r}.")
        return value
    return value


class TrainingMode:
    """``standard``: the objective assembled from the annotations present, nothing added.

    Paper: WeakSeg's objective (see :mod:`WeakSegLib.training.objective`).  Knobs: none.
    """

    name = "standard"
    family = "weak supervision"
    paper = "WeakSeg objective assembled from the annotations present"
    summary = "The annotation-driven objective alone (scribbles, boxes, tags, sizes, partial labels...)."
    defaults: dict[str, Any] = {}
    choices: dict[str, tuple] = {}

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - set(self.defaults))
        if unknown:
            valid = ", ".join(sorted(self.defaults)) or "none"
            raise ValueError(f"Mode '{self.name}' has no option(s) {unknown}; its options are: {valid}.")
        self.options: dict[str, Any] = {}
        for key, default in self.defaults.items():
            value = check_option(self.name, key, default, options.get(key, default), self.choices.get(key))
            self.options[key] = value
            setattr(self, key, value)
        self.check_options()

    def check_options(self) -> None:
        """Range checks of the options (raise ValueError naming the option and the valid range)."""

    def _require(self, ok: bool, key: str, what: str) -> None:
        if not ok:
            raise ValueError(f"Mode '{self.name}', option '{key}' must be {what}, got {self.options[key]!r}.")

    # ------------------------------------------------------------------ hooks
    def setup(self, trainer) -> None:
        pass

    def extra_terms(self, trainer, logits, batch) -> dict:
        return {}

    def unlabelled_terms(self, trainer) -> dict:
        return {}

    def joint_batch(self, trainer):
        """A batch of unannotated patches to forward together with the labelled patch batch (one
        batched pass), or None.  A mode that returns one gets :meth:`joint_terms` instead of
        :meth:`extra_terms` and :meth:`unlabelled_terms` for that step."""
        return None

    def joint_terms(self, trainer, logits, batch, joint, joint_logits) -> dict:
        """Terms of a step whose forward pass also held :meth:`joint_batch`'s patches (``joint_logits``)."""
        raise NotImplementedError

    def after_step(self, trainer) -> None:
        pass

    def on_epoch_end(self, trainer) -> None:
        pass

    def finish(self, trainer) -> None:
        pass

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


# ------------------------------------------------------------------------------------ semi-supervised
class SemiSupervisedMode(TrainingMode):
    """Common knobs and perturbations of the semi-supervised modes.

    Semi-supervised modes act on the patches of unannotated volumes (``annotation=None``) and, with
    ``on_labelled`` (default), also on the labelled patch batches — in weak supervision most voxels
    of an annotated volume are unlabelled too.  Unlabelled patches come already augmented by the
    sampler (flips, small rotation and scaling, intensity); modes add their own perturbations on
    top (intensity jitter and noise, random flips that are undone on the logits).
    """

    family = "semi-supervised"
    defaults: dict[str, Any] = {"weight": 1.0, "rampup": 0.3, "noise": 0.1, "on_labelled": True, "batch_share": 0.0}

    def check_options(self) -> None:
        self._require(self.weight >= 0, "weight", ">= 0")
        self._require(0 <= self.rampup <= 1, "rampup", "a budget fraction in [0, 1]")
        if "noise" in self.options:
            self._require(self.noise >= 0, "noise", ">= 0")
        if "batch_share" in self.options:
            self._require(0 <= self.batch_share < 1, "batch_share", "in [0, 1)")

    def setup(self, trainer) -> None:
        # batch_share > 0: the planned batch is split between annotated and unannotated patches (as in
        # Yu et al. 2019), so a step costs about what a labelled-only step costs, plus the targets' passes.
        trainer.sampler.unlabelled_share = float(self.options.get("batch_share", 0.0))
        if not trainer.sampler.unlabelled_cases and not self.on_labelled:
            logger.warning("Mode '%s': no unannotated volume and on_labelled=false: the mode adds nothing.",
                           self.name)

    def ramp(self, trainer) -> float:
        return self.weight * semi.sigmoid_rampup(budget_fraction(trainer), self.rampup)

    def perturb(self, trainer, x: torch.Tensor) -> torch.Tensor:
        return semi.intensity_perturbation(x, trainer.sampler.generator, self.noise, self.noise, self.noise)

    def flipped_logits(self, trainer, network, x: torch.Tensor, grad: bool) -> torch.Tensor:
        """Logits of a perturbed, randomly flipped view of ``x``, flipped back (aligned with ``x``)."""
        dims = semi.random_flip_dims(trainer.sampler.generator, x.ndim)
        view = self.perturb(trainer, x)
        if dims:
            view = torch.flip(view, dims)
        ctx = contextlib.nullcontext() if grad else torch.no_grad()
        with ctx:
            out = trainer.forward(view) if grad else run_network(trainer, network, view)
        return torch.flip(out, dims) if dims else out

    @staticmethod
    @torch.no_grad()
    def fixed_logits(trainer, x: torch.Tensor) -> torch.Tensor:
        """Logits of ``x`` by the current network, without gradient (a target)."""
        return run_network(trainer, plain_network(trainer), x)

    @staticmethod
    def unknown_mask(batch) -> torch.Tensor | None:
        return None if batch.labels is None else batch.labels == UNKNOWN

    @staticmethod
    def unlabelled(trainer):
        batch = trainer.sampler.unlabelled_batch()
        return None if batch is None else batch.to(trainer.device)



class PairedTermMode(SemiSupervisedMode):
    """A semi-supervised mode with one loss on labelled patches and its twin on unannotated ones.

    A subclass gives ``term`` and :meth:`labelled_loss` / :meth:`unlabelled_loss`; the mode then
    adds ``term`` on labelled patch batches (with ``on_labelled``; :meth:`labelled_scope` says on
    which voxels) and ``term + "_unlabelled"`` on unannotated patches, both weighted by :meth:`ramp`.
    """

    term = ""

    def labelled_scope(self, batch) -> tuple[bool, torch.Tensor | None]:
        """``(applies, scope)`` of the labelled term: every voxel (scope None) unless a subclass narrows it."""
        return True, None

    def labelled_loss(self, trainer, logits: torch.Tensor, batch, scope: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    def unlabelled_loss(self, trainer, batch) -> torch.Tensor:
        raise NotImplementedError

    def extra_terms(self, trainer, logits, batch) -> dict:
        if not self.on_labelled:
            return {}
        applies, scope = self.labelled_scope(batch)
        if not applies:
            return {}
        return {self.term: self.ramp(trainer) * self.labelled_loss(trainer, logits, batch, scope)}

    def unlabelled_terms(self, trainer) -> dict:
        batch = self.unlabelled(trainer)
        if batch is None:
            return {}
        return {f"{self.term}_unlabelled": self.ramp(trainer) * self.unlabelled_loss(trainer, batch)}


class UnknownVoxelMode(PairedTermMode):
    """A semi-supervised mode whose labelled term acts on the unannotated voxels of labelled patches only."""

    def labelled_scope(self, batch) -> tuple[bool, torch.Tensor | None]:
        scope = self.unknown_mask(batch)
        return scope is None or bool(scope.any()), scope
