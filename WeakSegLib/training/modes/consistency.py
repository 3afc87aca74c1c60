"""Consistency-based semi-supervised modes: the prediction must agree with itself across views.

Π-model and temporal ensembling (Laine & Aila 2017), mean teacher (Tarvainen & Valpola 2017),
virtual adversarial training (Miyato et al. 2019) and MixMatch (Berthelot et al. 2019).
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
import torch.nn.functional as F

from WeakSegLib import losses as L
from WeakSegLib.data.annotation import UNKNOWN
from WeakSegLib.training import semi
from WeakSegLib.training.data import draw_patch_window, pad_to_patch
from WeakSegLib.training.modes.base import PairedTermMode, SemiSupervisedMode, plain_network, run_network
from WeakSegLib.transforms.augmentation import random_int

logger = logging.getLogger(__name__)


class _ViewConsistencyMode(PairedTermMode):
    """Student logits against a target made from another perturbed view (MSE of softmax)."""

    term = "consistency"
    detach_target = True

    def target_logits(self, trainer, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def labelled_loss(self, trainer, logits, batch, scope) -> torch.Tensor:
        target = self.target_logits(trainer, batch.image)
        return L.consistency_loss(logits, target, "mse", detach_target=self.detach_target)

    def unlabelled_loss(self, trainer, batch) -> torch.Tensor:
        logits = trainer.forward(self.perturb(trainer, batch.image))
        target = self.target_logits(trainer, batch.image)
        return L.consistency_loss(logits, target, "mse", detach_target=self.detach_target)

    # With batch_share > 0 the unannotated patches join the student's labelled forward pass, and one
    # target pass covers both kinds of patches: a step costs one student pass of the planned batch
    # plus one target pass of it.
    def joint_batch(self, trainer):
        return self.unlabelled(trainer) if self.batch_share > 0 else None

    def joint_terms(self, trainer, logits, batch, joint, joint_logits) -> dict:
        n = logits.shape[0]
        target = self.target_logits(trainer, torch.cat([batch.image, joint.image]))
        weight = self.ramp(trainer)
        terms = {f"{self.term}_unlabelled": weight * L.consistency_loss(
            joint_logits, target[n:], "mse", detach_target=self.detach_target)}
        if self.on_labelled:
            terms[self.term] = weight * L.consistency_loss(logits, target[:n], "mse",
                                                           detach_target=self.detach_target)
        return terms


class PiModel(_ViewConsistencyMode):
    r"""Π-model (S. Laine, T. Aila, "Temporal ensembling for semi-supervised learning", ICLR 2017).

    Two stochastic views of the same patch must give the same prediction:
    :math:`w(t)\,\frac{1}{|\Omega|}\sum_p \frac{1}{K}\lVert s(f(\tilde x_1))_p - s(f(\tilde x_2))_p \rVert^2`
    with :math:`s` the softmax.  View 1 is the sampler's augmented patch (on labelled batches, the
    trainer's own forward pass is reused), view 2 adds intensity jitter, Gaussian noise and a
    random flip (undone on the logits).

    Knobs: ``weight`` = 1.0 (:math:`w_{max}`); ``rampup`` = 0.3 (budget fraction of the sigmoid
    ramp-up :math:`\exp(-5(1-t)^2)`); ``noise`` = 0.1 (σ of the input noise and ± range of the
    intensity scale/shift); ``on_labelled`` = true (also on labelled patches); ``batch_share`` = 0.5
    (share of the batch drawn from unannotated volumes, forwarded in the same pass; 0 = a full
    unannotated batch on top, in its own pass); ``detach_target`` = true (no gradient through
    view 2; false = symmetric, as in the paper).
    """

    name = "pi-model"
    paper = "Laine & Aila, Temporal ensembling for semi-supervised learning, ICLR 2017"
    summary = "Two perturbed views of each patch must agree (MSE of softmax)."
    defaults = {**SemiSupervisedMode.defaults, "batch_share": 0.5, "detach_target": True}

    def target_logits(self, trainer, x):
        return self.flipped_logits(trainer, plain_network(trainer), x, grad=not self.detach_target)


class TemporalEnsembling(SemiSupervisedMode):
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
    volumes get ensembles too; false = unannotated volumes only); ``batch_share`` = 0.0 (share of
    the patches drawn from unannotated volumes); ``alpha`` = 0.6 (ensemble momentum).
    """

    name = "temporal-ensembling"
    paper = "Laine & Aila, Temporal ensembling for semi-supervised learning, ICLR 2017"
    summary = "Targets are a per-voxel moving average of past predictions."
    defaults = {**SemiSupervisedMode.defaults, "alpha": 0.6}

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
        for _ in range(sampler.batch_sizes()[1]):
            case = self.pool[random_int(sampler.generator, len(self.pool))]
            index, valid = draw_patch_window(case.image.shape[1:], sampler.plan, sampler.generator)
            crops.append(pad_to_patch(case.image[(slice(None), *index)], sampler.plan.patch_size))
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
        return {"consistency_ensemble": self.ramp(trainer) * semi.soft_target_mse(probs, target, mask)}

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


class MeanTeacher(_ViewConsistencyMode):
    r"""Mean teacher (A. Tarvainen, H. Valpola, "Mean teachers are better role models", NeurIPS 2017;
    in medical segmentation e.g. Yu et al., MICCAI 2019).

    The teacher's weights are an EMA of the student's,
    :math:`\theta'_t = d_t \theta'_{t-1} + (1 - d_t)\theta_t` with :math:`d_t = \min(1 - 1/(t+1), d)`,
    and the student matches the teacher's prediction on a differently perturbed view:
    :math:`w(t)\,\mathrm{MSE}(s(f_\theta(\tilde x)), s(f_{\theta'}(\tilde x')))`, where
    :math:`\tilde x'` adds intensity jitter, noise and a random flip (undone on the logits).
    The teacher is saved in the checkpoint, so a resumed run continues exactly.

    Knobs: ``weight`` = 1.0; ``rampup`` = 0.3; ``noise`` = 0.1; ``on_labelled`` = true;
    ``batch_share`` = 0.5 (half of the planned batch from unannotated volumes, as in Yu et al. 2019;
    student and teacher each make one pass over the whole batch); ``decay`` = 0.99 (EMA decay
    :math:`d`; 0.999 for long runs); ``final_weights`` = "student" ("teacher": the saved model gets
    the teacher's weights, often slightly better).
    """

    name = "mean-teacher"
    paper = "Tarvainen & Valpola, Mean teachers are better role models, NeurIPS 2017"
    summary = "An EMA teacher's prediction on a perturbed view is the student's target."
    defaults = {**SemiSupervisedMode.defaults, "batch_share": 0.5, "decay": 0.99, "final_weights": "student"}
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
        self.teacher = copy.deepcopy(plain_network(trainer)).requires_grad_(False)
        if self._pending:
            self.teacher.load_state_dict(self._pending)
            self._pending = {}

    def target_logits(self, trainer, x):
        return self.flipped_logits(trainer, self.teacher, x, grad=False)

    def after_step(self, trainer) -> None:
        semi.ema_update(self.teacher, plain_network(trainer), semi.ema_decay(self.step, self.decay))
        self.step += 1

    def finish(self, trainer) -> None:
        if self.final_weights == "teacher" and self.teacher is not None:
            plain_network(trainer).load_state_dict(self.teacher.state_dict())

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


class VirtualAdversarial(PairedTermMode):
    r"""Virtual adversarial training (T. Miyato, S. Maeda, M. Koyama, S. Ishii, TPAMI 41(8), 2019).

    The prediction must not change under the small input perturbation that changes it most:
    :math:`w(t)\,\mathrm{KL}(s(f(x)) \,\|\, s(f(x + r_{adv})))`, with :math:`r_{adv} = \epsilon\, g/\lVert g\rVert`
    and :math:`g = \nabla_r \mathrm{KL}(s(f(x)) \| s(f(x + r)))|_{r = \xi d}` found by power iteration
    from a random :math:`d`.  Perturbation sizes are per-voxel RMS in normalised intensity units
    (a norm over the whole patch would make :math:`\epsilon` depend on the patch size).

    Knobs: ``weight`` = 1.0; ``rampup`` = 0.0 (VAT needs none); ``on_labelled`` = true; ``batch_share`` = 0.0;
    ``epsilon`` = 0.1 (RMS size of :math:`r_{adv}`); ``xi`` = 0.01 (RMS size of the finite-difference
    probe); ``power_iterations`` = 1.
    """

    name = "vat"
    paper = "Miyato et al., Virtual adversarial training, TPAMI 2019"
    summary = "Predictions must resist the worst small input perturbation (KL)."
    defaults = {"weight": 1.0, "rampup": 0.0, "on_labelled": True, "batch_share": 0.0, "epsilon": 0.1,
                "xi": 0.01, "power_iterations": 1}
    term = "vat"

    def check_options(self) -> None:
        super().check_options()
        self._require(self.epsilon > 0, "epsilon", "> 0")
        self._require(self.xi > 0, "xi", "> 0")
        self._require(self.power_iterations >= 1, "power_iterations", ">= 1")

    def _vat(self, trainer, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.detach()
        network = plain_network(trainer)
        d = semi.rms_normalise(torch.randn(x.shape, generator=trainer.sampler.generator).to(x.device, x.dtype))
        for _ in range(self.power_iterations):
            d = d.detach().requires_grad_(True)
            with torch.enable_grad():
                probe = run_network(trainer, network, x.detach() + self.xi * d)
                divergence = L.consistency_loss(probe, target, "kl")
                (grad,) = torch.autograd.grad(divergence, d)
            d = semi.rms_normalise(grad.detach())
        adversarial = trainer.forward(x.detach() + self.epsilon * d)
        return L.consistency_loss(adversarial, target, "kl")

    def labelled_loss(self, trainer, logits, batch, scope) -> torch.Tensor:
        return self._vat(trainer, batch.image, logits)

    def unlabelled_loss(self, trainer, batch) -> torch.Tensor:
        return self._vat(trainer, batch.image, self.fixed_logits(trainer, batch.image))


class MixMatch(SemiSupervisedMode):
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
    ``noise`` = 0.1; ``on_labelled`` = true (mix labelled patches in); ``batch_share`` = 0.0; ``temperature`` = 0.5 (T);
    ``alpha`` = 0.75 (Beta parameter); ``augmentations`` = 2 (views per unannotated patch).
    """

    name = "mixmatch"
    paper = "Berthelot et al., MixMatch, NeurIPS 2019"
    summary = "Sharpened guesses on augmented views + mixup of labelled and unlabelled patches."
    defaults = {**SemiSupervisedMode.defaults, "labelled_weight": 1.0, "temperature": 0.5, "alpha": 0.75,
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

    def _guess(self, trainer, image: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """``augmentations`` perturbed, flipped views of ``image`` and the shared guess, flipped like each view."""
        gen = trainer.sampler.generator
        views, flips = [], []
        for _ in range(self.augmentations):
            dims = semi.random_flip_dims(gen, image.ndim)
            view = self.perturb(trainer, image)
            views.append(torch.flip(view, dims) if dims else view)
            flips.append(dims)
        network = plain_network(trainer)
        with torch.no_grad():
            probs = [torch.softmax(run_network(trainer, network, v), 1) for v in views]
            mean = sum(torch.flip(p, d) if d else p for p, d in zip(probs, flips)) / len(probs)
            guess = semi.sharpen(mean, self.temperature)
        return views, [torch.flip(guess, dims) if dims else guess for dims in flips]

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
            views, guesses = self._guess(trainer, batch.image)
            images += views
            targets += guesses
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
            terms["mixmatch_unlabelled"] = self.ramp(trainer) * semi.soft_target_mse(probs, mixed_target[n_labelled:])
        return terms
