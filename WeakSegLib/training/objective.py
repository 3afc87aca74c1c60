"""The training objective, assembled from the annotations that are present.

=============================  ===============================================================
annotation                     terms (weights in :class:`~WeakSegLib.config.LossWeights`)
=============================  ===============================================================
scribbles / points             partial CE + partial Dice on annotated voxels; CE on random-walker
                               propagated labels (down-weighted, confident voxels only)
complete masks of some classes term "smile": marginal CE + Dice on the complete classes (default) or
                               SMILE's per-class binary losses (``TrainConfig.partial_label_loss``)
every class complete           Dice + CE (full supervision)
size range (mL)                size constraint a <= sum(p) <= b (penalty or log-barrier)
tag present / absent           inclusion sum(p) >= min / suppression sum(p) <= 0 (also per slice)
box                            emptiness outside the box + tightness inside (+ fill fraction bounds);
                               background labels outside every box when all classes are boxed
dataset class-ratio prior      KL(predicted proportions || prior)
centroid range                 centroid constraint (spacing-aware, mm)
unlabelled voxels              entropy minimisation (weight 0 by default)
scribbles / points (image)     pairwise CRF loss: boundaries on intensity edges (Tang et al. 2018)
forbidden adjacency            non-adjacency prior (Ganaye et al.)
=============================  ===============================================================

Voxel-wise terms run on patch batches; global terms on volume batches (see
:mod:`WeakSegLib.training.data`), so a volume-level constraint sees the whole volume.
"""

from __future__ import annotations

import logging
import math

import torch

from WeakSegLib import losses as L
from WeakSegLib.config import TrainConfig
from WeakSegLib.data.annotation import UNKNOWN
from WeakSegLib.training.data import Batch

logger = logging.getLogger(__name__)


class Objective:
    """Computes ``(total, terms, violations)`` for a batch; which terms exist follows the data."""

    def __init__(self, config: TrainConfig, num_classes: int, class_ratio_prior: list[float] | None = None):
        self.config = config
        self.weights = config.weights
        self.num_classes = num_classes
        self.method = config.constraint_method
        self.prior = None if class_ratio_prior is None else torch.tensor(class_ratio_prior, dtype=torch.float32)
        self.t = config.barrier_t0
        self.spacing_zyx: tuple[float, ...] | None = None    # network grid spacing, set by the trainer

    @property
    def uses_box_fill(self) -> bool:
        return self.config.box_fill_bounds is not None and self.weights.box_fill > 0

    # ------------------------------------------------------------------ description
    def describe(self, cases) -> list[str]:
        """Names of the terms this objective will use on these prepared cases."""
        w = self.weights
        if self.config.objective == "full":
            return ["dice_ce"]
        if self.config.objective == "pce":
            return ["partial_ce"]
        names = set()
        for c in cases:
            if c.fully_annotated:
                names.add("dice_ce")
            elif c.complete.any():
                names.add("smile")
            elif c.has_voxel_labels:
                names |= {"partial_ce", "partial_dice"}
                if c.pseudo is not None and w.propagated > 0:
                    names.add("propagated")
                if w.crf > 0:
                    names.add("crf")
            if c.size_bounds:
                names.add("size")
            if c.tags or c.slice_tags:
                names.add("tags")
            if c.boxes:
                names |= {"box_emptiness", "box_tightness"}
                if self.uses_box_fill:
                    names.add("box_fill")
            if c.centroid_bounds:
                names.add("centroid")
        if self.prior is not None and w.class_ratio > 0:
            names.add("class_ratio")
        if w.entropy > 0:
            names.add("entropy")
        if self.config.forbidden_adjacency and w.non_adjacency > 0:
            names.add("non_adjacency")
        return sorted(names)

    # ------------------------------------------------------------------ voxel-wise terms
    def voxel_terms(self, logits: torch.Tensor, batch: Batch) -> dict[str, torch.Tensor]:
        w = self.weights
        terms: dict[str, torch.Tensor] = {}
        labels = batch.labels
        if labels is None:
            return terms
        if self.config.objective == "full":
            terms["dice_ce"] = w.full * L.dice_ce_loss(logits, labels, ignore_index=UNKNOWN)
            return terms
        if self.config.objective == "pce":
            terms["partial_ce"] = L.partial_cross_entropy(logits, labels, ignore_index=UNKNOWN)
            return terms
        complete = batch.complete
        full = complete[:, 1:].all(1) & complete[:, 0]
        partial = complete.any(1) & ~full
        scribble = ~complete.any(1)
        if full.any():
            terms["dice_ce"] = w.full * L.dice_ce_loss(logits[full], labels[full], ignore_index=UNKNOWN)
        if partial.any():
            if self.config.partial_label_loss == "marginal":
                terms["smile"] = w.smile * L.marginal_dice_ce_loss(logits[partial], labels[partial],
                                                                   complete[partial], ignore_index=UNKNOWN)
            else:
                targets, weights = L.smile_targets(labels[partial], complete[partial], ignore_index=UNKNOWN)
                terms["smile"] = w.smile * L.smile_loss(logits[partial], targets, weights, activation="softmax")
        if scribble.any() and bool((labels[scribble] != UNKNOWN).any()):
            lg, lb = logits[scribble], labels[scribble]
            terms["partial_ce"] = w.partial_ce * L.partial_cross_entropy(lg, lb, ignore_index=UNKNOWN)
            if w.partial_dice > 0:
                terms["partial_dice"] = w.partial_dice * L.partial_dice_loss(lg, lb, ignore_index=UNKNOWN)
            if batch.pseudo is not None and w.propagated > 0:
                terms["propagated"] = w.propagated * L.partial_cross_entropy(lg, batch.pseudo[scribble],
                                                                             ignore_index=UNKNOWN)
            if w.crf > 0:
                terms["crf"] = w.crf * self.crf(lg, batch.image[scribble])
        if w.entropy > 0:
            unknown = labels == UNKNOWN
            if unknown.any():
                terms["entropy"] = w.entropy * L.entropy_loss(logits, mask=unknown)
        if self.config.forbidden_adjacency and w.non_adjacency > 0:
            pairs = [tuple(p) for p in self.config.forbidden_adjacency]
            terms["non_adjacency"] = w.non_adjacency * L.non_adjacency_loss(logits, pairs)
        return terms

    def crf(self, logits: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """Pairwise CRF loss on (B, C, *spatial) logits of the network grid (spacing in mm when known)."""
        ndim = logits.ndim - 2
        radius = self.config.crf_radius or (2 if ndim == 2 else 1)
        spacing = None if self.spacing_zyx is None else list(self.spacing_zyx)[-ndim:]
        return L.crf_loss(logits, image, radius=radius, sigma_intensity=self.config.crf_sigma_intensity,
                          sigma_spatial=self.config.crf_sigma_spatial_mm if spacing else 2.0, spacing=spacing)

    # ------------------------------------------------------------------ global terms
    def global_terms(self, logits: torch.Tensor, batch: Batch) -> tuple[dict, dict]:
        """Terms on a volume batch.  ``logits``: (z, C, y, x) slices (2D) or (1, C, z, y, x)."""
        w = self.weights
        case = batch.case
        terms: dict[str, torch.Tensor] = {}
        violations: dict[str, float] = {}
        if self.config.objective != "auto" or case is None:
            return terms, violations
        slices = logits
        vol = logits.permute(1, 0, 2, 3).unsqueeze(0) if batch.stack_slices else logits
        k = self.num_classes
        method, t = self.method, self.t
        if case.size_bounds or case.tags:
            probs = torch.softmax(vol.float(), 1)
            sizes = L.soft_size(probs)                                  # (1, K) soft sizes in voxels
            n_voxels = float(vol[0, 0].numel())
        if case.size_bounds:
            lower = torch.zeros(1, k, device=vol.device)
            upper = torch.full((1, k), n_voxels, device=vol.device)
            active = torch.zeros(1, k, dtype=torch.bool, device=vol.device)
            for c, (lo, hi) in case.size_bounds.items():
                lower[0, c] = lo / batch.voxel_ml
                upper[0, c] = min(hi / batch.voxel_ml, n_voxels)
                active[0, c] = True
            terms["size"] = w.size * L.relative_bound_loss(sizes, lower, upper, active, n_voxels,
                                                             method=self.method, t=self.t)
            bad = ((sizes.detach() < lower) | (sizes.detach() > upper)) & active
            violations["size"] = float(bad.sum()) / float(active.sum())
        if case.tags:
            tags = torch.full((1, k), -1, dtype=torch.long, device=vol.device)
            for c, present in case.tags.items():
                tags[0, c] = int(present)
            min_size = float(self.config.tag_min_size_voxels)
            lower = torch.where(tags == 1, torch.full_like(sizes, min_size), torch.zeros_like(sizes))
            upper = torch.where(tags == 0, torch.zeros_like(sizes), torch.full_like(sizes, n_voxels))
            terms["tags"] = w.tags * L.relative_bound_loss(sizes, lower, upper, tags >= 0, n_voxels,
                                                             method=self.method, t=self.t)
            known = tags >= 0
            d = sizes.detach()
            bad = known & (((tags == 1) & (d < min_size)) | ((tags == 0) & (d >= 0.5)))
            violations["tags"] = float(bad.sum()) / float(known.sum())
        if case.slice_tags and batch.stack_slices:
            tags = torch.full((slices.shape[0], k), -1, dtype=torch.long, device=vol.device)
            for c, per_slice in case.slice_tags.items():
                for s, present in per_slice.items():
                    tags[s, c] = int(present)
            slice_sizes = L.soft_size(torch.softmax(slices.float(), 1))     # (z, K)
            n_slice = float(slices[0, 0].numel())
            min_size = float(self.config.tag_min_size_voxels)
            lower = torch.where(tags == 1, torch.full_like(slice_sizes, min_size), torch.zeros_like(slice_sizes))
            upper = torch.where(tags == 0, torch.zeros_like(slice_sizes), torch.full_like(slice_sizes, n_slice))
            value = L.relative_bound_loss(slice_sizes, lower, upper, tags >= 0, n_slice, method=self.method, t=self.t)
            terms["tags"] = terms.get("tags", 0) + w.tags * value
        if case.boxes:
            boxes = self._boxes_on_batch(case.boxes, batch, vol.shape[2:])
            if boxes:
                terms["box_emptiness"] = w.box_emptiness * L.box_emptiness_loss(vol, [boxes], method=method, t=t)
                terms["box_tightness"] = w.box_tightness * L.box_tightness_loss(vol, [boxes], method=method, t=t,
                                                                               axis=0, granularity="auto")
                if self.uses_box_fill:
                    terms["box_fill"] = w.box_fill * self._box_fill(vol, boxes)
        if case.centroid_bounds:
            lower = torch.zeros(1, k, 3)
            upper = torch.zeros(1, k, 3)
            active = torch.zeros(1, k, dtype=torch.bool)
            off = torch.tensor([0.0, batch.crop_offset[0], batch.crop_offset[1]])
            sp = torch.tensor(batch.spacing_zyx)
            for c, (lo, hi) in case.centroid_bounds.items():
                # Bounds are in the case's network-grid mm frame; shift by the crop of a 2D volume batch.
                lower[0, c] = torch.tensor(lo) - off * sp
                upper[0, c] = torch.tensor(hi) - off * sp
                active[0, c] = True
            terms["centroid"] = w.moments * L.centroid_constraint_loss(
                vol, lower.to(vol.device), upper.to(vol.device), active.to(vol.device),
                spacing=list(batch.spacing_zyx), method=method, t=t)
        if self.prior is not None and w.class_ratio > 0:
            terms["class_ratio"] = w.class_ratio * L.class_ratio_kl_loss(vol, self.prior.to(vol.device))
        return terms, violations

    def _box_fill(self, vol: torch.Tensor, boxes: list) -> torch.Tensor:
        """``lo * |box| <= sum of p_c in the box <= hi * |box|`` for every box, as relative violations.

        The same normalisation as the size ranges (:func:`~WeakSegLib.losses.relative_bound_loss`): a box
        filled to half of its lower bound costs 0.25 whatever its size, so the default weight means the
        same for small and large boxes (:func:`~WeakSegLib.losses.box_size_loss` normalises by the box
        volume instead, which makes a lower bound of 0.15 worth 0.02 at most: too weak to stop an empty
        prediction).
        """
        lo, hi = (float(v) for v in self.config.box_fill_bounds)
        probs = torch.softmax(vol.float(), 1)
        n_voxels = float(vol[0, 0].numel())
        sizes, lower, upper = [], [], []
        for c, start, stop in boxes:
            area = float(math.prod(b - a for a, b in zip(start, stop)))
            sizes.append(probs[(0, c, *(slice(a, b) for a, b in zip(start, stop)))].sum())
            lower.append(lo * area)
            upper.append(hi * area if hi < 1.0 else n_voxels)      # n_voxels: no upper bound
        sizes_t = torch.stack(sizes)[None]
        lower_t = torch.tensor([lower], device=vol.device)
        upper_t = torch.tensor([upper], device=vol.device)
        active = torch.ones_like(sizes_t, dtype=torch.bool)
        return L.relative_bound_loss(sizes_t, lower_t, upper_t, active, n_voxels, method=self.method, t=self.t)

    def class_ratio_term(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        """Class-ratio prior on a batch that is not a volume batch (e.g. when no case has global terms)."""
        if self.config.objective != "auto" or self.prior is None or self.weights.class_ratio <= 0:
            return {}
        return {"class_ratio": self.weights.class_ratio * L.class_ratio_kl_loss(logits, self.prior.to(logits.device))}

    @staticmethod
    def _boxes_on_batch(boxes, batch: Batch, spatial) -> list:
        out = []
        oy, ox = batch.crop_offset
        for c, start, stop in boxes:
            if batch.stack_slices:
                s = (start[0], start[1] - oy, start[2] - ox)
                e = (stop[0], stop[1] - oy, stop[2] - ox)
            else:
                s = tuple(int(a * f) for a, f in zip(start, batch.box_scale))
                e = tuple(max(int(round(b * f)), a + 1) for a, b, f in zip(s, stop, batch.box_scale))
            s = tuple(max(0, min(a, n - 1)) for a, n in zip(s, spatial))
            e = tuple(max(a + 1, min(b, n)) for a, b, n in zip(s, e, spatial))
            out.append((c, s, e))
        return out
