"""Self-training semi-supervised modes: the network's own confident predictions become targets.

Entropy minimisation (Grandvalet & Bengio 2005, the soft form), confidence-thresholded
pseudo-labels (Lee 2013) and FixMatch (Sohn et al. 2020).  On labelled patches each acts on the
unannotated voxels only.
"""

from __future__ import annotations

import torch

from WeakSegLib import losses as L
from WeakSegLib.training import semi
from WeakSegLib.training.modes.base import UnknownVoxelMode


def _confident_targets(logits: torch.Tensor, threshold: float, scope: torch.Tensor | None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """Arg-max targets (B, *spatial) of ``logits`` and the mask of voxels in ``scope`` with p >= ``threshold``."""
    conf, target = torch.softmax(logits.detach(), 1).max(1)
    mask = conf >= threshold
    if scope is not None:
        mask = mask & scope
    return target, mask


class EntropyMinimisation(UnknownVoxelMode):
    r"""Entropy minimisation (Y. Grandvalet, Y. Bengio, "Semi-supervised learning by entropy minimization",
    NeurIPS 2005).

    :math:`w(t)\,\frac{1}{|\Omega|}\sum_p -\sum_c s_{c,p}\log s_{c,p}` on the patches of unannotated
    volumes and, with ``on_labelled``, on the unannotated voxels of labelled patches: decision
    boundaries move to low-density regions.  (``LossWeights.entropy`` adds the same term on
    labelled patches only, from the objective.)

    Knobs: ``weight`` = 0.1; ``rampup`` = 0.3; ``on_labelled`` = true; ``batch_share`` = 0.0.
    """

    name = "entropy-min"
    paper = "Grandvalet & Bengio, Semi-supervised learning by entropy minimization, NeurIPS 2005"
    summary = "Confident (low-entropy) predictions on unannotated voxels."
    defaults = {"weight": 0.1, "rampup": 0.3, "on_labelled": True, "batch_share": 0.0}
    term = "entropy_min"

    def labelled_loss(self, trainer, logits, batch, scope) -> torch.Tensor:
        return L.entropy_loss(logits, mask=scope)

    def unlabelled_loss(self, trainer, batch) -> torch.Tensor:
        return L.entropy_loss(trainer.forward(batch.image))


class PseudoLabel(UnknownVoxelMode):
    r"""Confidence-thresholded pseudo-labels (D.-H. Lee, "Pseudo-label", ICML Workshop 2013; the
    threshold as in FixMatch and most self-training since).

    Voxels whose prediction is confident become their own targets:
    :math:`w(t)\,\frac{1}{|\Omega|}\sum_p 1(\max_c s_{c,p} \ge \tau)\,\mathrm{CE}(f(x)_p, \arg\max_c s_{c,p})`
    (normalised by all voxels in scope, so few confident voxels give a small loss), on unannotated
    patches and, with ``on_labelled``, on the unannotated voxels of labelled patches.

    Knobs: ``weight`` = 1.0; ``rampup`` = 0.3; ``on_labelled`` = true; ``batch_share`` = 0.0; ``threshold`` = 0.9 (τ).
    """

    name = "pseudo-label"
    paper = "Lee, Pseudo-label, ICML Workshop on Challenges in Representation Learning 2013"
    summary = "Confident predictions (p >= threshold) become cross-entropy targets."
    defaults = {"weight": 1.0, "rampup": 0.3, "on_labelled": True, "batch_share": 0.0, "threshold": 0.9}
    term = "pseudo_label"

    def check_options(self) -> None:
        super().check_options()
        self._require(0 < self.threshold <= 1, "threshold", "in (0, 1]")

    def _loss(self, logits, scope=None):
        target, mask = _confident_targets(logits, self.threshold, scope)
        return semi.masked_cross_entropy(logits, target, mask, scope)

    def labelled_loss(self, trainer, logits, batch, scope) -> torch.Tensor:
        return self._loss(logits, scope)

    def unlabelled_loss(self, trainer, batch) -> torch.Tensor:
        return self._loss(trainer.forward(batch.image))


class FixMatch(UnknownVoxelMode):
    r"""FixMatch (K. Sohn et al., "FixMatch: simplifying semi-supervised learning with consistency and
    confidence", NeurIPS 2020).

    The prediction on a weakly augmented view, where confident, is the hard target of the
    prediction on a strongly augmented view:
    :math:`w\,\frac{1}{|\Omega|}\sum_p 1(\max q_p \ge \tau)\,\mathrm{CE}(f(\mathcal A(x))_p, \arg\max q_p)`,
    :math:`q = s(f(\alpha(x)))`.  Weak = the sampler's augmentation (flips, small rotation/scaling,
    mild intensity); strong = on top of it, a large intensity scale/shift, noise and cutout
    (geometry-preserving, so targets stay aligned — RandAugment's colour operations, for
    medical intensities).

    Knobs: ``weight`` = 1.0; ``rampup`` = 0.0; ``on_labelled`` = true; ``batch_share`` = 0.0; ``threshold`` = 0.95 (τ);
    ``strength`` = 0.3 (± range of the strong intensity scale and shift); ``noise`` = 0.1 (σ of
    the strong noise); ``cutout`` = 0.25 (side of the cut box as a fraction of each patch side;
    0 = none).
    """

    name = "fixmatch"
    paper = "Sohn et al., FixMatch, NeurIPS 2020"
    summary = "Confident weak-view predictions supervise a strongly augmented view."
    defaults = {"weight": 1.0, "rampup": 0.0, "on_labelled": True, "batch_share": 0.0, "threshold": 0.95,
                "strength": 0.3, "noise": 0.1, "cutout": 0.25}
    term = "fixmatch"

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
        target, mask = _confident_targets(weak_logits, self.threshold, scope)
        strong_logits = trainer.forward(self.strong(trainer, x))
        return semi.masked_cross_entropy(strong_logits, target, mask, scope)

    def labelled_loss(self, trainer, logits, batch, scope) -> torch.Tensor:
        return self._loss(trainer, logits, batch.image, scope)

    def unlabelled_loss(self, trainer, batch) -> torch.Tensor:
        return self._loss(trainer, self.fixed_logits(trainer, batch.image), batch.image)
