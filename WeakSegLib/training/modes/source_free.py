"""Source-free domain adaptation: fit a trained model to a new site's unannotated volumes."""

from __future__ import annotations

import logging

import torch

from WeakSegLib import losses as L
from WeakSegLib.training.modes.base import TrainingMode, stack_volume
from WeakSegLib.transforms.augmentation import random_int

logger = logging.getLogger(__name__)


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

    ``ratio_loss`` = "relative" replaces the KL by the library's size-range penalty on each
    foreground class's proportion, :math:`\tau_c (1 \pm m)` with :math:`m` = ``ratio_margin``
    (:func:`~WeakSegLib.losses.size.relative_bound_loss`, Kervadec et al. 2019).  Why: in the KL a
    small structure weighs its share of the volume, so a class of 1 % of the voxels that vanishes
    costs almost nothing next to the entropy; relative violations weigh every class alike.

    ``parameters`` = "norm" (the default) adapts only the affine parameters of the normalisation
    layers (TENT: D. Wang et al., "Tent: fully test-time adaptation by entropy minimization", ICLR
    2021); every other weight stays the source model's.  "all" adapts every weight, as Bateson et al.
    do; on ACDC (end-diastole -> end-systole) it erased most of the right ventricle (validation Dice
    0.733 -> 0.566) where "norm" kept it (0.733 -> 0.733).

    Knobs: ``entropy_weight`` = 1.0 (:math:`\lambda_H`); ``ratio_weight`` = 1.0
    (:math:`\lambda_{KL}`); ``class_ratio`` = null (the prior, one value per class, background first;
    null = the dataset's ``priors.class_ratio``); ``ratio_loss`` = "kl" ("kl" or "relative");
    ``ratio_margin`` = 0.2 (:math:`m`, "relative" only); ``parameters`` = "norm" ("norm" or "all").
    Use a small learning rate (e.g. 5e-4) in the config: the model is already trained.
    """

    name = "source-free"
    family = "domain adaptation"
    paper = "Bateson et al., Source-relaxed domain adaptation for image segmentation, MICCAI 2020"
    summary = "Adapt a trained model to a new site: entropy + class-ratio prior on unannotated volumes."
    defaults = {"entropy_weight": 1.0, "ratio_weight": 1.0, "class_ratio": None, "ratio_loss": "kl",
                "ratio_margin": 0.2, "parameters": "norm"}
    choices = {"ratio_loss": ("kl", "relative"), "parameters": ("all", "norm")}

    def check_options(self) -> None:
        self._require(self.entropy_weight >= 0, "entropy_weight", ">= 0")
        self._require(self.ratio_weight >= 0, "ratio_weight", ">= 0")
        self._require(0 <= self.ratio_margin < 1, "ratio_margin", "in [0, 1)")
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
        if self.parameters == "norm":        # TENT: only the normalisation layers' scale and shift learn
            frozen = 0
            for module in trainer.network.modules():
                is_norm = isinstance(module, (torch.nn.modules.batchnorm._NormBase, torch.nn.GroupNorm,
                                              torch.nn.LayerNorm))
                for p in module.parameters(recurse=False):
                    p.requires_grad_(is_norm)
                    frozen += 0 if is_norm else p.numel()
            logger.info("Mode 'source-free': %d weights frozen, only normalisation parameters adapt", frozen)
        if not trainer.config.init_model:
            logger.warning("Mode 'source-free' without init_model: adapting a randomly initialised network; "
                           "set init_model to the trained model's folder.")

    def unlabelled_terms(self, trainer) -> dict:
        sampler = trainer.sampler
        case = self.pool[random_int(sampler.generator, len(self.pool))]
        batch = sampler.volume_batch(case).to(trainer.device)
        volume = stack_volume(trainer.forward(batch.image), batch)
        terms = {}
        if self.entropy_weight > 0:
            terms["entropy_unlabelled"] = self.entropy_weight * L.entropy_loss(volume)
        if self.ratio_weight > 0:
            terms["class_ratio_unlabelled"] = self.ratio_weight * self.ratio_term(volume)
        return terms

    def ratio_term(self, volume: torch.Tensor) -> torch.Tensor:
        """The class-ratio prior's loss on the logits (1, K, *spatial) of one volume (unweighted)."""
        prior = self.prior.to(volume.device)
        if self.ratio_loss == "kl":
            return L.class_ratio_kl_loss(volume, prior)
        sizes = L.soft_size(torch.softmax(volume, 1))[:, 1:]               # (1, K-1) voxels
        voxels = float(volume[0, 0].numel())
        share = (prior / prior.sum())[1:] * voxels
        return L.relative_bound_loss(sizes, share * (1 - self.ratio_margin), share * (1 + self.ratio_margin),
                                     value_max=voxels)
