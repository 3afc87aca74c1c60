"""Learning modes: plug-ins into the trainer's hooks (the loop itself never changes).

A mode may add loss terms on labelled patch batches (``extra_terms``), terms on unlabelled data
(``unlabelled_terms``, called every step), update state after each optimiser step
(``after_step``, e.g. a mean teacher's EMA or a relabeling round), act every epoch
(``on_epoch_end``) or after the loop (``finish``).  ``standard`` is the objective assembled from
the annotations alone; every other mode adds to it, so annotated volumes keep their terms.

=====================  =========================  ===========================================
mode                   family                     paper
=====================  =========================  ===========================================
standard               weak supervision           the annotation-driven objective alone
pi-model               semi-supervised            Laine & Aila, ICLR 2017
temporal-ensembling    semi-supervised            Laine & Aila, ICLR 2017
mean-teacher           semi-supervised            Tarvainen & Valpola, NeurIPS 2017
vat                    semi-supervised            Miyato et al., TPAMI 2019
entropy-min            semi-supervised            Grandvalet & Bengio, NeurIPS 2005
pseudo-label           semi-supervised            Lee, ICML-W 2013 (confidence threshold)
fixmatch               semi-supervised            Sohn et al., NeurIPS 2020
mixmatch               semi-supervised            Berthelot et al., NeurIPS 2019
source-free            domain adaptation          Bateson et al., MICCAI 2020
smiler                 partial labels             Petit et al., DLMIA 2018
cam                    image tags                 Zhou et al., CVPR 2016
box-rounds             boxes                      Khoreva et al., CVPR 2017
=====================  =========================  ===========================================

Options come from ``TrainConfig.mode_options`` (a dict, e.g. ``{"decay": 0.999}``); each mode's
docstring lists its knobs with their defaults, and an unknown option is refused with the list of
valid ones.  "Budget fraction" means the fraction of the training budget (iterations when given,
else time), so schedules adapt to any budget.  All randomness comes from the sampler's seeded
generator, and every state a mode keeps is saved in the checkpoint (tensors and numbers only), so
a resumed run continues exactly.

Semi-supervised modes act on the patches of unannotated volumes (``annotation=None``) and, with
``on_labelled`` (default), also on the labelled patch batches — in weak supervision most voxels
of an annotated volume are unlabelled too.  Unlabelled patches come already augmented by the
sampler (flips, small rotation and scaling, intensity); modes add their own perturbations on top
(intensity jitter and noise, random flips that are undone on the logits).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import math
from typing import Any

import torch
import torch.nn.functional as F

from .. import losses as L
from ..annotation import UNKNOWN
from . import semi

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------ helpers
def _plain_network(trainer) -> torch.nn.Module:
    """The network without its DDP wrapper (for passes that need no gradient synchronisation)."""
    dist = getattr(trainer, "dist", None)
    return dist.unwrap(trainer.network) if dist is not None else trainer.network


def _run(trainer, network: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``network(x)`` with the trainer's autocast policy (bf16 on CUDA), as float32."""
    device = trainer.device
    use_bf16 = device.type == "cuda" and trainer.config.bf16
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
        out = network(x)
    return out.float()


def _budget_fraction(trainer) -> float:
    """Fraction of the training budget spent (for ramp-ups), in [0, 1]."""
    return min(max(float(trainer.fraction_done()), 0.0), 1.0)


def _progress_after_step(trainer) -> float:
    """Budget fraction once the current step is counted (``after_step`` runs before ``iteration += 1``)."""
    cfg = trainer.config
    value = (trainer.iteration + 1) / cfg.iterations if cfg.iterations else trainer.fraction_done()
    dist = getattr(trainer, "dist", None)
    return dist.same(value) if dist is not None else value


def _randint(gen: torch.Generator, n: int) -> int:
    return int(torch.randint(0, max(int(n), 1), (), generator=gen))


def _stack_volume(logits: torch.Tensor, batch) -> torch.Tensor:
    """Volume batch logits as (1, K, *spatial): 2D slices (z, K, y, x) are stacked back into a volume."""
    return logits.permute(1, 0, 2, 3).unsqueeze(0) if batch.stack_slices else logits


@torch.no_grad()
def grid_logits(trainer, image: torch.Tensor, network: torch.nn.Module | None = None) -> torch.Tensor:
    """Sliding-window logits (K, z, y, x) of a whole (C, z, y, x) image on the network grid."""
    from monai.inferers import sliding_window_inference

    net = _plain_network(trainer) if network is None else network
    plan = trainer.plan
    was_training = net.training
    net.eval()
    x = image.to(trainer.device)

    def predictor(t: torch.Tensor) -> torch.Tensor:
        return _run(trainer, net, t)

    try:
        if plan.dims == 2:
            out = sliding_window_inference(x.permute(1, 0, 2, 3), plan.patch_size, 8, predictor, overlap=0.25,
                                           mode="gaussian")
            out = out.permute(1, 0, 2, 3)
        else:
            out = sliding_window_inference(x[None], plan.patch_size, 4, predictor, overlap=0.25, mode="gaussian")[0]
    finally:
        net.train(was_training)
    return out.float()


def rebuild_sampler(trainer) -> None:
    """A new sampler over ``trainer.prepared`` (labels changed) that continues the old one's random stream."""
    from .data import BatchSampler

    old = trainer.sampler
    new = BatchSampler(old.cases, old.plan, old.augment, 0, old.oversample)
    new.generator.set_state(old.generator.get_state())
    trainer.sampler = new
    with contextlib.suppress(Exception):        # cosmetic: the objective's term list in the summary
        trainer.term_names = trainer.objective.describe(trainer.prepared)


def _random_crop(sampler, case) -> tuple[torch.Tensor, tuple, list[int]]:
    """A random patch of ``case`` without spatial augmentation: ``(patch (C, *patch_size), index, valid sizes)``.

    ``index`` addresses the patch in the case's (z, y, x) grid (an int slice index first in 2D
    plans); ``valid`` are the sizes of the real (unpadded) part of the patch.
    """
    plan, gen = sampler.plan, sampler.generator
    img = case.image
    lead: tuple = ()
    spatial = img.shape[1:]
    if plan.dims == 2:
        lead = (_randint(gen, img.shape[1]),)
        spatial = img.shape[2:]
    index, valid = list(lead), []
    for n, p in zip(spatial, plan.patch_size):
        if n <= p:
            start, size = 0, n
        else:
            start, size = _randint(gen, n - p + 1), p
        index.append(slice(start, start + size))
        valid.append(size)
    crop = img[(slice(None), *index)]
    pad = []
    for n, p in zip(reversed(valid), reversed(plan.patch_size)):
        pad += [0, max(p - n, 0)]
    if any(pad):
        crop = F.pad(crop, pad)
    return crop, tuple(index), valid


# ------------------------------------------------------------------------------------ options
def _check_option(mode: str, key: str, default: Any, value: Any, choices: tuple | None) -> Any:
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
            value = _check_option(self.name, key, default, options.get(key, default), self.choices.get(key))
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
class _SemiSupervisedMode(TrainingMode):
    """Common knobs and perturbations of the semi-supervised modes."""

    family = "semi-supervised"
    defaults: dict[str, Any] = {"weight": 1.0, "rampup": 0.3, "noise": 0.1, "on_labelled": True}

    def check_options(self) -> None:
        self._require(self.weight >= 0, "weight", ">= 0")
        self._require(0 <= self.rampup <= 1, "rampup", "a budget fraction in [0, 1]")
        if "noise" in self.options:
            self._require(self.noise >= 0, "noise", ">= 0")

    def setup(self, trainer) -> None:
        if not trainer.sampler.unlabelled_cases and not self.on_labelled:
            logger.warning("Mode '%s': no unannotated volume and on_labelled=false: the mode adds nothing.",
                           self.name)

    def ramp(self, trainer) -> float:
        return self.weight * semi.sigmoid_rampup(_budget_fraction(trainer), self.rampup)

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
            out = trainer.forward(view) if grad else _run(trainer, network, view)
        return torch.flip(out, dims) if dims else out

    @staticmethod
    def unknown_mask(batch) -> torch.Tensor | None:
        return None if batch.labels is None else batch.labels == UNKNOWN

    @staticmethod
    def unlabelled(trainer):
        batch = trainer.sampler.unlabelled_batch()
        return None if batch is None else batch.to(trainer.device)


class PiModel(_SemiSupervisedMode):
    r"""Π-model (S. Laine, T. Aila, "Temporal ensembling for semi-supervised learning", ICLR 2017).

    Two stochastic views of the same patch must give the same prediction:
    :math:`w(t)\,\frac{1}{|\Omega|}\sum_p \frac{1}{K}\lVert s(f(\tilde x_1))_p - s(f(\tilde x_2))_p \rVert^2`
    with :math:`s` the softmax.  View 1 is the sampler's augmented patch (on labelled batches, the
    trainer's own forward pass is reused), view 2 adds intensity jitter, Gaussian noise and a
    random flip (undone on the logits).

    Knobs: ``weight`` = 1.0 (:math:`w_{max}`); ``rampup`` = 0.3 (budget fraction of the sigmoid
    ramp-up :math:`\exp(-5(1-t)^2)`); ``noise`` = 0.1 (σ of the input noise and ± range of the
    intensity scale/shift); ``on_labelled`` = true (also on labelled patches); ``detach_target``
    = true (no gradient through view 2; false = symmetric, as in the paper).
    """

    name = "pi-model"
    paper = "Laine & Aila, Temporal ensembling for semi-supervised learning, ICLR 2017"
    summary = "Two perturbed views of each patch must agree (MSE of softmax)."
    defaults = {**_SemiSupervisedMode.defaults, "detach_target": True}

    def _target(self, trainer, x):
        return self.flipped_logits(trainer, _plain_network(trainer), x, grad=not self.detach_target)

    def extra_terms(self, trainer, logits, batch) -> dict:
        if not self.on_labelled:
            return {}
        target = self._target(trainer, batch.image)
        return {"consistency": self.ramp(trainer) * L.consistency_loss(logits, target, "mse",
                                                                       detach_target=self.detach_target)}

    def unlabelled_terms(self, trainer) -> dict:
        batch = self.unlabelled(trainer)
        if batch is None:
            return {}
        logits = trainer.forward(self.perturb(trainer, batch.image))
        target = self._target(trainer, batch.image)
        return {"consistency_unlabelled": self.ramp(trainer) * L.consistency_loss(
            logits, target, "mse", detach_target=self.detach_target)}


class TemporalEnsembling(_SemiSupervisedMode):
    r"""Temporal ensembling (S. Laine, T. Aila, ICLR 2017).

    Each voxel's target is an exponential moving average of the network's past predictions of it:
    :math:`Z \leftarrow \alpha Z + (1-\alpha) s(f(\tilde x))`, target :math:`\tilde z = Z / (1 - \alpha^{n})`
    (startup bias correction, :math:`n` = times the voxel was predicted), loss
    :math:`w(t)\,\mathrm{MSE}(s(f(\tilde x)), \tilde z)` on voxels predicted before.  The paper
    keeps one ensemble per image; here it is one per voxel of each volume on the network grid, fed
    by random patches of the volume (own crops, intensity perturbation and random flips undone on
    the logits, so predictions land on the right voxels).  Stored as uint8 (probabilities to
    1/255), i.e. K + 1 bytes per voxel and volume, in memory and in the checkpoint.

    Knobs: ``weight`` = 1.0; ``rampup`` = 0.3; ``noise`` = 0.1; ``on_labelled`` = true (annotated
    volumes get ensembles too; false = unannotated volumes only); ``alpha`` = 0.6 (ensemble momentum).
    """

    name = "temporal-ensembling"
    paper = "Laine & Aila, Temporal ensembling for semi-supervised learning, ICLR 2017"
    summary = "Targets are a per-voxel moving average of past predictions."
    defaults = {**_SemiSupervisedMode.defaults, "alpha": 0.6}

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.ensemble: dict[str, torch.Tensor] = {}
        self.counts: dict[str, torch.Tensor] = {}
        self.pool: list = []

    def check_options(self) -> None:
        super().check_options()
        self._require(0 <= self.alpha < 1, "alpha", "in [0, 1)")

    def setup(self, trainer) -> None:
        super().setup(trainer)
        self.pool = [c for c in trainer.prepared if c.unlabelled or self.on_labelled]
        k = trainer.plan.num_classes
        for case in self.pool:
            shape = tuple(case.image.shape[1:])
            self.ensemble.setdefault(case.id, torch.zeros((k, *shape), dtype=torch.uint8))
            self.counts.setdefault(case.id, torch.zeros(shape, dtype=torch.uint8))
        megabytes = sum(e.numel() + self.counts[i].numel() for i, e in self.ensemble.items()) / 2**20
        logger.info("Temporal ensembling: %d volumes, %.0f MB of ensemble", len(self.pool), megabytes)

    def unlabelled_terms(self, trainer) -> dict:
        if not self.pool:
            return {}
        sampler = trainer.sampler
        crops, where = [], []
        for _ in range(sampler.plan.batch_size):
            case = self.pool[_randint(sampler.generator, len(self.pool))]
            crop, index, valid = _random_crop(sampler, case)
            crops.append(crop)
            where.append((case.id, index, valid))
        x = torch.stack(crops).to(trainer.device)
        dims = semi.random_flip_dims(sampler.generator, x.ndim)
        view = self.perturb(trainer, x)
        logits = trainer.forward(torch.flip(view, dims) if dims else view)
        if dims:
            logits = torch.flip(logits, dims)
        probs = torch.softmax(logits, 1)
        target = torch.zeros_like(probs)
        mask = torch.zeros((x.shape[0], *x.shape[2:]), dtype=torch.bool, device=x.device)
        new = probs.detach().cpu()
        for i, (cid, index, valid) in enumerate(where):
            inner = tuple(slice(0, v) for v in valid)
            z = self.ensemble[cid][(slice(None), *index)].float() / 255.0
            n = self.counts[cid][index].float()
            seen = n > 0
            corrected = z / (1.0 - self.alpha ** n).clamp_min(1e-6)
            target[(i, slice(None), *inner)] = corrected.to(x.device)
            mask[(i, *inner)] = seen.to(x.device)
            updated = self.alpha * z + (1.0 - self.alpha) * new[(i, slice(None), *inner)]
            self.ensemble[cid][(slice(None), *index)] = (updated * 255.0).round().clamp(0, 255).to(torch.uint8)
            self.counts[cid][index] = (n + 1).clamp_max(255).to(torch.uint8)
        values = ((probs - target) ** 2).mean(1)
        loss = (values * mask).sum() / mask.sum().clamp_min(1)
        return {"consistency_ensemble": self.ramp(trainer) * loss}

    def state_dict(self) -> dict:
        state: dict = {}
        for cid in self.ensemble:
            state[f"ensemble.{cid}"] = self.ensemble[cid]
            state[f"counts.{cid}"] = self.counts[cid]
        return state

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            kind, _, cid = key.partition(".")
            if kind == "ensemble":
                self.ensemble[cid] = value.to(torch.uint8).clone()
            elif kind == "counts":
                self.counts[cid] = value.to(torch.uint8).clone()


class MeanTeacher(_SemiSupervisedMode):
    r"""Mean teacher (A. Tarvainen, H. Valpola, "Mean teachers are better role models", NeurIPS 2017;
    in medical segmentation e.g. Yu et al., MICCAI 2019).

    The teacher's weights are an EMA of the student's,
    :math:`\theta'_t = d_t \theta'_{t-1} + (1 - d_t)\theta_t` with :math:`d_t = \min(1 - 1/(t+1), d)`,
    and the student matches the teacher's prediction on a differently perturbed view:
    :math:`w(t)\,\mathrm{MSE}(s(f_\theta(\tilde x)), s(f_{\theta'}(\tilde x')))`, where
    :math:`\tilde x'` adds intensity jitter, noise and a random flip (undone on the logits).
    The teacher is saved in the checkpoint, so a resumed run continues exactly.

    Knobs: ``weight`` = 1.0; ``rampup`` = 0.3; ``noise`` = 0.1; ``on_labelled`` = true;
    ``decay`` = 0.99 (EMA decay :math:`d`; 0.999 for long runs); ``final_weights`` = "student"
    ("teacher": the saved model gets the teacher's weights, often slightly better).
    """

    name = "mean-teacher"
    paper = "Tarvainen & Valpola, Mean teachers are better role models, NeurIPS 2017"
    summary = "An EMA teacher's prediction on a perturbed view is the student's target."
    defaults = {**_SemiSupervisedMode.defaults, "decay": 0.99, "final_weights": "student"}
    choices = {"final_weights": ("student", "teacher")}

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.teacher: torch.nn.Module | None = None
        self.step = 0
        self._pending: dict[str, torch.Tensor] = {}

    def check_options(self) -> None:
        super().check_options()
        self._require(0 <= self.decay < 1, "decay", "in [0, 1)")

    def setup(self, trainer) -> None:
        super().setup(trainer)
        self.teacher = copy.deepcopy(_plain_network(trainer)).requires_grad_(False)
        if self._pending:
            self.teacher.load_state_dict(self._pending)
            self._pending = {}

    def _teacher_logits(self, trainer, x):
        return self.flipped_logits(trainer, self.teacher, x, grad=False)

    def extra_terms(self, trainer, logits, batch) -> dict:
        if not self.on_labelled:
            return {}
        target = self._teacher_logits(trainer, batch.image)
        return {"consistency": self.ramp(trainer) * L.consistency_loss(logits, target, "mse")}

    def unlabelled_terms(self, trainer) -> dict:
        batch = self.unlabelled(trainer)
        if batch is None:
            return {}
        logits = trainer.forward(self.perturb(trainer, batch.image))
        target = self._teacher_logits(trainer, batch.image)
        return {"consistency_unlabelled": self.ramp(trainer) * L.consistency_loss(logits, target, "mse")}

    def after_step(self, trainer) -> None:
        semi.ema_update(self.teacher, _plain_network(trainer), semi.ema_decay(self.step, self.decay))
        self.step += 1

    def finish(self, trainer) -> None:
        if self.final_weights == "teacher" and self.teacher is not None:
            _plain_network(trainer).load_state_dict(self.teacher.state_dict())

    def state_dict(self) -> dict:
        teacher = self._pending if self.teacher is None else self.teacher.state_dict()
        return {"step": int(self.step), **{f"teacher.{k}": v.detach().cpu().clone() for k, v in teacher.items()}}

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.step = int(state.get("step", 0))
        weights = {k[len("teacher."):]: v for k, v in state.items() if k.startswith("teacher.")}
        if self.teacher is None:
            self._pending = weights
        else:
            self.teacher.load_state_dict(weights)


class VirtualAdversarial(_SemiSupervisedMode):
    r"""Virtual adversarial training (T. Miyato, S. Maeda, M. Koyama, S. Ishii, TPAMI 41(8), 2019).

    The prediction must not change under the small input perturbation that changes it most:
    :math:`w(t)\,\mathrm{KL}(s(f(x)) \,\|\, s(f(x + r_{adv})))`, with :math:`r_{adv} = \epsilon\, g/\lVert g\rVert`
    and :math:`g = \nabla_r \mathrm{KL}(s(f(x)) \| s(f(x + r)))|_{r = \xi d}` found by power iteration
    from a random :math:`d`.  Perturbation sizes are per-voxel RMS in normalised intensity units
    (a norm over the whole patch would make :math:`\epsilon` depend on the patch size).

    Knobs: ``weight`` = 1.0; ``rampup`` = 0.0 (VAT needs none); ``on_labelled`` = true;
    ``epsilon`` = 0.1 (RMS size of :math:`r_{adv}`); ``xi`` = 0.01 (RMS size of the finite-difference
    probe); ``power_iterations`` = 1.
    """

    name = "vat"
    paper = "Miyato et al., Virtual adversarial training, TPAMI 2019"
    summary = "Predictions must resist the worst small input perturbation (KL)."
    defaults = {"weight": 1.0, "rampup": 0.0, "on_labelled": True, "epsilon": 0.1, "xi": 0.01,
                "power_iterations": 1}

    def check_options(self) -> None:
        super().check_options()
        self._require(self.epsilon > 0, "epsilon", "> 0")
        self._require(self.xi > 0, "xi", "> 0")
        self._require(self.power_iterations >= 1, "power_iterations", ">= 1")

    def _vat(self, trainer, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.detach()
        network = _plain_network(trainer)
        d = semi.rms_normalise(torch.randn(x.shape, generator=trainer.sampler.generator).to(x.device, x.dtype))
        for _ in range(self.power_iterations):
            d = d.detach().requires_grad_(True)
            with torch.enable_grad():
                probe = _run(trainer, network, x.detach() + self.xi * d)
                divergence = L.consistency_loss(probe, target, "kl")
                (grad,) = torch.autograd.grad(divergence, d)
            d = semi.rms_normalise(grad.detach())
        adversarial = trainer.forward(x.detach() + self.epsilon * d)
        return L.consistency_loss(adversarial, target, "kl")

    def extra_terms(self, trainer, logits, batch) -> dict:
        if not self.on_labelled:
            return {}
        return {"vat": self.ramp(trainer) * self._vat(trainer, batch.image, logits)}

    def unlabelled_terms(self, trainer) -> dict:
        batch = self.unlabelled(trainer)
        if batch is None:
            return {}
        with torch.no_grad():
            target = _run(trainer, _plain_network(trainer), batch.image)
        return {"vat_unlabelled": self.ramp(trainer) * self._vat(trainer, batch.image, target)}


class EntropyMinimisation(_SemiSupervisedMode):
    r"""Entropy minimisation (Y. Grandvalet, Y. Bengio, "Semi-supervised learning by entropy minimization",
    NeurIPS 2005).

    :math:`w(t)\,\frac{1}{|\Omega|}\sum_p -\sum_c s_{c,p}\log s_{c,p}` on the patches of unannotated
    volumes and, with ``on_labelled``, on the unannotated voxels of labelled patches: decision
    boundaries move to low-density regions.  (``LossWeights.entropy`` adds the same term on
    labelled patches only, from the objective.)

    Knobs: ``weight`` = 0.1; ``rampup`` = 0.3; ``on_labelled`` = true.
    """

    name = "entropy-min"
    paper = "Grandvalet & Bengio, Semi-supervised learning by entropy minimization, NeurIPS 2005"
    summary = "Confident (low-entropy) predictions on unannotated voxels."
    defaults = {"weight": 0.1, "rampup": 0.3, "on_labelled": True}

    def extra_terms(self, trainer, logits, batch) -> dict:
        if not self.on_labelled:
            return {}
        mask = self.unknown_mask(batch)
        if mask is not None and not bool(mask.any()):
            return {}
        return {"entropy_min": self.ramp(trainer) * L.entropy_loss(logits, mask=mask)}

    def unlabelled_terms(self, trainer) -> dict:
        batch = self.unlabelled(trainer)
        if batch is None:
            return {}
        return {"entropy_min_unlabelled": self.ramp(trainer) * L.entropy_loss(trainer.forward(batch.image))}


class PseudoLabel(_SemiSupervisedMode):
    r"""Confidence-thresholded pseudo-labels (D.-H. Lee, "Pseudo-label", ICML Workshop 2013; the
    threshold as in FixMatch and most self-training since).

    Voxels whose prediction is confident become their own targets:
    :math:`w(t)\,\frac{1}{|\Omega|}\sum_p 1(\max_c s_{c,p} \ge \tau)\,\mathrm{CE}(f(x)_p, \arg\max_c s_{c,p})`
    (normalised by all voxels in scope, so few confident voxels give a small loss), on unannotated
    patches and, with ``on_labelled``, on the unannotated voxels of labelled patches.

    Knobs: ``weight`` = 1.0; ``rampup`` = 0.3; ``on_labelled`` = true; ``threshold`` = 0.9 (τ).
    """

    name = "pseudo-label"
    paper = "Lee, Pseudo-label, ICML Workshop on Challenges in Representation Learning 2013"
    summary = "Confident predictions (p >= threshold) become cross-entropy targets."
    defaults = {"weight": 1.0, "rampup": 0.3, "on_labelled": True, "threshold": 0.9}

    def check_options(self) -> None:
        super().check_options()
        self._require(0 < self.threshold <= 1, "threshold", "in (0, 1]")

    def _loss(self, logits, scope=None):
        conf, target = torch.softmax(logits.detach(), 1).max(1)
        mask = conf >= self.threshold
        if scope is not None:
            mask = mask & scope
        return semi.masked_cross_entropy(logits, target, mask, scope)

    def extra_terms(self, trainer, logits, batch) -> dict:
        if not self.on_labelled:
            return {}
        scope = self.unknown_mask(batch)
        if scope is not None and not bool(scope.any()):
            return {}
        return {"pseudo_label": self.ramp(trainer) * self._loss(logits, scope)}

    def unlabelled_terms(self, trainer) -> dict:
        batch = self.unlabelled(trainer)
        if batch is None:
            return {}
        return {"pseudo_label_unlabelled": self.ramp(trainer) * self._loss(trainer.forward(batch.image))}


class FixMatch(_SemiSupervisedMode):
    r"""FixMatch (K. Sohn et al., "FixMatch: simplifying semi-supervised learning with consistency and
    confidence", NeurIPS 2020).

    The prediction on a weakly augmented view, where confident, is the hard target of the
    prediction on a strongly augmented view:
    :math:`w\,\frac{1}{|\Omega|}\sum_p 1(\max q_p \ge \tau)\,\mathrm{CE}(f(\mathcal A(x))_p, \arg\max q_p)`,
    :math:`q = s(f(\alpha(x)))`.  Weak = the sampler's augmentation (flips, small rotation/scaling,
    mild intensity); strong = on top of it, a large intensity scale/shift, noise and cutout
    (geometry-preserving, so targets stay aligned — RandAugment's colour operations, for
    medical intensities).

    Knobs: ``weight`` = 1.0; ``rampup`` = 0.0; ``on_labelled`` = true; ``threshold`` = 0.95 (τ);
    ``strength`` = 0.3 (± range of the strong intensity scale and shift); ``noise`` = 0.1 (σ of
    the strong noise); ``cutout`` = 0.25 (side of the cut box as a fraction of each patch side;
    0 = none).
    """

    name = "fixmatch"
    paper = "Sohn et al., FixMatch, NeurIPS 2020"
    summary = "Confident weak-view predictions supervise a strongly augmented view."
    defaults = {"weight": 1.0, "rampup": 0.0, "on_labelled": True, "threshold": 0.95, "strength": 0.3,
                "noise": 0.1, "cutout": 0.25}

    def check_options(self) -> None:
        super().check_options()
        self._require(0 < self.threshold <= 1, "threshold", "in (0, 1]")
        self._require(0 <= self.strength < 1, "strength", "in [0, 1)")
        self._require(0 <= self.cutout < 1, "cutout", "in [0, 1)")

    def strong(self, trainer, x: torch.Tensor) -> torch.Tensor:
        gen = trainer.sampler.generator
        x = semi.intensity_perturbation(x, gen, self.strength, self.strength, self.noise)
        return semi.cutout(x, gen, self.cutout)

    def _loss(self, trainer, weak_logits, x, scope=None):
        conf, target = torch.softmax(weak_logits.detach(), 1).max(1)
        mask = conf >= self.threshold
        if scope is not None:
            mask = mask & scope
        strong_logits = trainer.forward(self.strong(trainer, x))
        return semi.masked_cross_entropy(strong_logits, target, mask, scope)

    def extra_terms(self, trainer, logits, batch) -> dict:
        if not self.on_labelled:
            return {}
        scope = self.unknown_mask(batch)
        if scope is not None and not bool(scope.any()):
            return {}
        return {"fixmatch": self.ramp(trainer) * self._loss(trainer, logits, batch.image, scope)}

    def unlabelled_terms(self, trainer) -> dict:
        batch = self.unlabelled(trainer)
        if batch is None:
            return {}
        with torch.no_grad():
            weak = _run(trainer, _plain_network(trainer), batch.image)
        return {"fixmatch_unlabelled": self.ramp(trainer) * self._loss(trainer, weak, batch.image)}


class MixMatch(_SemiSupervisedMode):
    r"""MixMatch (D. Berthelot et al., "MixMatch: a holistic approach to semi-supervised learning",
    NeurIPS 2019), for voxel-wise weak labels.

    * Guess: an unannotated patch gets ``augmentations`` views (perturbation + random flip); the
      guessed label is the sharpened average of their predictions (flips undone),
      :math:`q = \mathrm{Sharpen}(\frac{1}{A}\sum_a s(f(\hat u_a)), T)`, shared by all views.
    * Labelled patch targets: one-hot on annotated voxels, the sharpened (detached) prediction on
      its unannotated voxels (our adaptation: a weakly labelled patch has few annotated voxels).
    * Mix: all rows :math:`W` = labelled ∪ unlabelled views are shuffled; each row is mixed with
      a shuffled row, :math:`\lambda \sim \mathrm{Beta}(\alpha, \alpha)`, :math:`\lambda' = \max(\lambda, 1-\lambda)`,
      images and targets alike.
    * Loss (one forward pass on all mixed rows): ``labelled_weight`` × soft cross-entropy on the
      mixed labelled rows + :math:`w(t)` × MSE of softmax on the mixed unlabelled rows.  The
      objective's own terms still apply to the unmixed labelled batch.

    Knobs: ``weight`` = 1.0 (:math:`\lambda_U`); ``labelled_weight`` = 1.0; ``rampup`` = 0.3;
    ``noise`` = 0.1; ``on_labelled`` = true (mix labelled patches in); ``temperature`` = 0.5 (T);
    ``alpha`` = 0.75 (Beta parameter); ``augmentations`` = 2 (views per unannotated patch).
    """

    name = "mixmatch"
    paper = "Berthelot et al., MixMatch, NeurIPS 2019"
    summary = "Sharpened guesses on augmented views + mixup of labelled and unlabelled patches."
    defaults = {**_SemiSupervisedMode.defaults, "labelled_weight": 1.0, "temperature": 0.5, "alpha": 0.75,
                "augmentations": 2}

    def __init__(self, **options: Any):
        super().__init__(**options)
        self._labelled: tuple[torch.Tensor, torch.Tensor] | None = None

    def check_options(self) -> None:
        super().check_options()
        self._require(self.labelled_weight >= 0, "labelled_weight", ">= 0")
        self._require(self.temperature > 0, "temperature", "> 0")
        self._require(self.alpha > 0, "alpha", "> 0")
        self._require(self.augmentations >= 1, "augmentations", ">= 1")

    def extra_terms(self, trainer, logits, batch) -> dict:
        # The labelled rows are mixed with the unlabelled ones in ``unlabelled_terms`` (same step).
        if self.on_labelled and batch.labels is not None:
            k = logits.shape[1]
            guess = semi.sharpen(torch.softmax(logits.detach(), 1), self.temperature)
            known = batch.labels != UNKNOWN
            onehot = F.one_hot(batch.labels.clamp_min(0), k).movedim(-1, 1).to(guess.dtype)
            self._labelled = (batch.image.detach(), torch.where(known.unsqueeze(1), onehot, guess))
        return {}

    def unlabelled_terms(self, trainer) -> dict:
        labelled, self._labelled = self._labelled, None
        batch = self.unlabelled(trainer)
        if batch is None and labelled is None:
            return {}
        gen = trainer.sampler.generator
        images, targets = [], []
        n_labelled = 0
        if labelled is not None:
            images.append(labelled[0])
            targets.append(labelled[1])
            n_labelled = labelled[0].shape[0]
        if batch is not None:
            network = _plain_network(trainer)
            views, flips = [], []
            for _ in range(self.augmentations):
                dims = semi.random_flip_dims(gen, batch.image.ndim)
                view = self.perturb(trainer, batch.image)
                views.append(torch.flip(view, dims) if dims else view)
                flips.append(dims)
            with torch.no_grad():
                probs = [torch.softmax(_run(trainer, network, v), 1) for v in views]
                mean = sum(torch.flip(p, d) if d else p for p, d in zip(probs, flips)) / len(probs)
                guess = semi.sharpen(mean, self.temperature)
            for view, dims in zip(views, flips):
                images.append(view)
                targets.append(torch.flip(guess, dims) if dims else guess)
        rows = torch.cat(images)
        target = torch.cat(targets)
        order = torch.randperm(rows.shape[0], generator=gen).to(rows.device)
        lam = semi.sample_beta(self.alpha, gen)
        mixed, mixed_target, _ = semi.mixup(rows, target, rows[order], target[order], lam)
        logits = trainer.forward(mixed)
        terms = {}
        if n_labelled:
            terms["mixmatch_labelled"] = self.labelled_weight * semi.soft_cross_entropy(
                logits[:n_labelled], mixed_target[:n_labelled])
        if rows.shape[0] > n_labelled:
            probs = torch.softmax(logits[n_labelled:], 1)
            terms["mixmatch_unlabelled"] = self.ramp(trainer) * ((probs - mixed_target[n_labelled:]) ** 2).mean()
        return terms


# ------------------------------------------------------------------------------------ adaptation
class SourceFreeAdaptation(TrainingMode):
    r"""Source-free domain adaptation (M. Bateson, H. Kervadec, J. Dolz, H. Lombaert, I. Ben Ayed,
    "Source-relaxed domain adaptation for image segmentation", MICCAI 2020).

    Fine-tunes a trained model (``init_model`` in the config) on unannotated volumes of a new
    scanner or site, without the source data:
    :math:`\lambda_H \frac{1}{|\Omega|}\sum_p H(s_p) + \lambda_{KL}\,\mathrm{KL}(\hat\tau \,\|\, \tau)`,
    the entropy of the prediction plus the KL divergence of the predicted class proportions
    :math:`\hat\tau` from the prior :math:`\tau` (which prevents entropy minimisation from collapsing
    onto the dominant class).  Both terms are evaluated on whole-volume batches of unannotated
    volumes (all slices of a volume in 2D plans, a reduced-resolution pass in 3D), so the
    proportions are those of the volume.  Annotated volumes, if any, keep their own terms.

    Knobs: ``entropy_weight`` = 1.0 (:math:`\lambda_H`); ``ratio_weight`` = 1.0
    (:math:`\lambda_{KL}`); ``class_ratio`` = null (the prior, one value per class, background first;
    null = the dataset's ``priors.class_ratio``).  Use a small learning rate (e.g. 5e-4) in the
    config: the model is already trained.
    """

    name = "source-free"
    family = "domain adaptation"
    paper = "Bateson et al., Source-relaxed domain adaptation for image segmentation, MICCAI 2020"
    summary = "Adapt a trained model to a new site: entropy + class-ratio prior on unannotated volumes."
    defaults = {"entropy_weight": 1.0, "ratio_weight": 1.0, "class_ratio": None}

    def check_options(self) -> None:
        self._require(self.entropy_weight >= 0, "entropy_weight", ">= 0")
        self._require(self.ratio_weight >= 0, "ratio_weight", ">= 0")
        ratio = self.class_ratio
        if ratio is not None:
            ok = (isinstance(ratio, (list, tuple)) and len(ratio) >= 2
                  and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in ratio)
                  and sum(ratio) > 0)
            self._require(ok, "class_ratio", "a list of non-negative proportions, one per class (background first)")

    def setup(self, trainer) -> None:
        k = trainer.dataset.num_classes
        prior = self.class_ratio if self.class_ratio is not None else trainer.dataset.priors.get("class_ratio")
        if prior is None:
            raise ValueError("Mode 'source-free' needs a class-ratio prior: set mode_options.class_ratio (one "
                             "proportion per class, background first) or priors.class_ratio in dataset.json.")
        if len(prior) != k:
            raise ValueError(f"Mode 'source-free': class_ratio has {len(prior)} values but the dataset has {k} "
                             f"classes (background first).")
        self.prior = torch.tensor([float(v) for v in prior], dtype=torch.float32)
        self.pool = list(trainer.sampler.unlabelled_cases)
        if not self.pool:
            raise ValueError("Mode 'source-free' adapts to unannotated volumes, but every case is annotated: "
                             "add the new site's volumes without annotation.")
        if not trainer.config.init_model:
            logger.warning("Mode 'source-free' without init_model: adapting a randomly initialised network; "
                           "set init_model to the trained model's folder.")

    def unlabelled_terms(self, trainer) -> dict:
        sampler = trainer.sampler
        case = self.pool[_randint(sampler.generator, len(self.pool))]
        batch = sampler.volume_batch(case).to(trainer.device)
        volume = _stack_volume(trainer.forward(batch.image), batch)
        terms = {}
        if self.entropy_weight > 0:
            terms["entropy_unlabelled"] = self.entropy_weight * L.entropy_loss(volume)
        if self.ratio_weight > 0:
            terms["class_ratio_unlabelled"] = self.ratio_weight * L.class_ratio_kl_loss(
                volume, self.prior.to(volume.device))
        return terms


# ------------------------------------------------------------------------------------ relabeling
class _RelabelingMode(TrainingMode):
    """Rounds that rewrite the voxel labels of some volumes at fixed fractions of the budget.

    The training budget is split into stages; at the end of each stage (``after_step``) the
    current network predicts every eligible volume (sliding window on the network grid) and the
    mode writes new labels into ``trainer.prepared``; the sampler is rebuilt on them (its random
    stream continues) and training goes on.  The labels written are saved in the checkpoint
    (int16 per voxel of the relabeled volumes), so a resumed run continues exactly.
    """

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.rounds_done = 0
        self.labels: dict[str, torch.Tensor] = {}
        self.original: dict[str, torch.Tensor | None] = {}
        self.history: list[dict] = []
        self._trainer = None

    # subclasses
    def round_fractions(self) -> list[float]:
        raise NotImplementedError

    def eligible(self, case) -> bool:
        raise NotImplementedError

    def relabel(self, trainer, case, round_index: int) -> tuple[torch.Tensor, dict]:
        """New labels (*spatial) of one case and counts to add up in the round's report."""
        raise NotImplementedError

    def round_info(self, round_index: int) -> dict:
        return {}

    # machinery
    def setup(self, trainer) -> None:
        self._trainer = trainer
        cases = [c for c in trainer.prepared if self.eligible(c)]
        if not cases:
            raise ValueError(self.no_case_message())
        for case in cases:
            self.original[case.id] = None if case.labels is None else case.labels.clone()
        self._apply_saved(trainer)

    def no_case_message(self) -> str:
        return f"Mode '{self.name}': no training case has the annotation it needs."

    def after_step(self, trainer) -> None:
        fractions = self.round_fractions()
        progress = _progress_after_step(trainer)
        while self.rounds_done < len(fractions) and progress >= fractions[self.rounds_done] - 1e-9:
            self.run_round(trainer, self.rounds_done)
            self.rounds_done += 1

    def run_round(self, trainer, round_index: int) -> None:
        report = {"iteration": trainer.iteration + 1, "mode": self.name, "round": round_index + 1,
                  **self.round_info(round_index)}
        for case in trainer.prepared:
            if not self.eligible(case):
                continue
            labels, info = self.relabel(trainer, case, round_index)
            original = self.original.get(case.id)
            if original is not None:      # the user's own voxel labels always win
                labels = torch.where(original != UNKNOWN, original, labels)
            case.labels = labels.to(torch.long).cpu()
            self.labels[case.id] = case.labels
            for key, value in info.items():
                report[key] = report.get(key, 0) + value
        report["labelled_voxels"] = int(sum(int((t != UNKNOWN).sum()) for t in self.labels.values()))
        rebuild_sampler(trainer)
        self.history.append(report)
        trainer.history.append(report)
        logger.info("Mode '%s' round %d: %s", self.name, round_index + 1, report)

    def _apply_saved(self, trainer) -> None:
        if not self.labels:
            return
        for case in trainer.prepared:
            if case.id in self.labels:
                case.labels = self.labels[case.id].to(torch.long).cpu()
        rebuild_sampler(trainer)

    def state_dict(self) -> dict:
        state: dict = {"rounds_done": int(self.rounds_done)}
        for cid, labels in self.labels.items():
            state[f"labels.{cid}"] = labels.to(torch.int16).cpu()
        return state

    def load_state_dict(self, state: dict) -> None:
        if not state:
            return
        self.rounds_done = int(state.get("rounds_done", 0))
        self.labels = {k[len("labels."):]: v.to(torch.long) for k, v in state.items() if k.startswith("labels.")}
        if self._trainer is not None:
            self._apply_saved(self._trainer)


class Smiler(_RelabelingMode):
    r"""SMILEr relabeling rounds (O. Petit, N. Thome, A. Charnay, A. Hostettler, L. Soler, "Handling
    missing annotations for semantic segmentation with deep convnets", DLMIA 2018).

    For partial labels (complete masks of some classes; the objective uses SMILE) and, more
    generally, any volume with voxel labels.  The budget is split into ``rounds`` + 1 stages; after
    stage :math:`t` every unknown voxel whose predicted probability of a class :math:`c \ge 1` that is
    *not* complete in this volume reaches :math:`\gamma_t` is added as a positive of ``c``:
    :math:`y_p \leftarrow c` if :math:`y_p` unknown, :math:`c \notin \mathcal C_{complete}`,
    :math:`s_{c,p} \ge \gamma_t`.  Annotated voxels, complete classes and background are never
    touched; labels accumulate over rounds.  Threshold schedule
    :math:`\gamma_t = \max(\gamma_{min}, \gamma_0 - t\,\delta)`: strict first, looser as the model improves.

    Knobs: ``rounds`` = 2; ``gamma_start`` = 0.95 (:math:`\gamma_0`); ``gamma_step`` = 0.05
    (:math:`\delta`); ``gamma_min`` = 0.8 (all thresholds must stay > 0.5).
    """

    name = "smiler"
    family = "partial labels"
    paper = "Petit et al., Handling missing annotations for semantic segmentation with deep convnets, DLMIA 2018"
    summary = "Relabeling rounds: confident positives of unannotated classes become labels."
    defaults = {"rounds": 2, "gamma_start": 0.95, "gamma_step": 0.05, "gamma_min": 0.8}

    def check_options(self) -> None:
        self._require(self.rounds >= 1, "rounds", ">= 1")
        self._require(0.5 < self.gamma_start <= 1, "gamma_start", "in (0.5, 1]")
        self._require(self.gamma_step >= 0, "gamma_step", ">= 0")
        self._require(0.5 < self.gamma_min <= self.gamma_start, "gamma_min", "in (0.5, gamma_start]")

    def round_fractions(self) -> list[float]:
        return [(k + 1) / (self.rounds + 1) for k in range(self.rounds)]

    def eligible(self, case) -> bool:
        return case.labels is not None and not bool(case.complete[1:].all())

    def no_case_message(self) -> str:
        return ("Mode 'smiler' relabels volumes with voxel labels and incomplete classes (partial labels, "
                "scribbles); no training case has them.")

    def gamma(self, round_index: int) -> float:
        return semi.smiler_threshold(round_index, self.gamma_start, self.gamma_step, self.gamma_min)

    def relabel(self, trainer, case, round_index: int):
        probs = torch.softmax(grid_logits(trainer, case.image), 0).cpu()
        labels, added = semi.smiler_relabel(case.labels, probs, case.complete.cpu(), self.gamma(round_index))
        return labels, {"added_voxels": added}

    def round_info(self, round_index: int) -> dict:
        return {"gamma": round(self.gamma(round_index), 6)}


class ClassActivationMaps(_RelabelingMode):
    r"""Image tags only: CAM pseudo-masks (B. Zhou, A. Khosla, A. Lapedriza, A. Oliva, A. Torralba,
    "Learning deep features for discriminative localization", CVPR 2016), refined with the tag and
    size constraints.

    * Classification head: global pooling of the segmentation logits,
      :math:`y_c = \frac{1}{|\Omega|}\sum_p f_c(x)_p` (``pooling`` = "gap"; "lse" = log-sum-exp
      pooling with sharpness ``lse_r``), trained with multi-label BCE on the volume tags (and on
      slice tags, per slice, in 2D plans) of whole-volume batches.  The network's last layer is a
      1×1 convolution, and GAP∘conv = conv∘GAP, so the logit map :math:`f_c` *is* Zhou's CAM
      :math:`M_c = \sum_k w^c_k f_k` (plus a constant).
    * At ``cam_fraction`` of the budget, CAMs of every tagged volume (sliding window, network grid)
      are min-max normalised per class, :math:`\tilde M_c = (M_c - \min M_c)/(\max M_c - \min M_c)`,
      and turned into a pseudo-mask: class ``c`` (tagged present) where :math:`\tilde M_c \ge`
      ``fg_threshold`` and is the largest present CAM — at most the lower bound of ``c``'s size
      range (its most activated voxels) when ``use_sizes`` —, background where every possibly present
      class has :math:`\tilde M_c \le` ``bg_threshold`` (Zhou's 20%-of-max rule), unknown elsewhere;
      classes tagged absent are never assigned.
    * The rest of the budget trains the segmentation on the pseudo-masks (partial CE + Dice on the
      seeds) under the objective's tag and size constraints, which refine them.

    Knobs: ``weight`` = 1.0 (BCE); ``cam_fraction`` = 0.3; ``pooling`` = "gap"; ``lse_r`` = 5.0;
    ``fg_threshold`` = 0.6; ``bg_threshold`` = 0.2; ``use_sizes`` = true; ``keep_classification``
    = false (keep the BCE after the pseudo-masks are made).
    """

    name = "cam"
    family = "image tags"
    paper = "Zhou et al., Learning deep features for discriminative localization, CVPR 2016"
    summary = "Tags only: a classification head's CAMs become seeds, refined with tag and size constraints."
    defaults = {"weight": 1.0, "cam_fraction": 0.3, "pooling": "gap", "lse_r": 5.0, "fg_threshold": 0.6,
                "bg_threshold": 0.2, "use_sizes": True, "keep_classification": False}
    choices = {"pooling": ("gap", "lse")}

    def check_options(self) -> None:
        self._require(self.weight >= 0, "weight", ">= 0")
        self._require(0 < self.cam_fraction < 1, "cam_fraction", "in (0, 1)")
        self._require(self.lse_r > 0, "lse_r", "> 0")
        self._require(0 < self.fg_threshold <= 1, "fg_threshold", "in (0, 1]")
        self._require(0 <= self.bg_threshold < self.fg_threshold, "bg_threshold", "in [0, fg_threshold)")

    def round_fractions(self) -> list[float]:
        return [self.cam_fraction]

    def eligible(self, case) -> bool:
        return bool(case.tags or case.slice_tags)

    def no_case_message(self) -> str:
        return "Mode 'cam' learns from image tags (present / absent), but no training case has tags."

    def pool(self, logits: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
        if self.pooling == "gap":
            return logits.mean(dims)
        n = math.prod(logits.shape[d] for d in dims)
        return (torch.logsumexp(self.lse_r * logits, dim=dims) - math.log(n)) / self.lse_r

    def classification_loss(self, volume: torch.Tensor, case, stacked: bool) -> torch.Tensor | None:
        """Multi-label BCE of the pooled logits against the tags; ``volume`` is (1, K, *spatial)."""
        k = volume.shape[1]
        values, weights = [], []
        if case.tags:
            scores = self.pool(volume, tuple(range(2, volume.ndim)))[0]          # (K,)
            target = torch.zeros(k, device=volume.device)
            known = torch.zeros(k, dtype=torch.bool, device=volume.device)
            for c, present in case.tags.items():
                if c >= 1:
                    target[c], known[c] = float(present), True
            if bool(known.any()):
                values.append(F.binary_cross_entropy_with_logits(scores[known], target[known], reduction="sum"))
                weights.append(int(known.sum()))
        if case.slice_tags and stacked and volume.shape[2] == case.image.shape[1]:
            scores = self.pool(volume[0].transpose(0, 1), (2, 3))                # (z, K)
            target = torch.zeros_like(scores)
            known = torch.zeros(scores.shape, dtype=torch.bool, device=volume.device)
            for c, per_slice in case.slice_tags.items():
                for s, present in per_slice.items():
                    if c >= 1 and 0 <= s < scores.shape[0]:
                        target[s, c], known[s, c] = float(present), True
            if bool(known.any()):
                values.append(F.binary_cross_entropy_with_logits(scores[known], target[known], reduction="sum"))
                weights.append(int(known.sum()))
        if not values:
            return None
        return sum(values) / sum(weights)

    def setup(self, trainer) -> None:
        super().setup(trainer)
        self.tagged = [c for c in trainer.prepared if self.eligible(c)]

    def unlabelled_terms(self, trainer) -> dict:
        if self.weight <= 0 or (self.rounds_done > 0 and not self.keep_classification):
            return {}
        sampler = trainer.sampler
        case = self.tagged[_randint(sampler.generator, len(self.tagged))]
        batch = sampler.volume_batch(case).to(trainer.device)
        volume = _stack_volume(trainer.forward(batch.image), batch)
        loss = self.classification_loss(volume, case, batch.stack_slices)
        return {} if loss is None else {"cam_classification": self.weight * loss}

    def status(self, case, k: int) -> torch.Tensor:
        """(K, z, 1, 1) tag status per class and slice: 1 present, 0 absent, -1 unknown."""
        z = case.image.shape[1]
        status = torch.full((k, z, 1, 1), -1, dtype=torch.long)
        for c, present in case.tags.items():
            status[c] = int(present)
        for c, per_slice in case.slice_tags.items():
            for s, present in per_slice.items():
                if 0 <= s < z:
                    status[c, s] = int(present)
        return status

    def relabel(self, trainer, case, round_index: int):
        logits = grid_logits(trainer, case.image).cpu()
        cam = semi.normalise_cam(logits)
        max_voxels = None
        if self.use_sizes and case.size_bounds:
            max_voxels = {c: lo / case.voxel_ml for c, (lo, _hi) in case.size_bounds.items() if c >= 1}
        labels = semi.cam_pseudo_labels(cam, self.status(case, logits.shape[0]), self.fg_threshold,
                                        self.bg_threshold, max_voxels)
        return labels, {"seed_voxels": int((labels > 0).sum()), "background_voxels": int((labels == 0).sum())}


class BoxRounds(_RelabelingMode):
    r"""Recursive box rounds (A. Khoreva, R. Benenson, J. Hosang, M. Hein, B. Schiele, "Simple does it:
    weakly supervised instance and semantic segmentation", CVPR 2017).

    Round 0 trains with the box objective alone (emptiness / background labels outside, tightness
    and the fill bound inside, Kervadec et al.).  The budget is split into ``rounds`` + 1 stages;
    after each stage the model's predictions inside the boxes become the next stage's pseudo-labels
    (partial CE + Dice, on top of the box constraints):

    * inside a box of class ``c``: ``c`` where the model predicts ``c`` with probability
      :math:`\ge` ``min_confidence``; background where it confidently predicts background
      (``background_in_box``); unknown elsewhere;
    * outside every box: background when every class has a box or is tagged absent;
    * a box whose predicted ``c`` covers less than ``min_fill`` of it is reset: unknown, except its
      centred core (``core_scale`` of each side, as Khoreva's "Box^i" inner region) labelled ``c``;
    * the user's own voxel labels, if any, always win.

    Each round recomputes the labels from the current model (Khoreva retrain from scratch per
    round; here training continues, within one budget).

    Knobs: ``rounds`` = 2; ``min_confidence`` = 0.5; ``min_fill`` = 0.1; ``core_scale`` = 0.45;
    ``background_in_box`` = true.
    """

    name = "box-rounds"
    family = "boxes"
    paper = "Khoreva et al., Simple does it: weakly supervised instance and semantic segmentation, CVPR 2017"
    summary = "Recursive rounds: predictions inside the boxes become the next round's labels."
    defaults = {"rounds": 2, "min_confidence": 0.5, "min_fill": 0.1, "core_scale": 0.45, "background_in_box": True}

    def check_options(self) -> None:
        self._require(self.rounds >= 1, "rounds", ">= 1")
        self._require(0 <= self.min_confidence <= 1, "min_confidence", "in [0, 1]")
        self._require(0 <= self.min_fill <= 1, "min_fill", "in [0, 1]")
        self._require(0 < self.core_scale <= 1, "core_scale", "in (0, 1]")

    def round_fractions(self) -> list[float]:
        return [(k + 1) / (self.rounds + 1) for k in range(self.rounds)]

    def eligible(self, case) -> bool:
        return bool(case.boxes)

    def no_case_message(self) -> str:
        return "Mode 'box-rounds' needs boxes, but no training case has a box."

    def relabel(self, trainer, case, round_index: int):
        probs = torch.softmax(grid_logits(trainer, case.image), 0).cpu()
        absent = [c for c, present in case.tags.items() if not present]
        labels = semi.box_round_labels(probs, case.boxes, absent, self.min_confidence, self.min_fill,
                                       self.core_scale, self.background_in_box)
        return labels, {"object_voxels": int((labels > 0).sum())}


# ------------------------------------------------------------------------------------ registry
MODES: dict[str, type[TrainingMode]] = {
    cls.name: cls for cls in (
        TrainingMode, PiModel, TemporalEnsembling, MeanTeacher, VirtualAdversarial, EntropyMinimisation,
        PseudoLabel, FixMatch, MixMatch, SourceFreeAdaptation, Smiler, ClassActivationMaps, BoxRounds)
}


def get_mode(name: str, options: dict | None = None) -> TrainingMode:
    """The mode ``name`` configured with ``options`` (ValueError for an unknown mode or option)."""
    if name not in MODES:
        raise ValueError(f"Unknown training mode '{name}'; available: {', '.join(sorted(MODES))}.")
    if options is not None and not isinstance(options, dict):
        raise TypeError(f"mode_options must be a dict of option -> value, got {type(options).__name__}.")
    return MODES[name](**(options or {}))


def describe_modes() -> list[dict]:
    """Every mode with its family, paper, one-line summary and knobs (defaults): for the CLI and Slicer."""
    return [{"name": name, "family": cls.family, "paper": cls.paper, "summary": cls.summary,
             "options": dict(cls.defaults)} for name, cls in MODES.items()]
