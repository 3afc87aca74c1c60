"""Bounding-box priors: emptiness outside the boxes, tightness inside, optional size inside.

The size inside a box (:func:`box_size_loss`) is a size constraint in the relative formulation of
:func:`~WeakSegLib.losses.size.relative_bound_loss`.

Reference: H. Kervadec, J. Dolz, S. Wang, E. Granger, I. Ben Ayed, "Bounding boxes for weakly
supervised segmentation: global constraints get close to full supervision", MIDL 2020
(code: LIVIAETS/boxes_tightness_prior).

Boxes are given per batch item: ``boxes[b]`` is a list of ``(class_id, start, stop)`` tuples
(or objects with ``class_id``, ``start`` and ``stop`` attributes, such as
``WeakSegLib.data.annotation.Box``), ``start``/``stop`` voxel indices over the spatial dims in the
tensor's axis order, half-open ``[start, stop)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from WeakSegLib.losses._utils import (
    ConstraintLossModule,
    check_logits,
    check_method,
    check_positive,
    check_reduction,
    check_t,
    masked_reduce,
    reduce,
)
from WeakSegLib.losses.size import inequality_loss, relative_bound_loss

__all__ = [
    "box_emptiness_loss",
    "box_tightness_loss",
    "box_size_loss",
    "box_region_loss",
    "box_mil_loss",
    "smooth_max",
    "BoxEmptinessLoss",
    "BoxTightnessLoss",
]

Corner = tuple[int, ...]
ParsedBox = tuple[int, Corner, Corner]
# (softmax of the box's class cropped to the box, start, stop) -> (sum of constraint values, their number)
BoxTerms = Callable[[torch.Tensor, Corner, Corner], Iterator[tuple[torch.Tensor, int]]]


def _parse_boxes(boxes: Sequence[Sequence[Any]], logits: torch.Tensor) -> list[list[ParsedBox]]:
    """Validate ``boxes`` against ``logits`` (B, C, *spatial); return plain int tuples."""
    batch, num_classes, spatial = logits.shape[0], logits.shape[1], tuple(logits.shape[2:])
    if isinstance(boxes, (str, bytes)) or not isinstance(boxes, Sequence):
        raise TypeError(
            "boxes must be a list (length B) of lists of (class_id, start, stop), "
            f"got {type(boxes).__name__}."
        )
    if len(boxes) != batch:
        raise ValueError(
            f"boxes must have one list per batch item: expected length B={batch}, got {len(boxes)}."
        )
    parsed: list[list[ParsedBox]] = []
    for b, item in enumerate(boxes):
        item_boxes: list[ParsedBox] = []
        for box in item or ():
            if hasattr(box, "class_id") and hasattr(box, "start") and hasattr(box, "stop"):
                class_id, start, stop = box.class_id, box.start, box.stop
            else:
                try:
                    class_id, start, stop = box
                except (TypeError, ValueError):
                    raise TypeError(
                        f"each box must be (class_id, start, stop), got {box!r} in item {b}."
                    ) from None
            try:
                start = tuple(int(v) for v in start)
                stop = tuple(int(v) for v in stop)
                class_id = int(class_id)
            except (TypeError, ValueError):
                raise TypeError(
                    f"box class_id/start/stop must be integers, got {box!r} in item {b}."
                ) from None
            if not 0 <= class_id < num_classes:
                raise ValueError(
                    f"box class_id must be in [0, {num_classes - 1}], got {class_id} in item {b}."
                )
            if len(start) != len(spatial) or len(stop) != len(spatial):
                raise ValueError(
                    f"box start/stop must have {len(spatial)} indices (one per spatial dim of {spatial}), "
                    f"got start={start}, stop={stop} in item {b}."
                )
            if any(a < 0 or a >= e or e > n for a, e, n in zip(start, stop, spatial, strict=True)):
                raise ValueError(
                    f"box must satisfy 0 <= start < stop <= spatial shape {spatial}, got start={start}, "
                    f"stop={stop} in item {b}."
                )
            item_boxes.append((class_id, start, stop))
        parsed.append(item_boxes)
    return parsed


def _box_slices(start: Corner, stop: Corner) -> tuple[slice, ...]:
    return tuple(slice(a, e) for a, e in zip(start, stop, strict=True))


def _check_band_width(band_width: int) -> int:
    if isinstance(band_width, bool) or not isinstance(band_width, int) or band_width < 1:
        raise ValueError(f"band_width must be an int >= 1, got {band_width!r}.")
    return band_width


def _check_fracs(box_size_bounds: Any, name: str = "box_size_bounds") -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in box_size_bounds)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (lo_frac, hi_frac), got {box_size_bounds!r}.") from None
    if not (0.0 <= lo <= hi) or math.isnan(hi):
        raise ValueError(f"{name} must satisfy 0 <= lo_frac <= hi_frac, got ({lo}, {hi}).")
    return lo, hi


def box_emptiness_loss(
    logits: torch.Tensor,
    boxes: Sequence[Sequence[Any]],
    reduction: str = "mean",
    method: str = "penalty",
    t: float = 5.0,
) -> torch.Tensor:
    r"""Emptiness constraint: no foreground of a boxed class outside the union of its boxes.

    For item b and each class c with at least one box in b, with :math:`U_{b,c}` the union of
    its boxes and :math:`n_b` the number of voxels of the item:

    .. math:: z_{b,c} = \frac{1}{n_b} \sum_{p \notin U_{b,c}} s_{c,p} \le 0

    evaluated as :math:`z^2` (``"penalty"``) or :math:`\tilde\psi_t(z)` (``"log_barrier"``,
    always in its linear part since :math:`z \ge 0`). Classes without boxes give 0.

    Args:
        logits: (B, C, H, W) or (B, C, D, H, W).
        boxes: list (length B) of lists of ``(class_id, start, stop)``.
        reduction: ``"mean"`` over boxed (item, class) pairs (0 if none), ``"sum"``, ``"none"`` -> (B, C).
        method, t: as :func:`~WeakSegLib.losses.size.size_constraint_loss`.
    """
    logits = check_logits(logits)
    check_method(method)
    check_reduction(reduction)
    t = check_t(t)
    parsed = _parse_boxes(boxes, logits)
    batch, num_classes = logits.shape[:2]
    union = torch.zeros(logits.shape, dtype=torch.bool, device=logits.device)
    boxed = torch.zeros((batch, num_classes), dtype=torch.bool, device=logits.device)
    for b, item in enumerate(parsed):
        for class_id, start, stop in item:
            union[(b, class_id, *_box_slices(start, stop))] = True
            boxed[b, class_id] = True
    probs = torch.softmax(logits, dim=1)
    zero = torch.zeros((), dtype=probs.dtype, device=probs.device)
    outside = torch.where(union, zero, probs).sum(dim=tuple(range(2, logits.ndim)))
    n_voxels = float(math.prod(logits.shape[2:]))
    values = inequality_loss(
        outside, zero, zero, n_voxels, torch.zeros_like(boxed), boxed, method=method, t=t
    )
    return masked_reduce(values, boxed, reduction)


def _sum_over_boxes(
    logits: torch.Tensor, boxes: Sequence[Sequence[Any]], terms: BoxTerms, reduction: str
) -> torch.Tensor:
    """Add up the constraint values of every box into a (B, C) table of (item, class) pairs and reduce it.

    ``terms(crop, start, stop)`` yields ``(sum of values, number of values)`` for the softmax of the
    box's class cropped to the box. ``"mean"``: table sum over the number of values (0 without box).
    """
    parsed = _parse_boxes(boxes, logits)
    batch, num_classes = logits.shape[:2]
    probs = torch.softmax(logits, dim=1)
    rows = [[probs.new_zeros(()) for _ in range(num_classes)] for _ in range(batch)]
    count = 0
    for b, item in enumerate(parsed):
        for class_id, start, stop in item:
            for value, number in terms(probs[(b, class_id, *_box_slices(start, stop))], start, stop):
                rows[b][class_id] = rows[b][class_id] + value
                count += number
    # `+ 0 * sum` keeps the result connected to the graph when there is no box
    table = torch.stack([torch.stack(row) for row in rows]) + logits.sum() * 0.0
    return reduce(table, reduction, max(count, 1))


def _band_sums(line_sums: torch.Tensor, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum consecutive lines in bands of ``width``: (S, n) -> sums (S, nb), line counts (nb,)."""
    n = line_sums.shape[-1]
    num_bands = -(-n // width)
    padded = F.pad(line_sums, (0, num_bands * width - n))
    sums = padded.reshape(line_sums.shape[0], num_bands, width).sum(-1)
    counts = [width] * (n // width) + ([n % width] if n % width else [])
    return sums, torch.tensor(counts, dtype=line_sums.dtype, device=line_sums.device)


def _check_granularity(granularity: str, axis: int, spatial_nd: int) -> int:
    """Validate the 3D-box ``granularity`` and the slicing ``axis``; return the axis as a non-negative dim."""
    if granularity not in ("slice", "volume", "auto"):
        raise ValueError(f"granularity must be 'slice', 'volume' or 'auto', got {granularity!r}.")
    if isinstance(axis, bool) or not isinstance(axis, int) or not -spatial_nd <= axis < spatial_nd:
        raise ValueError(f"axis must be an int in [0, {spatial_nd - 1}] (a spatial dim), got {axis!r}.")
    return axis % spatial_nd


def _by_planes(granularity: str, axis: int, spatial_nd: int, start: Corner, stop: Corner) -> bool:
    """Whether a box is a tight 3D box (every plane meets the object) rather than tight per slice."""
    return spatial_nd == 3 and (granularity == "volume" or (granularity == "auto" and stop[axis] - start[axis] > 1))


def box_tightness_loss(
    logits: torch.Tensor,
    boxes: Sequence[Sequence[Any]],
    band_width: int = 5,
    method: str = "log_barrier",
    t: float = 5.0,
    reduction: str = "mean",
    axis: int = 0,
    box_size_bounds: tuple[float, float] | None = None,
    granularity: str = "slice",
) -> torch.Tensor:
    r"""Tightness prior of Kervadec et al. (MIDL 2020): every line crossing a tight box meets the object.

    A box of extent :math:`h \times w` is cut into bands (strips) of ``band_width`` = d
    consecutive lines, in both directions: ``floor(h/d)`` bands of d full-width rows, plus one of
    the ``h mod d`` remaining rows when ``h mod d > 0``, and likewise for columns. Each line
    crossing a tight box contains at least one object voxel, so band :math:`s_l` of
    :math:`m_l` lines (:math:`m_l = d`, or the remainder for the last band) must satisfy

    .. math:: \sum_{p \in s_l} s_{c,p} \ge m_l, \qquad
              z_l = \frac{m_l - \sum_{p \in s_l} s_{c,p}}{m_l} \le 0

    We normalise by :math:`m_l` (the reference uses raw voxel counts) so that ``z`` reads
    "1 - mean object voxels per line" and ``t`` is independent of ``band_width``. ``z`` is
    evaluated with :math:`\tilde\psi_t` (``"log_barrier"``, the paper's choice; values can be
    negative for satisfied bands) or :math:`\mathrm{relu}(z)^2` (``"penalty"``).

    For 3D inputs, ``granularity`` says what a box is tight around:

    * ``"slice"`` (default): the prior is applied per slice along ``axis`` (0 = first spatial dim),
      each slice of the box being a tight 2D box of the two other dims — right for boxes drawn on
      slices (one-slice-thick boxes), too strong for a 3D box whose object is smaller on some slices
      (the apex of a heart, the poles of an organ);
    * ``"volume"``: the box is a tight 3D box, so every *plane* of the box, perpendicular to each of
      the three axes, meets the object: bands of d planes must hold at least d object voxels
      (:math:`z_l = (m_l - \sum_{p \in s_l} s_{c,p}) / m_l`, as above with planes for lines);
    * ``"auto"``: ``"slice"`` for boxes one slice thick along ``axis``, ``"volume"`` for thicker ones
      (what the training objective uses).

    Args:
        logits: (B, C, H, W) or (B, C, D, H, W).
        boxes: list (length B) of lists of ``(class_id, start, stop)``, tight around the object.
        band_width: d >= 1.
        method, t: ``"log_barrier"`` (default) or ``"penalty"``; barrier parameter.
        reduction: ``"mean"`` over all band constraints (0 when there is no box), ``"sum"``, or
            ``"none"`` -> (B, C), the sum over the bands of the boxes of class c in item b.
            With ``box_size_bounds`` the size term, reduced the same way, is added.
        axis: slicing axis for 3D inputs (ignored in 2D).
        box_size_bounds: optional ``(lo_frac, hi_frac)``; adds :func:`box_size_loss`.
        granularity: ``"slice"``, ``"volume"`` or ``"auto"`` (3D inputs; see above).
    """
    logits = check_logits(logits)
    check_method(method)
    spatial_nd = logits.ndim - 2
    axis = _check_granularity(granularity, axis, spatial_nd)
    check_reduction(reduction)
    t = check_t(t)
    _check_band_width(band_width)
    size_bounds = None if box_size_bounds is None else _check_fracs(box_size_bounds)

    def band_terms(crop: torch.Tensor, start: Corner, stop: Corner) -> Iterator[tuple[torch.Tensor, int]]:
        if _by_planes(granularity, axis, spatial_nd, start, stop):     # every plane of it, in each direction
            dims = range(3)
            profiles = [crop.sum(tuple(o for o in dims if o != a)).unsqueeze(0) for a in dims]
        else:
            crop = crop.unsqueeze(0) if spatial_nd == 2 else crop.movedim(axis, 0)
            profiles = [crop.sum(-1), crop.sum(-2)]
        for line_sums in profiles:
            sums, counts = _band_sums(line_sums, band_width)
            values = _upper_zero_loss((counts - sums) / counts, method, t)
            yield values.sum(), values.numel()

    result = _sum_over_boxes(logits, boxes, band_terms, reduction)
    if size_bounds is not None:
        result = result + box_size_loss(logits, boxes, size_bounds[0], size_bounds[1], method, t, reduction)
    return result


def _upper_zero_loss(z: torch.Tensor, method: str, t: float) -> torch.Tensor:
    """``relu(z)**2`` for ``"penalty"``, :func:`~WeakSegLib.losses.size.log_barrier` otherwise."""
    on = torch.ones_like(z, dtype=torch.bool)
    zero = torch.zeros((), dtype=z.dtype, device=z.device)
    return inequality_loss(z, zero, zero, 1.0, torch.zeros_like(on), on, method=method, t=t)


def box_size_loss(
    logits: torch.Tensor,
    boxes: Sequence[Sequence[Any]],
    lo_frac: float,
    hi_frac: float,
    method: str = "penalty",
    t: float = 5.0,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Fill fraction of each box: the boxed class covers between ``lo_frac`` and ``hi_frac`` of the box.

    For a box of :math:`A` voxels and its class c, :math:`V = \sum_{p \in box} s_{c,p}` must satisfy
    :math:`\ell A \le V \le h A` (:math:`\ell` = ``lo_frac``, :math:`h` = ``hi_frac``), each side
    relative to its own bound (:func:`~WeakSegLib.losses.size.relative_bound_loss` with
    ``value_max`` = :math:`A`, Kervadec et al., MedIA 2019 / 2022):

    .. math::

        z_\ell = \frac{\ell A - V}{\max(\ell A, f)}, \qquad z_u = \frac{V - h A}{\max(h A, f)},
        \qquad f = \max(1, 10^{-3} A)

    evaluated by :math:`\rho(z)` (``"penalty"``: :math:`r^2` for :math:`r = \mathrm{relu}(z) \le 1`,
    :math:`2r - 1` beyond) or :math:`\tilde\psi_t(z)` (``"log_barrier"``). A box filled to half of
    its lower bound costs 0.25 whatever its size (normalising by :math:`A` would make a lower bound
    of 0.15 worth :math:`0.15^2 = 0.0225` at most: too weak to stop an empty prediction). Vacuous
    sides are off: ``lo_frac <= 0``, ``hi_frac >= 1``.

    Args:
        logits: (B, C, H, W) or (B, C, D, H, W).
        boxes: list (length B) of lists of ``(class_id, start, stop)``.
        lo_frac, hi_frac: fill fractions, ``0 <= lo_frac <= hi_frac``.
        method, t: ``"penalty"`` or ``"log_barrier"``; barrier parameter (> 0).
        reduction: ``"mean"`` over boxes (0, connected to the graph, when there is none), ``"sum"``,
            or ``"none"`` -> (B, C), the sum over the boxes of class c in item b.
    """
    logits = check_logits(logits)
    check_method(method)
    check_reduction(reduction)
    t = check_t(t)
    lo, hi = _check_fracs((lo_frac, hi_frac), "lo_frac and hi_frac")
    parsed = _parse_boxes(boxes, logits)
    probs = torch.softmax(logits, dim=1)
    sizes, areas, index = [], [], []
    for b, item in enumerate(parsed):
        for class_id, start, stop in item:
            sizes.append(probs[(b, class_id, *_box_slices(start, stop))].sum())
            areas.append(float(math.prod(e - a for a, e in zip(start, stop, strict=True))))
            index.append((b, class_id))
    # `+ 0 * sum` keeps the result connected to the graph when there is no box
    connect = logits.sum() * 0.0
    if not sizes:
        return probs.new_zeros(logits.shape[:2]) + connect if reduction == "none" else connect
    size = torch.stack(sizes)
    area = torch.tensor(areas, dtype=size.dtype, device=size.device)
    values = relative_bound_loss(size, lo * area, hi * area, None, area, method, t, reduction)
    if reduction != "none":
        return values
    return _box_table(values, index, logits) + connect


def _box_table(values: torch.Tensor, index: list[tuple[int, int]], logits: torch.Tensor) -> torch.Tensor:
    """The (B, C) table of per-box ``values`` summed per (item, class) of ``index``."""
    rows, cols = (torch.tensor(v, device=logits.device) for v in zip(*index, strict=True))
    return values.new_zeros(logits.shape[:2]).index_put((rows, cols), values, accumulate=True)


def box_region_loss(
    logits: torch.Tensor,
    image: torch.Tensor,
    boxes: Sequence[Sequence[Any]],
    reduction: str = "mean",
    eps: float = 1e-6,
) -> torch.Tensor:
    r"""Two-phase piecewise-constant (Chan-Vese / Mumford-Shah) energy of the image inside each box.

    A box says where its object is, not which of the voxels in it belong to it; the image does: the
    object is the part of the box whose intensities differ from the rest of the box. For a box of
    class c, its softmax :math:`s_p` and the image :math:`I_p` (each of the K channels) on the box's
    :math:`A` voxels,

    .. math::

        \mu_{in} = \frac{\sum_p s_p I_p}{\sum_p s_p + \epsilon}, \quad
        \mu_{out} = \frac{\sum_p (1 - s_p) I_p}{\sum_p (1 - s_p) + \epsilon}, \quad
        E = \frac{1}{K A} \sum_{k, p} \frac{s_p (I_{kp} - \mu_{in,k})^2
            + (1 - s_p)(I_{kp} - \mu_{out,k})^2}{\sigma_k^2 + \epsilon}

    with :math:`\sigma_k^2` the variance of channel k in the box, so E is 1 for a constant
    prediction (all object or all background) and falls as the prediction splits the box into two
    regions of homogeneous intensity (T. Chan, L. Vese, IEEE TIP 2001; B. Kim, J. C. Ye, "Mumford-Shah
    loss functional for image segmentation with deep learning", IEEE TIP 2020; inside boxes as in
    W. Li et al., "Box-supervised instance segmentation with level set evolution", ECCV 2022).
    Which of the two regions is the object is left to the other terms (labels, emptiness, fill).

    Args:
        logits: (B, C, H, W) or (B, C, D, H, W).
        image: (B, K, *spatial) intensities on the logits' grid (K channels).
        boxes: list (length B) of lists of ``(class_id, start, stop)``.
        reduction: ``"mean"`` over boxes (0, connected to the graph, when there is none), ``"sum"``,
            or ``"none"`` -> (B, C), the sum over the boxes of class c in item b.
        eps: guards the divisions (empty regions, constant images).
    """
    logits = check_logits(logits)
    check_reduction(reduction)
    if image.ndim != logits.ndim or image.shape[0] != logits.shape[0] or image.shape[2:] != logits.shape[2:]:
        raise ValueError(f"image must be (B, K, *spatial) with the logits' batch and spatial shape "
                         f"{tuple(logits.shape[:1])} / {tuple(logits.shape[2:])}, got {tuple(image.shape)}.")
    parsed = _parse_boxes(boxes, logits)
    probs = torch.softmax(logits, dim=1)
    image = image.to(probs.dtype)
    values, index = [], []
    for b, item in enumerate(parsed):
        for class_id, start, stop in item:
            region = _box_slices(start, stop)
            s = probs[(b, class_id, *region)].unsqueeze(0)             # (1, *box)
            img = image[(b, slice(None), *region)]                      # (K, *box)
            dims = tuple(range(1, img.ndim))
            mu_in = (s * img).sum(dims, keepdim=True) / (s.sum() + eps)
            mu_out = ((1 - s) * img).sum(dims, keepdim=True) / ((1 - s).sum() + eps)
            var = img.var(dims, unbiased=False, keepdim=True) + eps
            energy = (s * (img - mu_in) ** 2 + (1 - s) * (img - mu_out) ** 2) / var
            values.append(energy.mean())
            index.append((b, class_id))
    connect = logits.sum() * 0.0
    if not values:
        return probs.new_zeros(logits.shape[:2]) + connect if reduction == "none" else connect
    return reduce(_box_table(torch.stack(values), index, logits), reduction, len(values)) + connect


def smooth_max(x: torch.Tensor, alpha: float, dim: int = -1) -> torch.Tensor:
    r"""The :math:`\alpha`-softmax of ``x`` along ``dim``: :math:`\sum_i x_i e^{\alpha x_i} / \sum_i e^{\alpha x_i}`.

    Lies between the mean (:math:`\alpha = 0`) and the maximum (:math:`\alpha \to \infty`) of ``x``
    and, unlike the maximum, passes a gradient to every element (Lange et al., Neurocomputing 2014).
    """
    return (x * torch.softmax(alpha * x, dim=dim)).sum(dim)


def box_mil_loss(
    logits: torch.Tensor,
    boxes: Sequence[Sequence[Any]],
    alpha: float = 8.0,
    reduction: str = "mean",
    axis: int = 0,
    granularity: str = "auto",
    eps: float = 1e-6,
) -> torch.Tensor:
    r"""Tightness as multiple-instance learning: every line (plane) crossing a tight box is a positive bag.

    Each line crossing a tight 2D box meets the object, so the most probable voxel of the box's class
    on that line should be the class: with :math:`S_\alpha` the :math:`\alpha`-softmax
    (:func:`smooth_max`, a differentiable maximum) of the class's softmax :math:`s_{c,p}` over the
    bag's voxels, each bag :math:`l` costs :math:`-\log S_\alpha(\{s_{c,p}\}_{p \in l})`
    (C.-C. Hsu et al., "Weakly supervised instance segmentation using the bounding box tightness
    prior", NeurIPS 2019; the smooth maximum of J. Wang, B. Xia, "Bounding box tightness prior for
    weakly supervised image segmentation", MICCAI 2021). Unlike :func:`box_tightness_loss`, which asks
    a band of lines for as much mass as it has lines, the bag is met only by a confident voxel. The
    negative bags of the papers (lines outside every box) are :func:`box_emptiness_loss` here.

    For 3D inputs, ``granularity`` is as in :func:`box_tightness_loss`: ``"slice"`` = every row and
    column of every slice of the box along ``axis``; ``"volume"`` = every plane of the box, in each of
    the three directions; ``"auto"`` = ``"slice"`` for boxes one slice thick, ``"volume"`` otherwise.

    Args:
        logits: (B, C, H, W) or (B, C, D, H, W).
        boxes: list (length B) of lists of ``(class_id, start, stop)``, tight around the object.
        alpha: smooth-maximum sharpness (> 0); 8 reaches 0.94 on a plane where 0.5 % of the voxels
            are the class with certainty and the rest is not.
        reduction: ``"mean"`` over all bags (0 when there is no box), ``"sum"``, or ``"none"`` -> (B, C),
            the sum over the bags of the boxes of class c in item b.
        axis: slicing axis for 3D inputs (ignored in 2D).
        granularity: ``"slice"``, ``"volume"`` or ``"auto"`` (3D inputs).
        eps: floor of the smooth maximum inside the log.
    """
    logits = check_logits(logits)
    spatial_nd = logits.ndim - 2
    axis = _check_granularity(granularity, axis, spatial_nd)
    check_reduction(reduction)
    alpha = check_positive(alpha, "alpha")

    def bag_terms(crop: torch.Tensor, start: Corner, stop: Corner) -> Iterator[tuple[torch.Tensor, int]]:
        if _by_planes(granularity, axis, spatial_nd, start, stop):     # every plane, in each direction
            bags = [crop.movedim(a, 0).reshape(crop.shape[a], -1) for a in range(3)]
        else:          # every row and column of each slice (a 2D box: its one slice)
            crop = crop.unsqueeze(0) if spatial_nd == 2 else crop.movedim(axis, 0)
            bags = [crop.flatten(0, 1), crop.transpose(-1, -2).flatten(0, 1)]
        for bag in bags:
            values = -torch.log(smooth_max(bag, alpha).clamp_min(eps))
            yield values.sum(), values.numel()

    return _sum_over_boxes(logits, boxes, bag_terms, reduction)


class BoxEmptinessLoss(ConstraintLossModule):
    """Module form of :func:`box_emptiness_loss`; ``forward(logits, boxes)``."""

    def __init__(self, reduction: str = "mean", method: str = "penalty", t: float = 5.0) -> None:
        super().__init__(method, t, reduction)

    def forward(self, logits: torch.Tensor, boxes: Sequence[Sequence[Any]]) -> torch.Tensor:
        return box_emptiness_loss(logits, boxes, self.reduction, self.method, self.t)


class BoxTightnessLoss(nn.Module):
    """Module form of :func:`box_tightness_loss` (+ optional :func:`box_size_loss`).

    ``forward(logits, boxes)``.
    """

    def __init__(
        self,
        band_width: int = 5,
        method: str = "log_barrier",
        t: float = 5.0,
        reduction: str = "mean",
        axis: int = 0,
        box_size_bounds: tuple[float, float] | None = None,
    ) -> None:
        super().__init__()
        _check_band_width(band_width)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ValueError(f"axis must be an int (a spatial dim), got {axis!r}.")
        self.band_width = band_width
        self.method = check_method(method)
        self.t = check_t(t)
        self.axis = axis
        self.box_size_bounds = None if box_size_bounds is None else _check_fracs(box_size_bounds)
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, boxes: Sequence[Sequence[Any]]) -> torch.Tensor:
        return box_tightness_loss(
            logits,
            boxes,
            self.band_width,
            self.method,
            self.t,
            self.reduction,
            self.axis,
            self.box_size_bounds,
        )
