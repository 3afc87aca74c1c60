"""Training data on the network grid, and the two kinds of batches the trainer draws.

* **Patch batches** (voxel-wise terms: pCE, partial Dice, propagated labels, SMILE, Dice + CE):
  random 2D slices / 3D patches of the planned size, one third centred on an annotated foreground
  voxel of a class drawn uniformly among the case's annotated classes (nnU-Net's class-balanced
  foreground oversampling: a small lesion is drawn as often as a large organ), augmented (flips,
  small rotation and scaling, intensity scale/shift, gamma, noise:
  :mod:`WeakSegLib.transforms.augmentation`) with the drawn parameters recorded on the batch.
* **Volume batches** (global terms: sizes, tags, boxes, class ratio, centroids): one whole volume.
  In 2D plans all of its slices form the batch, and the slice logits are stacked back into a volume
  ``(1, C, z, y, x)`` before the global terms are evaluated, so a size range or a tag given for a
  volume constrains the prediction summed over the *whole volume*, never a random patch.  In 3D
  plans the whole volume is resampled to fit the patch budget (a reduced-resolution pass) and the
  size bounds are converted with the coarser voxel volume.  Only intensity augmentation is used
  on volume batches, so boxes and centroids keep their meaning.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from WeakSegLib.config import TrainConfig
from WeakSegLib.data.annotation import UNKNOWN
from WeakSegLib.data.dataset import Case, Dataset
from WeakSegLib.networks.planning import Plan
from WeakSegLib.training.box_prior import box_label_rule, ellipse_labels
from WeakSegLib.training.propagation import propagate_scribbles
from WeakSegLib.training.semi import certain_background_outside_boxes
from WeakSegLib.transforms.augmentation import augment, random_int, random_uniform
from WeakSegLib.transforms.preprocessing import Preprocessing, resize

logger = logging.getLogger(__name__)


@dataclass
class PreparedCase:
    """One case on the network grid, with its constraints in network-grid units."""

    id: str
    image: torch.Tensor                 # (C, z, y, x) float32
    labels: torch.Tensor | None         # (z, y, x) int64, -1 unknown
    pseudo: torch.Tensor | None         # (z, y, x) int64 pseudo-labels (scribbles propagated, box ellipses), -1 unknown
    complete: torch.Tensor              # (K,) bool: class mask complete in this volume
    spacing_zyx: tuple[float, float, float]
    voxel_ml: float
    size_bounds: dict[int, tuple[float, float]] = field(default_factory=dict)   # class -> (lo, hi) mL
    tags: dict[int, bool] = field(default_factory=dict)
    slice_tags: dict[int, dict[int, bool]] = field(default_factory=dict)
    boxes: list[tuple[int, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)
    centroid_bounds: dict[int, tuple[list[float], list[float]]] = field(default_factory=dict)  # array-frame mm
    unlabelled: bool = False
    box_terms: bool = True              # False: the box constraint terms skip it (box_prior "auto" drew its labels)

    @property
    def has_voxel_labels(self) -> bool:
        return self.labels is not None and bool((self.labels != UNKNOWN).any())

    @property
    def has_global(self) -> bool:
        return bool(self.size_bounds or self.tags or self.boxes or self.centroid_bounds or self.slice_tags)

    @property
    def fully_annotated(self) -> bool:
        return bool(self.complete[1:].all()) and self.labels is not None


def prepare_case(case: Case, pre: Preprocessing, num_classes: int, config: TrainConfig,
                 use_ground_truth: bool = False) -> PreparedCase:
    """Normalise, resample and convert the annotation of one case to the network grid."""
    image = pre.to_network(case.image)
    net_shape = tuple(image.shape[1:])
    g = case.image.geometry
    scale = [n / o for n, o in zip(net_shape, g.shape)]
    spacing = tuple(s / f for s, f in zip(g.spacing_zyx, scale))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    complete = torch.zeros(num_classes, dtype=torch.bool)
    labels = pseudo = None
    ann = case.annotation
    if use_ground_truth:
        if case.ground_truth is None:
            raise ValueError(f"Case '{case.id}' has no ground truth; the fully supervised objective needs it.")
        labels = pre.labels_to_network(case.ground_truth.array, g.shape, g.spacing_zyx)
        complete[:] = True
        return PreparedCase(case.id, image, labels, None, complete, spacing, voxel_ml)
    if ann is None:
        return PreparedCase(case.id, image, None, None, complete, spacing, voxel_ml, unlabelled=True)
    if ann.labels is not None:
        labels = pre.labels_to_network(ann.labels, g.shape, g.spacing_zyx)
        for c in ann.complete_classes:
            complete[c] = True
        if ann.is_complete:
            complete[0] = True
        if (config.propagate_scribbles and config.objective == "auto" and not ann.complete_classes
                and config.weights.propagated > 0):
            pseudo = propagated_labels(case, image, pre, config, spacing)
    prepared = PreparedCase(case.id, image, labels, pseudo, complete, spacing, voxel_ml)
    if config.objective != "auto":
        return prepared
    prepared.size_bounds = dict(ann.size_ranges_ml)
    prepared.tags = dict(ann.tags)
    prepared.slice_tags = {c: resample_slice_tags(d, g.shape[0], net_shape[0]) for c, d in ann.slice_tags.items()}
    for box in ann.boxes:
        start = tuple(int(math.floor(a * f)) for a, f in zip(box.start, scale))
        stop = tuple(max(s + 1, int(math.ceil(b * f))) for s, b, f in zip(start, box.stop, scale))
        stop = tuple(min(s, n) for s, n in zip(stop, net_shape))
        prepared.boxes.append((box.class_id, start, stop))
    if config.box_background and prepared.boxes:
        _background_outside_boxes(prepared, ann, num_classes, net_shape)
    rule = box_label_rule(config.box_prior, ann.boxes, config.box_prior_margin, config.box_prior_margin_3d)
    if prepared.boxes and rule is not None:
        # The boxes' ellipses become voxel labels where nothing was drawn (drawn labels win).
        margin, prepared.box_terms = rule
        from_boxes = ellipse_labels(prepared.boxes, net_shape, margin)
        if prepared.labels is not None:
            from_boxes = torch.where(prepared.labels != UNKNOWN, prepared.labels, from_boxes)
        prepared.labels = from_boxes
    for c, (lo, hi) in ann.centroid_ranges_mm.items():
        corners = np.array([[x, y, z] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])])
        idx = g.physical_to_index(corners) * np.asarray(scale)        # network-grid indices (z, y, x)
        mm = idx * np.asarray(spacing)
        prepared.centroid_bounds[c] = (mm.min(0).tolist(), mm.max(0).tolist())
    return prepared


def propagated_labels(case: Case, image: torch.Tensor, pre: Preprocessing, config: TrainConfig,
                      spacing: tuple[float, float, float]) -> torch.Tensor:
    """The random-walker labels of a case's scribbles on the network grid (UNKNOWN where unsure).

    2D plans walk each slice at the image's own resolution (a direct solve per slice), then resample.
    3D plans walk the whole volume on the network grid itself (``image``: the case's normalised image
    there, ``spacing``: its voxel size), with the strokes resampled whole
    (:meth:`Preprocessing.strokes_to_network`): on left-atrium MRI resampled from 0.625 to 1.25 mm this
    is 13x faster than walking the image's grid (9x with multigrid there too), with higher recall at the
    same precision (``benchmarks/propagation_3d.py``).
    """
    ann = case.annotation
    g = case.image.geometry
    threshold = config.propagation_threshold
    if config.propagation_class_thresholds is not None:
        threshold = list(config.propagation_class_thresholds)
        if len(threshold) != ann.num_classes:
            raise ValueError(f"propagation_class_thresholds has {len(threshold)} values for {ann.num_classes} "
                             f"classes; give one per class, background first.")
    if pre.dims == 2:
        prop = propagate_scribbles(case.image.array, ann.labels, 2, config.propagation_beta, threshold,
                                   g.spacing_zyx)
        return pre.labels_to_network(prop, g.shape, g.spacing_zyx)
    strokes = pre.strokes_to_network(ann.labels, g.shape, g.spacing_zyx).numpy()
    arr = image.numpy()
    arr = arr[0] if arr.shape[0] == 1 else np.moveaxis(arr, 0, -1)
    prop = propagate_scribbles(arr, strokes, 3, config.propagation_beta, threshold, spacing)
    return torch.from_numpy(prop.astype(np.int64))


def resample_slice_tags(per_slice: dict[int, bool], n_in: int, n_out: int) -> dict[int, bool]:
    """Per-z-slice tags of an ``n_in``-slice volume on the same extent resampled to ``n_out`` slices.

    Output slice ``j`` covers the input interval ``[j n_in / n_out, (j + 1) n_in / n_out)``; it gets a tag
    only when every input slice it overlaps has one and they agree (a slice that straddles the
    object's first or last slice stays unknown rather than being called present or absent wrongly).
    """
    if n_in == n_out:
        return dict(per_slice)
    out = {}
    for j in range(n_out):
        lo = j * n_in / n_out
        hi = (j + 1) * n_in / n_out
        first, last = int(math.floor(lo + 1e-9)), int(math.ceil(hi - 1e-9)) - 1
        values = {per_slice.get(i) for i in range(first, min(last, n_in - 1) + 1)}
        if len(values) == 1 and None not in values:
            out[j] = values.pop()
    return out


def slice_tag_matrix(slice_tags: dict[int, dict[int, bool]], n_case: int, n_out: int, num_classes: int,
                     device=None) -> torch.Tensor:
    """(n_out, K) long matrix of a case's slice tags (1 present, 0 absent, -1 unknown) on ``n_out`` slices.

    ``slice_tags`` are on the case's network grid of ``n_case`` slices; a volume batch resized along z
    (3D plans) gets them through :func:`resample_slice_tags`.
    """
    tags = torch.full((n_out, num_classes), -1, dtype=torch.long, device=device)
    for c, per_slice in slice_tags.items():
        if not 0 <= c < num_classes:
            continue
        for s, present in resample_slice_tags(per_slice, n_case, n_out).items():
            if 0 <= s < n_out:
                tags[s, c] = int(present)
    return tags


def _background_outside_boxes(prepared: PreparedCase, ann, num_classes: int, shape) -> None:
    """Voxels outside every box become background labels, when that is certain.

    It is certain when every foreground class of the volume has a box or is tagged absent: a voxel
    outside all boxes then belongs to no foreground class.  This is the emptiness constraint
    (Kervadec et al. 2020) as dense voxel labels, so patch batches train on it at every step; the
    tightness and fill terms still act inside the boxes.  Annotated voxels are kept as they are.
    """
    absent = [c for c, present in ann.tags.items() if not present]
    outside = certain_background_outside_boxes(prepared.boxes, absent, num_classes, shape)
    if outside is None:
        return
    labels = prepared.labels.clone() if prepared.labels is not None else torch.full(shape, UNKNOWN, dtype=torch.long)
    labels[outside & (labels == UNKNOWN)] = 0
    prepared.labels = labels


def prepare_dataset(dataset: Dataset, pre: Preprocessing, config: TrainConfig, progress=None
                    ) -> list[PreparedCase]:
    use_gt = config.objective == "full"
    out = []
    for i, case in enumerate(dataset.cases):
        if use_gt and case.ground_truth is None:
            continue
        out.append(prepare_case(case, pre, dataset.num_classes, config, use_ground_truth=use_gt))
        if progress is not None:
            progress((i + 1) / len(dataset.cases), f"Prepared case {case.id}")
    return out


# ---------------------------------------------------------------------------------------------
@dataclass
class Batch:
    image: torch.Tensor                       # (B, C, *spatial)
    labels: torch.Tensor | None               # (B, *spatial) int64
    pseudo: torch.Tensor | None
    complete: torch.Tensor                    # (B, K) bool
    kind: str                                 # "patch" | "volume"
    case_ids: list[str]
    stack_slices: bool = False                # 2D volume batch: stack (z, C, y, x) -> (1, C, z, y, x)
    voxel_ml: float = 0.0                     # volume batches: mL per voxel of the (stacked) grid
    spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0)
    case: PreparedCase | None = None          # volume batches: the case (constraints)
    box_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    crop_offset: tuple[int, int] = (0, 0)       # 2D volume batches: in-plane centre-crop offset (y, x)
    augmentation: dict = field(default_factory=dict)

    def to(self, device) -> Batch:
        move = lambda t: None if t is None else t.to(device, non_blocking=True)  # noqa: E731
        self.image, self.labels, self.pseudo, self.complete = (move(self.image), move(self.labels),
                                                               move(self.pseudo), move(self.complete))
        return self


def draw_patch_window(shape_zyx, plan: Plan, generator: torch.Generator, centre: list[int] | None = None,
                      slices: torch.Tensor | None = None) -> tuple[tuple, list[int]]:
    """Where a patch of ``plan.patch_size`` lies in a (z, y, x) grid: ``(index, valid sizes)``.

    ``index`` addresses the patch in the grid (in 2D plans an int slice index comes first, then
    the in-plane slices); ``valid`` are the sizes of the part inside the grid (the rest is padding,
    see :func:`pad_to_patch`).  In 2D plans the slice is ``centre[0]``, else one of ``slices``
    (e.g. the annotated ones) when given and not empty, else any.  Along each axis longer than the
    patch the start puts ``centre`` mid-patch (jittered by up to 1/8 of the patch) or is uniform.
    """
    shape, lead = tuple(shape_zyx), ()
    if plan.dims == 2:
        if centre is not None:
            lead, centre = (centre[0],), centre[1:]
        elif slices is not None and len(slices):
            lead = (int(slices[random_int(generator, len(slices))]),)
        else:
            lead = (random_int(generator, shape[0]),)
        shape = shape[1:]
    index, valid = list(lead), []
    for d, (n, p) in enumerate(zip(shape, plan.patch_size)):
        if n <= p:
            start = 0
        elif centre is not None:
            jitter = random_int(generator, p // 4 + 1) - p // 8
            start = int(min(max(centre[d] - p // 2 + jitter, 0), n - p))
        else:
            start = random_int(generator, n - p + 1)
        index.append(slice(start, start + min(p, n)))
        valid.append(min(p, n))
    return tuple(index), valid


def pad_to_patch(t: torch.Tensor, patch_size, fill: float = 0.0) -> torch.Tensor:
    """Pad the last ``len(patch_size)`` axes of ``t`` at their end up to ``patch_size`` with ``fill``."""
    pad = []
    for n, p in zip(reversed(t.shape[t.ndim - len(patch_size):]), reversed(patch_size)):
        pad += [0, max(p - n, 0)]
    return F.pad(t, pad, value=fill) if any(pad) else t


class BatchSampler:
    """Draws patch batches and volume batches from prepared cases with one seeded generator."""

    def __init__(self, cases: list[PreparedCase], plan: Plan, augment: bool, seed: int,
                 oversample_foreground: float = 0.33):
        self.cases = cases
        self.plan = plan
        self.augment = augment
        self.generator = torch.Generator().manual_seed(int(seed))
        self.oversample = oversample_foreground
        self.local_cases = [c for c in cases if c.has_voxel_labels or c.pseudo is not None]
        self.global_cases = [c for c in cases if c.has_global]
        self.unlabelled_cases = [c for c in cases if c.unlabelled]
        # Fraction of each step's patches drawn from unannotated volumes (a semi-supervised mode's
        # ``batch_share``): 0 = a full labelled batch plus a full unlabelled one.
        self.unlabelled_share = 0.0
        self._fg_index = {}
        self._annotated_slices = {}
        for c in self.local_cases:
            lab = c.labels if c.labels is not None else c.pseudo
            fg = lab
            if not bool((fg > 0).any()) and c.pseudo is not None:   # e.g. boxes: foreground only in the pseudo-labels
                fg = c.pseudo
            # one index tensor per annotated foreground class
            self._fg_index[c.id] = [torch.nonzero(fg == k) for k in torch.unique(fg).tolist() if k > 0]
            self._annotated_slices[c.id] = torch.nonzero((lab != UNKNOWN).flatten(1).any(1)).flatten()

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])

    # ------------------------------------------------------------------ patch batches
    def _crop(self, case: PreparedCase, centre: list[int] | None) -> tuple[torch.Tensor, ...]:
        """Image (C, *patch), labels and propagated labels (*patch) of one patch of ``case``."""
        patch = self.plan.patch_size
        slices = self._annotated_slices.get(case.id) if self.plan.dims == 2 else None
        index, _ = draw_patch_window(case.image.shape[1:], self.plan, self.generator, centre, slices)
        img = pad_to_patch(case.image[(slice(None), *index)], patch)
        lab = None if case.labels is None else pad_to_patch(case.labels[index], patch, UNKNOWN)
        pse = None if case.pseudo is None else pad_to_patch(case.pseudo[index], patch, UNKNOWN)
        return img, lab, pse

    def batch_sizes(self) -> tuple[int, int]:
        """Patches per step ``(labelled, unlabelled)``: the planned batch twice, or the batch split by
        ``unlabelled_share`` (at least one patch each) when there are unannotated volumes to draw from."""
        b = self.plan.batch_size
        if self.unlabelled_share <= 0 or not self.unlabelled_cases or not self.local_cases or b < 2:
            return b, b
        n_u = min(b - 1, max(1, round(b * self.unlabelled_share)))
        return b - n_u, n_u

    def patch_batch(self, pool: list[PreparedCase] | None = None, size: int | None = None) -> Batch | None:
        if size is None:
            size = self.batch_sizes()[0 if pool is None else 1]
        pool = self.local_cases if pool is None else pool
        if not pool:
            return None
        images, labels, pseudos, completes, ids = [], [], [], [], []
        num_classes = self.plan.num_classes
        for _ in range(size):
            case = pool[random_int(self.generator, len(pool))]
            centre = None
            per_class = self._fg_index.get(case.id)
            if per_class and random_uniform(self.generator) < self.oversample:
                fg = per_class[random_int(self.generator, len(per_class))]
                centre = fg[random_int(self.generator, len(fg))].tolist()
            img, lab, pse = self._crop(case, centre)
            images.append(img)
            spatial = img.shape[1:]
            labels.append(lab if lab is not None else torch.full(spatial, UNKNOWN, dtype=torch.long))
            pseudos.append(pse if pse is not None else torch.full(spatial, UNKNOWN, dtype=torch.long))
            completes.append(case.complete)
            ids.append(case.id)
        batch = Batch(torch.stack(images), torch.stack(labels),
                      torch.stack(pseudos) if any(c.pseudo is not None for c in pool) else None,
                      torch.stack(completes).reshape(-1, num_classes), "patch", ids)
        if self.augment:
            batch.image, batch.labels, batch.pseudo, batch.augmentation = augment(
                batch.image, batch.labels, batch.pseudo, self.generator, spatial=True)
        return batch

    def unlabelled_batch(self) -> Batch | None:
        return self.patch_batch(self.unlabelled_cases, self.batch_sizes()[1]) if self.unlabelled_cases else None

    # ------------------------------------------------------------------ volume batches
    def volume_batch(self, case: PreparedCase | None = None) -> Batch | None:
        if case is None:
            if not self.global_cases:
                return None
            case = self.global_cases[random_int(self.generator, len(self.global_cases))]
        total = np.prod(np.array(self.plan.strides), axis=0)
        img, lab, pse = case.image, case.labels, case.pseudo
        if self.plan.dims == 2:
            ny, nx = img.shape[2:]
            ty, tx = (int(n // t * t) if n >= t else int(t) for n, t in zip((ny, nx), total))
            img = _centre_fit(img, (img.shape[1], ty, tx), 0.0)
            lab = None if lab is None else _centre_fit(lab[None], (lab.shape[0], ty, tx), UNKNOWN)[0]
            pse = None if pse is None else _centre_fit(pse[None], (pse.shape[0], ty, tx), UNKNOWN)[0]
            batch = Batch(img.permute(1, 0, 2, 3).contiguous(),
                          None if lab is None else lab, pse,
                          case.complete[None].expand(img.shape[1], -1), "volume", [case.id],
                          stack_slices=True, voxel_ml=case.voxel_ml, spacing_zyx=case.spacing_zyx, case=case)
            batch.box_scale = (1.0, 1.0, 1.0)
            batch.crop_offset = ((ny - ty) // 2, (nx - tx) // 2)
        else:
            shape = np.array(img.shape[1:], float)
            budget = float(np.prod(self.plan.patch_size))
            f = min(1.0, (budget / shape.prod()) ** (1 / 3))
            new = [max(int(t), int(round(n * f / t)) * int(t)) for n, t in zip(shape, total)]
            scale = tuple(n / o for n, o in zip(new, shape))
            img_s = resize(img, new, "trilinear")
            lab_s = None if lab is None else resize(lab[None], new, "nearest")[0]
            pse_s = None if pse is None else resize(pse[None], new, "nearest")[0][None]
            spacing = tuple(s / k for s, k in zip(case.spacing_zyx, scale))
            batch = Batch(img_s[None], None if lab_s is None else lab_s[None], pse_s, case.complete[None],
                          "volume", [case.id], voxel_ml=float(np.prod(spacing)) / 1000.0, spacing_zyx=spacing,
                          case=case)
            batch.box_scale = scale
            batch.crop_offset = (0, 0)
        if self.augment:
            batch.image, batch.labels, batch.pseudo, batch.augmentation = augment(
                batch.image, batch.labels, batch.pseudo, self.generator, spatial=False)
        return batch


def _centre_fit(t: torch.Tensor, shape_zyx, fill) -> torch.Tensor:
    """Centre-crop (or centre-pad) the last two axes of (C, z, y, x) to ``shape_zyx[1:]``.

    Index ``i`` of the input lands at ``i - (n - target) // 2`` in both cases (the crop offset the
    volume batch records, negative for a pad), so boxes and centroids can be moved with it.
    """
    out = t
    for axis, target in ((2, shape_zyx[1]), (3, shape_zyx[2])):
        n = out.shape[axis]
        if n > target:
            start = (n - target) // 2
            out = out.narrow(axis, start, target)
        elif n < target:
            before = -((n - target) // 2)
            out = F.pad(out, [0, 0] * (out.ndim - 1 - axis) + [before, target - n - before], value=fill)
    return out
