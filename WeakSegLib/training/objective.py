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
from WeakSegLib.training.data import Batch, slice_tag_matrix

logger = logging.getLogger(__name__)


class Objective:
    """Computes ``(total, terms, violations)`` for a batch; which terms exist follows the data."""

    def __init__(self, config: TrainConfig, num_classes: int, class_ratio_prior: list[float] | None = None,
                 class_names: list[str] | None = None):
        self.config = config
        self.weights = config.weights
        self.num_classes = num_classes
        self.class_names = list(class_names or [])
        self.method = config.constraint_method
        self.prior = None if class_ratio_prior is None else torch.tensor(class_ratio_prior, dtype=torch.float32)
        # The log-barrier's t grows every epoch (Kervadec et al. 2022), capped; the penalty ignores it.
        self.barrier = L.LogBarrierSchedule(config.barrier_t0, config.barrier_factor,
                                            max(config.barrier_t_max, config.barrier_t0))
        self.violations: dict[str, float] = {}    # the latest violation of each prior and class
        self.spacing_zyx: tuple[float, ...] | None = None    # network grid spacing, set by the trainer

    @property
    def t(self) -> float:
        """The log-barrier parameter now."""
        return self.barrier.t

    @t.setter
    def t(self, value: float) -> None:
        self.barrier.load_state_dict({**self.barrier.state_dict(), "t": float(value)})

    def needs_volume_batch(self, case) -> bool:
        """Whether a prepared case has a global term with a non-zero weight (else volume batches of it are idle)."""
        if self.config.objective != "auto":
            return False
        w = self.weights
        boxes = bool(case.boxes) and case.box_terms and (
            w.box_emptiness > 0 or w.box_tightness > 0 or w.box_region > 0 or w.box_mil > 0
            or self.uses_box_fill)
        return bool((case.size_bounds and w.size > 0) or ((case.tags or case.slice_tags) and w.tags > 0)
                    or (case.centroid_bounds and w.moments > 0) or boxes)

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
                if not c.has_voxel_labels and w.size_proposal > 0:
                    names.add("size_proposal")
            if c.tags or c.slice_tags:
                names.add("tags")
            if c.boxes and c.box_terms:
                names |= {n for n in ("box_emptiness", "box_tightness", "box_mil", "box_region") if getattr(w, n) > 0}
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
            # No voxel label (tags, sizes): entropy minimisation makes the soft sizes the constraints
            # meet those of confident masks, not of probabilities spread thin over the volume.
            if w.entropy > 0 and self.config.objective == "auto":
                terms["entropy"] = w.entropy * L.entropy_loss(logits)
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
        """Terms on a volume batch.  ``logits``: (z, C, y, x) slices (2D) or (1, C, z, y, x).

        Returns ``(terms, violations)``; the violations (also kept in :attr:`violations`) are per prior and
        class, ``"size/LV": 0.12`` = the size of LV is 12 % outside its range (relative to the violated bound,
        as the losses measure it; 0 = satisfied).
        """
        w = self.weights
        case = batch.case
        terms: dict[str, torch.Tensor] = {}
        violations: dict[str, float] = {}
        if self.config.objective != "auto" or case is None:
            return terms, violations
        vol = logits.permute(1, 0, 2, 3).unsqueeze(0) if batch.stack_slices else logits
        k = self.num_classes
        method, t = self.method, self.t
        n_voxels = float(vol[0, 0].numel())
        # (z, K) slice tags on the volume batch's z slices (a 3D batch is resized along z with the volume).
        slice_tags = (slice_tag_matrix(case.slice_tags, case.image.shape[1], vol.shape[2], k, vol.device)
                      if case.slice_tags else None)
        if case.size_bounds or case.tags:
            sizes = L.soft_size(torch.softmax(vol.float(), 1)).detach()     # (1, K) soft sizes in voxels
        if case.size_bounds:
            lower = torch.zeros(1, k, device=vol.device)
            upper = torch.full((1, k), math.inf, device=vol.device)
            active = torch.zeros(1, k, dtype=torch.bool, device=vol.device)
            for c, (lo, hi) in case.size_bounds.items():
                lower[0, c] = lo / batch.voxel_ml
                upper[0, c] = hi / batch.voxel_ml
                active[0, c] = True
            terms["size"] = w.size * L.size_constraint_loss(vol.float(), lower, upper, active, method=method, t=t)
            self._record(violations, "size", sizes, lower, upper, active, n_voxels)
            if batch.labels is None and w.size_proposal > 0:
                terms["size_proposal"] = w.size_proposal * L.size_proposal_loss(
                    vol, lower[0], upper[0], active[0], self._allowed(case, vol, slice_tags))
        if case.tags:
            tags = torch.full((1, k), -1, dtype=torch.long, device=vol.device)
            for c, present in case.tags.items():
                tags[0, c] = int(present)
            min_size = float(self.config.tag_min_size_voxels)
            terms["tags"] = w.tags * L.tag_constraint_loss(vol.float(), tags, min_size=min_size, method=method, t=t)
            lower = torch.where(tags == 1, torch.full_like(sizes, min_size), torch.zeros_like(sizes))
            upper = torch.where(tags == 0, torch.zeros_like(sizes), torch.full_like(sizes, math.inf))
            self._record(violations, "tags", sizes, lower, upper, tags >= 0, n_voxels)
        if slice_tags is not None:
            slices = vol[0].transpose(0, 1).float()       # (z, K, y, x): the stacked 2D slices or the 3D volume's
            min_size = float(self.config.tag_min_size_voxels)
            value = L.tag_constraint_loss(slices, slice_tags, min_size=min_size, method=method, t=t)
            terms["tags"] = terms.get("tags", 0) + w.tags * value
            slice_sizes = L.soft_size(torch.softmax(slices.detach(), 1))     # (z, K)
            lower = torch.where(slice_tags == 1, torch.full_like(slice_sizes, min_size), torch.zeros_like(slice_sizes))
            upper = torch.where(slice_tags == 0, torch.zeros_like(slice_sizes), torch.full_like(slice_sizes, math.inf))
            self._record(violations, "slice_tags", slice_sizes, lower, upper, slice_tags >= 0,
                         float(slices[0, 0].numel()))
        if case.boxes and case.box_terms:
            boxes = self._boxes_on_batch(case.boxes, batch, vol.shape[2:])
            if boxes:
                if w.box_emptiness > 0:
                    terms["box_emptiness"] = w.box_emptiness * L.box_emptiness_loss(vol, [boxes], method=method, t=t)
                if w.box_tightness > 0:
                    terms["box_tightness"] = w.box_tightness * L.box_tightness_loss(
                        vol, [boxes], method=method, t=t, axis=0, granularity="auto")
                if w.box_mil > 0:
                    terms["box_mil"] = w.box_mil * L.box_mil_loss(vol.float(), [boxes], axis=0, granularity="auto")
                if self.uses_box_fill:
                    lo, hi = (float(v) for v in self.config.box_fill_bounds)
                    terms["box_fill"] = w.box_fill * L.box_size_loss(vol.float(), [boxes], lo, hi, method=method, t=t)
                if w.box_region > 0:
                    image = batch.image.permute(1, 0, 2, 3).unsqueeze(0) if batch.stack_slices else batch.image
                    terms["box_region"] = w.box_region * L.box_region_loss(vol.float(), image.float(), [boxes])
                self._record_boxes(violations, vol, boxes)
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
        self.violations.update(violations)
        return terms, violations

    def _allowed(self, case, vol: torch.Tensor, slice_tags: torch.Tensor | None) -> torch.Tensor | None:
        """(K, z, y, x) bool of a volume batch (1, K, z, y, x): False where a class is tagged absent."""
        if not case.tags and slice_tags is None:
            return None
        k = self.num_classes
        allowed = torch.ones(vol.shape[1:], dtype=torch.bool, device=vol.device)
        for c, present in case.tags.items():
            if not present and 0 <= c < k:
                allowed[c] = False
        if slice_tags is not None:
            allowed &= (slice_tags != 0).t()[:, :, None, None]
        return allowed

    def _name(self, c: int) -> str:
        return self.class_names[c] if c < len(self.class_names) else str(c)

    def _record(self, violations: dict, prior: str, sizes: torch.Tensor, lower: torch.Tensor, upper: torch.Tensor,
                active: torch.Tensor, region_voxels: float) -> None:
        """Per class: the mean over regions (rows) of the relative violation of ``lower <= sizes <= upper``."""
        floor = max(1.0, 1e-3 * region_voxels)
        below = torch.relu(lower - sizes) / lower.clamp(min=floor)
        above = torch.relu(sizes - upper) / upper.clamp(min=floor)
        amount = torch.where(active, below + above, torch.zeros_like(sizes))
        for c in range(sizes.shape[1]):
            if bool(active[:, c].any()):
                violations[f"{prior}/{self._name(c)}"] = round(float(amount[:, c][active[:, c]].mean()), 4)

    def _record_boxes(self, violations: dict, vol: torch.Tensor, boxes: list) -> None:
        """Per boxed class: the fraction of the voxels predicted as that class (argmax) that lie outside its
        boxes (emptiness) and, with fill bounds, the mean relative violation of the fill fraction over its boxes."""
        probs = torch.softmax(vol.detach().float(), 1)[0]
        hard = probs.argmax(0)
        for c in sorted({b[0] for b in boxes}):
            inside = torch.zeros(probs.shape[1:], dtype=torch.bool, device=probs.device)
            fills = []
            for bc, start, stop in boxes:
                if bc != c:
                    continue
                region = tuple(slice(a, b) for a, b in zip(start, stop))
                inside[region] = True
                fills.append(float(probs[(c, *region)].mean()))
            predicted = hard == c
            outside = float((predicted & ~inside).sum()) / max(float(predicted.sum()), 1.0)
            violations[f"box_outside/{self._name(c)}"] = round(outside, 4)
            if self.uses_box_fill:
                lo, hi = (float(v) for v in self.config.box_fill_bounds)
                amount = [max(lo - f, 0.0) / max(lo, 1e-6) + (max(f - hi, 0.0) / hi if hi < 1.0 else 0.0)
                          for f in fills]
                violations[f"box_fill/{self._name(c)}"] = round(sum(amount) / len(amount), 4)

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
