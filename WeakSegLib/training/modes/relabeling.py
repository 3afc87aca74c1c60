"""Relabeling modes: rounds that turn the model's predictions into the next stage's voxel labels.

SMILEr for partial labels (Petit et al. 2018), class activation maps for image tags (Zhou et al.
2016) and recursive box rounds (Khoreva et al. 2017).
"""

from __future__ import annotations

import logging
import math
from typing import Any

import torch
import torch.nn.functional as F

from WeakSegLib.data.annotation import UNKNOWN
from WeakSegLib.training import semi
from WeakSegLib.training.data import slice_tag_matrix
from WeakSegLib.training.modes.base import (
    TrainingMode,
    grid_logits,
    grid_probabilities,
    progress_after_step,
    rebuild_sampler,
    stack_volume,
)
from WeakSegLib.transforms.augmentation import random_int

logger = logging.getLogger(__name__)


class RelabelingMode(TrainingMode):
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
        """Budget fractions at which the rounds run; default: ``rounds`` rounds at (k + 1) / (rounds + 1)."""
        return [(k + 1) / (self.rounds + 1) for k in range(self.rounds)]

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
        progress = progress_after_step(trainer)
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


class Smiler(RelabelingMode):
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

    def eligible(self, case) -> bool:
        return case.labels is not None and not bool(case.complete[1:].all())

    def no_case_message(self) -> str:
        return ("Mode 'smiler' relabels volumes with voxel labels and incomplete classes (partial labels, "
                "scribbles); no training case has them.")

    def gamma(self, round_index: int) -> float:
        return semi.smiler_threshold(round_index, self.gamma_start, self.gamma_step, self.gamma_min)

    def relabel(self, trainer, case, round_index: int):
        probs = grid_probabilities(trainer, case.image)
        labels, added = semi.smiler_relabel(case.labels, probs, case.complete.cpu(), self.gamma(round_index))
        return labels, {"added_voxels": added}

    def round_info(self, round_index: int) -> dict:
        return {"gamma": round(self.gamma(round_index), 6)}


class SelfTraining(RelabelingMode):
    r"""Self-training rounds on the unannotated volumes (offline pseudo-labels: D.-H. Lee, "Pseudo-label",
    ICML-W 2013; in cardiac MRI W. Bai et al., "Semi-supervised learning for network-based cardiac MR
    image segmentation", MICCAI 2017).

    The budget is split into ``rounds`` + 1 stages.  The first stage trains on the annotated volumes
    alone; after each stage the current network predicts every unannotated volume (sliding window
    on the network grid) and its confident voxels become that volume's labels for the next stage:
    :math:`y_p = \arg\max_c s_{c,p}` where :math:`\max_c s_{c,p} \ge` ``threshold``, unknown
    elsewhere (partial cross-entropy then learns from them like any voxel label).  Each round
    recomputes the labels from the current model.  Unlike ``pseudo-label`` (a teacher pass on every
    batch), a round costs one prediction per unannotated volume and every step afterwards costs what
    a labelled-only step costs.

    Knobs: ``rounds`` = 1; ``threshold`` = 0.9 (confidence a voxel's label needs).
    """

    name = "self-training"
    family = "semi-supervised"
    paper = ("Lee, Pseudo-label, ICML-W 2013; Bai et al., Semi-supervised learning for network-based "
             "cardiac MR image segmentation, MICCAI 2017")
    summary = "Rounds: confident predictions on the unannotated volumes become their labels."
    defaults = {"rounds": 1, "threshold": 0.9}

    def check_options(self) -> None:
        self._require(self.rounds >= 1, "rounds", ">= 1")
        self._require(0 < self.threshold <= 1, "threshold", "in (0, 1]")

    def eligible(self, case) -> bool:
        return bool(case.unlabelled)

    def no_case_message(self) -> str:
        return ("Mode 'self-training' needs unannotated volumes (cases without an annotation in dataset.json), "
                "but every training case is annotated.")

    def relabel(self, trainer, case, round_index: int):
        confidence, labels = grid_probabilities(trainer, case.image).max(0)
        labels = torch.where(confidence >= self.threshold, labels, torch.full_like(labels, UNKNOWN))
        known = labels != UNKNOWN
        return labels, {"labelled": int(known.sum()), "object_voxels": int((labels > 0).sum()),
                        "voxels": int(labels.numel())}

    def round_info(self, round_index: int) -> dict:
        return {"threshold": self.threshold}


class ClassActivationMaps(RelabelingMode):
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

    def classification_loss(self, volume: torch.Tensor, case) -> torch.Tensor | None:
        """Multi-label BCE of the pooled logits against the tags; ``volume`` is (1, K, *spatial).

        Slice tags score each z slice of the volume batch (2D: the stacked slices; 3D: the volume's
        slices, resized with it).
        """
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
        if case.slice_tags:
            scores = self.pool(volume[0].transpose(0, 1), (2, 3))                # (z, K)
            tags = slice_tag_matrix(case.slice_tags, case.image.shape[1], scores.shape[0], k, volume.device)
            tags[:, 0] = -1
            target = tags.clamp(min=0).to(scores.dtype)
            known = tags >= 0
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
        case = self.tagged[random_int(sampler.generator, len(self.tagged))]
        batch = sampler.volume_batch(case).to(trainer.device)
        volume = stack_volume(trainer.forward(batch.image), batch)
        loss = self.classification_loss(volume, case)
        return {} if loss is None else {"cam_classification": self.weight * loss}

    def status(self, case, k: int) -> torch.Tensor:
        """(K, z, 1, 1) tag status per class and slice: 1 present, 0 absent, -1 unknown."""
        z = case.image.shape[1]
        status = torch.full((k, z, 1, 1), -1, dtype=torch.long)
        for c, present in case.tags.items():
            status[c] = int(present)
        per_slice = slice_tag_matrix(case.slice_tags, z, z, k).t()[:, :, None, None]          # (K, z, 1, 1)
        return torch.where(per_slice >= 0, per_slice, status)

    def relabel(self, trainer, case, round_index: int):
        logits = grid_logits(trainer, case.image).cpu()
        cam = semi.normalise_cam(logits)
        max_voxels = None
        if self.use_sizes and case.size_bounds:
            max_voxels = {c: lo / case.voxel_ml for c, (lo, _hi) in case.size_bounds.items() if c >= 1}
        labels = semi.cam_pseudo_labels(cam, self.status(case, logits.shape[0]), self.fg_threshold,
                                        self.bg_threshold, max_voxels)
        return labels, {"seed_voxels": int((labels > 0).sum()), "background_voxels": int((labels == 0).sum())}


class BoxRounds(RelabelingMode):
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

    def eligible(self, case) -> bool:
        return bool(case.boxes)

    def no_case_message(self) -> str:
        return "Mode 'box-rounds' needs boxes, but no training case has a box."

    def relabel(self, trainer, case, round_index: int):
        probs = grid_probabilities(trainer, case.image)
        absent = [c for c, present in case.tags.items() if not present]
        labels = semi.box_round_labels(probs, case.boxes, absent, self.min_confidence, self.min_fill,
                                       self.core_scale, self.background_in_box)
        return labels, {"object_voxels": int((labels > 0).sum())}
