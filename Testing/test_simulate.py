"""Simulated weak annotations: never contradicting the ground truth, seeded, reproducible, valid."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from WeakSegLib.data.annotation import UNKNOWN, AnnotationError, Box, WeakAnnotation
from WeakSegLib.data.phantom import make_phantom
from WeakSegLib.data.simulate import (
    KINDS,
    annotated_fraction,
    combine,
    simulate,
    simulate_boxes,
    simulate_partial_labels,
    simulate_points,
    simulate_scribbles,
    simulate_size_ranges,
    simulate_tags,
)
from WeakSegLib.data.volume import Geometry, GeometryMismatchError, Volume

NUM_CLASSES = 4
SEEDS = (0, 1, 7)


@pytest.fixture(scope="module")
def phantom_gt() -> Volume:
    return make_phantom(3, shape=(16, 64, 64)).ground_truth


@pytest.fixture(scope="module")
def blobs_gt() -> Volume:
    """Two objects of class 1, a thin class-2 bar, class 3 absent, anisotropic grid with an origin."""
    arr = np.zeros((8, 40, 36), np.int16)
    zz, yy, xx = np.ogrid[:8, :40, :36]
    arr[((zz - 3) * 2.0) ** 2 + (yy - 12) ** 2 + (xx - 10) ** 2 <= 36] = 1
    arr[((zz - 4) * 2.0) ** 2 + (yy - 28) ** 2 + (xx - 25) ** 2 <= 25] = 1
    arr[1:7, 30:32, 2:14] = 2
    return Volume(arr, Geometry(arr.shape, (0.9, 1.1, 2.0), (-30.0, 12.5, 40.0)))


def _check_no_contradiction(annotation: WeakAnnotation, gt: Volume) -> None:
    assert annotation.geometry == gt.geometry
    if annotation.labels is None:
        return
    known = annotation.labels != UNKNOWN
    np.testing.assert_array_equal(annotation.labels[known], gt.array[known])


def _tight_boxes(gt: np.ndarray, c: int) -> set[tuple]:
    lab, _ = ndimage.label(gt == c)
    return {(tuple(s.start for s in sl), tuple(s.stop for s in sl)) for sl in ndimage.find_objects(lab)}


# ---------------------------------------------------------------------------------------- every kind
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("seed", SEEDS)
def test_every_kind_is_valid_and_never_contradicts_gt(kind, seed, phantom_gt, blobs_gt):
    for gt in (phantom_gt, blobs_gt):
        annotation = simulate(gt, NUM_CLASSES, kind, seed=seed)
        assert isinstance(annotation, WeakAnnotation)
        annotation.validate()
        assert annotation.has_information()
        _check_no_contradiction(annotation, gt)
        for box in annotation.boxes:  # boxes contain their whole object
            region = gt.array[box.slices()]
            assert np.any(region == box.class_id)
        for c, present in annotation.tags.items():
            assert present == bool(np.any(gt.array == c))


@pytest.mark.parametrize("kind", ["scribbles", "points", "boxes", "partial"])
def test_reproducible_with_a_seed_and_different_with_another(kind, phantom_gt):
    a = simulate(phantom_gt, NUM_CLASSES, kind, seed=11)
    b = simulate(phantom_gt, NUM_CLASSES, kind, seed=11)
    gen = simulate(phantom_gt, NUM_CLASSES, kind, seed=np.random.default_rng(11))
    options = {"jitter_mm": 4.0} if kind == "boxes" else {}
    if kind == "boxes":
        a = simulate(phantom_gt, NUM_CLASSES, kind, seed=11, **options)
        b = simulate(phantom_gt, NUM_CLASSES, kind, seed=11, **options)
    for other in (b,) + ((gen,) if kind != "boxes" else ()):
        assert (a.labels is None) == (other.labels is None)
        if a.labels is not None:
            np.testing.assert_array_equal(a.labels, other.labels)
        assert a.boxes == other.boxes and a.complete_classes == other.complete_classes
    different = [simulate(phantom_gt, NUM_CLASSES, kind, seed=s, **options) for s in (12, 13, 14)]
    if kind == "partial":  # only 2^3 outcomes: at least one of three other seeds differs
        assert any(d.complete_classes != a.complete_classes for d in different)
    elif kind == "boxes":
        assert all(d.boxes != a.boxes for d in different)
    else:
        assert all(not np.array_equal(d.labels, a.labels) for d in different)


# ---------------------------------------------------------------------------------------- scribbles
def test_scribbles_are_sparse_and_cover_every_present_class(phantom_gt, blobs_gt):
    for gt, most in ((phantom_gt, 0.04), (blobs_gt, 0.08)):  # the tiny blobs volume is mostly object
        annotation = simulate_scribbles(gt, NUM_CLASSES, seed=0)
        fraction = annotated_fraction(annotation)
        assert 0.002 < fraction < most
        present = {int(c) for c in np.unique(gt.array)}
        assert annotation.drawn_classes() == present
    # Every slice holding a class gets a stroke of it with slice_fraction=1.
    annotation = simulate_scribbles(phantom_gt, NUM_CLASSES, seed=0)
    for c in (1, 2):
        with_class = np.any(phantom_gt.array == c, axis=(1, 2))
        drawn = np.any(annotation.labels == c, axis=(1, 2))
        big = np.array([np.count_nonzero(s == c) >= 10 for s in phantom_gt.array])
        np.testing.assert_array_equal(drawn, with_class & big)


def test_scribbles_stay_away_from_boundaries(phantom_gt):
    annotation = simulate_scribbles(phantom_gt, NUM_CLASSES, seed=2)
    gt = phantom_gt.array
    for z in range(gt.shape[0]):
        inner = gt[z] == 2
        if not inner.any():
            continue
        # Inner is a thick blob: its stroke never touches the object's 2D boundary when the object
        # is at least 5 pixels across.
        boundary = inner & ~ndimage.binary_erosion(inner)
        if ndimage.distance_transform_edt(inner).max() >= 3:
            assert not np.any((annotation.labels[z] == 2) & boundary)
        # Background strokes keep the margin (8 mm by default) from the slice's foreground.
        bg_stroke = annotation.labels[z] == 0
        dist = ndimage.distance_transform_edt(gt[z] == 0, sampling=phantom_gt.geometry.spacing_zyx[1:])
        if bg_stroke.any():
            assert dist[bg_stroke].min() >= 8.0


def test_scribbles_slice_fraction_axis_and_length(phantom_gt):
    full = simulate_scribbles(phantom_gt, NUM_CLASSES, seed=0)
    part = simulate_scribbles(phantom_gt, NUM_CLASSES, seed=0, slice_fraction=0.3)
    n_full = np.count_nonzero(np.any(full.labels == 2, axis=(1, 2)))
    n_part = np.count_nonzero(np.any(part.labels == 2, axis=(1, 2)))
    assert n_part == max(1, round(0.3 * n_full))
    assert annotated_fraction(part) < annotated_fraction(full)
    sagittal = simulate_scribbles(phantom_gt, NUM_CLASSES, seed=0, axis=2)
    _check_no_contradiction(sagittal, phantom_gt)
    assert sagittal.drawn_classes() == {0, 1, 2, 3}
    short = simulate_scribbles(phantom_gt, NUM_CLASSES, seed=0, max_length_mm=6.0, width_px=1,
                               background=False)
    spacing = np.asarray(phantom_gt.geometry.spacing_zyx[1:])
    for z in range(phantom_gt.shape[0]):
        for c in (1, 2, 3):
            lab, n = ndimage.label(short.labels[z] == c, structure=np.ones((3, 3)))
            for i in range(1, n + 1):
                pts = np.argwhere(lab == i) * spacing
                extent = np.sqrt(((pts[:, None] - pts[None]) ** 2).sum(-1)).max()
                assert extent <= 6.0 + 1e-6
    assert 0 not in short.drawn_classes()


def test_scribbles_width(phantom_gt):
    thin = simulate_scribbles(phantom_gt, NUM_CLASSES, seed=4, width_px=1, background=False)
    even = simulate_scribbles(phantom_gt, NUM_CLASSES, seed=4, width_px=2, background=False)
    wide = simulate_scribbles(phantom_gt, NUM_CLASSES, seed=4, width_px=5, background=False)
    np.testing.assert_array_equal(even.labels, thin.labels)
    assert thin.num_annotated_voxels() < wide.num_annotated_voxels()
    assert wide.num_annotated_voxels() < 0.3 * np.count_nonzero(phantom_gt.array)
    _check_no_contradiction(wide, phantom_gt)


def test_scribbles_on_an_empty_volume_mark_background_only():
    gt = Volume(np.zeros((4, 30, 30), np.int16))
    annotation = simulate_scribbles(gt, 3, seed=0)
    assert annotation.drawn_classes() == {0}


def test_scribbles_ill_options(phantom_gt):
    with pytest.raises(ValueError, match="slice_fraction"):
        simulate_scribbles(phantom_gt, NUM_CLASSES, slice_fraction=0.0)
    with pytest.raises(ValueError, match="axis"):
        simulate_scribbles(phantom_gt, NUM_CLASSES, axis=3)
    with pytest.raises(ValueError, match="class id"):
        simulate_scribbles(phantom_gt, 3)
    with pytest.raises(TypeError, match="Volume"):
        simulate_scribbles(phantom_gt.array, NUM_CLASSES)
    with pytest.raises(TypeError, match="seed"):
        simulate_scribbles(phantom_gt, NUM_CLASSES, seed=1.5)


# ---------------------------------------------------------------------------------------- points
def test_points_lie_in_the_interior_with_whole_balls(blobs_gt):
    gt = blobs_gt.array
    annotation = simulate_points(blobs_gt, NUM_CLASSES, n_per_object=2, radius_mm=1.5, seed=3,
                                 background_points=3)
    _check_no_contradiction(annotation, blobs_gt)
    lab, n = ndimage.label(gt == 1)
    for i in range(1, n + 1):  # each class-1 object has painted voxels deep inside it
        painted = (annotation.labels == 1) & (lab == i)
        assert painted.any()
        depth = ndimage.distance_transform_edt(lab == i, sampling=blobs_gt.geometry.spacing_zyx)
        assert depth[painted].min() > 0
    assert np.any(annotation.labels == 2)  # the thin bar still gets a (shrunk) point
    assert np.any(annotation.labels == 0)
    assert not np.any(annotation.labels == 3)


def test_points_single_voxels_count(blobs_gt):
    annotation = simulate_points(blobs_gt, NUM_CLASSES, n_per_object=3, radius_mm=0.0, seed=0,
                                 background_points=4)
    assert np.count_nonzero(annotation.labels == 1) == 6  # 2 objects x 3 points
    assert np.count_nonzero(annotation.labels == 2) == 3
    assert np.count_nonzero(annotation.labels == 0) == 4



def test_background_clicks_per_slice_land_on_every_slice_with_foreground(blobs_gt):
    gt = blobs_gt.array
    annotation = simulate_points(blobs_gt, NUM_CLASSES, per_slice=True, radius_mm=0.0, seed=1,
                                 background_points=2, background_per_slice=True)
    _check_no_contradiction(annotation, blobs_gt)
    with_fg = (gt > 0).reshape(gt.shape[0], -1).any(1)
    per_slice = (annotation.labels == 0).reshape(gt.shape[0], -1).sum(1)
    assert with_fg.any() and not with_fg.all()
    np.testing.assert_array_equal(per_slice, np.where(with_fg, 2, 0))
    # In-plane margin: each background click is more than 2 in-plane voxels from the slice's foreground.
    for z, y, x in np.argwhere(annotation.labels == 0):
        distance = ndimage.distance_transform_edt(gt[z] == 0, sampling=blobs_gt.geometry.spacing_zyx[1:])
        assert distance[y, x] > 2.0 * max(blobs_gt.geometry.spacing_zyx[1:])

# ---------------------------------------------------------------------------------------- boxes
def test_boxes_tight_per_component_and_boxes_only(blobs_gt, phantom_gt):
    for gt in (blobs_gt, phantom_gt):
        annotation = simulate_boxes(gt, NUM_CLASSES)
        assert annotation.labels is None and not annotation.tags
        for c in range(1, NUM_CLASSES):
            got = {(b.start, b.stop) for b in annotation.boxes if b.class_id == c}
            assert got == _tight_boxes(gt.array, c)


def test_boxes_with_jitter_contain_their_objects(blobs_gt):
    tight = {(b.class_id, b.start, b.stop) for b in simulate_boxes(blobs_gt, NUM_CLASSES).boxes}
    for seed in SEEDS:
        loose = simulate_boxes(blobs_gt, NUM_CLASSES, jitter_mm=5.0, seed=seed).boxes
        assert len(loose) == len(tight)
        spacing = np.asarray(blobs_gt.geometry.spacing_zyx)
        grown = 0
        for box in loose:
            match = [t for t in tight if t[0] == box.class_id and np.all(np.asarray(box.start) <= t[1])
                     and np.all(np.asarray(box.stop) >= t[2])]
            assert match, f"{box} does not contain a tight box"
            _, start, stop = match[0]
            assert np.all((np.asarray(start) - box.start) * spacing <= 5.0 + spacing / 2)
            assert np.all((np.asarray(box.stop) - stop) * spacing <= 5.0 + spacing / 2)
            assert np.all(np.asarray(box.stop) <= blobs_gt.shape) and min(box.start) >= 0
            grown += int(box.start != start or box.stop != stop)
        assert grown > 0


def test_boxes_per_slice(blobs_gt):
    annotation = simulate_boxes(blobs_gt, NUM_CLASSES, per_slice=True, jitter_mm=3.0, seed=1)
    assert all(b.is_per_slice for b in annotation.boxes)
    gt = blobs_gt.array
    for c in (1, 2):
        covered = np.zeros(gt.shape, bool)
        for b in annotation.boxes:
            if b.class_id == c:
                covered[b.slices()] = True
        assert np.all(covered[gt == c])
    sideways = simulate_boxes(blobs_gt, NUM_CLASSES, per_slice=True, axis=2)
    assert all(b.stop[2] - b.start[2] == 1 for b in sideways.boxes)


def test_boxes_on_empty_gt_raise():
    with pytest.raises(AnnotationError, match="no information"):
        simulate_boxes(Volume(np.zeros((3, 5, 5), np.int16)), 2)


# ---------------------------------------------------------------------------------------- tags, sizes
def test_tags_and_slice_tags_match_gt(blobs_gt):
    annotation = simulate_tags(blobs_gt, NUM_CLASSES, per_slice=True)
    assert annotation.tags == {1: True, 2: True, 3: False}
    for c in (1, 2, 3):
        expected = {z: bool(np.any(blobs_gt.array[z] == c)) for z in range(blobs_gt.shape[0])}
        assert annotation.slice_tags[c] == expected
    assert simulate_tags(blobs_gt, NUM_CLASSES).slice_tags == {}


def test_size_ranges_bracket_the_true_size(blobs_gt):
    annotation = simulate_size_ranges(blobs_gt, NUM_CLASSES, margin=0.2)
    ml = blobs_gt.geometry.voxel_volume_ml
    for c in (1, 2):
        size = np.count_nonzero(blobs_gt.array == c) * ml
        lo, hi = annotation.size_ranges_ml[c]
        assert lo == pytest.approx(0.8 * size) and hi == pytest.approx(1.2 * size)
    assert 3 not in annotation.size_ranges_ml and annotation.tags == {3: False}
    assert simulate_size_ranges(blobs_gt, NUM_CLASSES, margin=1.5).size_ranges_ml[1][0] == 0.0
    with pytest.raises(ValueError, match="margin"):
        simulate_size_ranges(blobs_gt, NUM_CLASSES, margin=-0.1)
    both = simulate(blobs_gt, NUM_CLASSES, "tags+sizes", margin=0.2)
    assert both.tags == {1: True, 2: True, 3: False} and both.size_ranges_ml == annotation.size_ranges_ml


# ---------------------------------------------------------------------------------------- partial labels
@pytest.mark.parametrize("seed", range(6))
def test_partial_labels_semantics(seed, phantom_gt):
    gt = phantom_gt.array
    annotation = simulate_partial_labels(phantom_gt, NUM_CLASSES, drop_rate=0.5, seed=seed)
    kept = annotation.complete_classes
    assert kept and kept <= {1, 2, 3}
    for c in (1, 2, 3):
        if c in kept:
            np.testing.assert_array_equal(annotation.labels == c, gt == c)
        else:
            assert np.all(annotation.labels[gt == c] == UNKNOWN)
    if kept == {1, 2, 3}:
        np.testing.assert_array_equal(annotation.labels, gt)
    else:
        assert np.all(annotation.labels[gt == 0] == UNKNOWN)


def test_partial_labels_extremes(phantom_gt, blobs_gt):
    full = simulate_partial_labels(phantom_gt, NUM_CLASSES, drop_rate=0.0)
    assert full.is_complete
    np.testing.assert_array_equal(full.labels, phantom_gt.array)
    for seed in SEEDS:  # everything dropped: one present class is kept, never class 3 (absent)
        one = simulate_partial_labels(blobs_gt, NUM_CLASSES, drop_rate=1.0, seed=seed)
        assert len(one.complete_classes) == 1 and one.complete_classes <= {1, 2}
    empty = simulate_partial_labels(Volume(np.zeros((2, 4, 4), np.int16)), 3, drop_rate=1.0)
    assert empty.complete_classes == {1, 2} and np.all(empty.labels == 0)
    with pytest.raises(ValueError, match="drop_rate"):
        simulate_partial_labels(phantom_gt, NUM_CLASSES, drop_rate=1.5)


# ---------------------------------------------------------------------------------------- combine, dispatcher
def test_combine_merges_and_refuses_conflicts(blobs_gt):
    scribbles = simulate_scribbles(blobs_gt, NUM_CLASSES, seed=0)
    points = simulate_points(blobs_gt, NUM_CLASSES, seed=0, radius_mm=1.0)
    boxes = simulate_boxes(blobs_gt, NUM_CLASSES)
    sizes = simulate(blobs_gt, NUM_CLASSES, "tags+sizes")
    merged = combine(scribbles, points, boxes, sizes, boxes)
    _check_no_contradiction(merged, blobs_gt)
    assert merged.num_annotated_voxels() >= scribbles.num_annotated_voxels()
    assert merged.boxes == boxes.boxes and merged.tags == sizes.tags
    known = (scribbles.labels != UNKNOWN)
    np.testing.assert_array_equal(merged.labels[known], scribbles.labels[known])

    wrong = scribbles.labels.copy()
    z, y, x = np.argwhere(wrong == 1)[0]
    wrong[z, y, x] = 2
    clash = WeakAnnotation(blobs_gt.geometry, NUM_CLASSES, wrong)
    with pytest.raises(AnnotationError, match="labelled differently"):
        combine(scribbles, clash)
    with pytest.raises(AnnotationError, match="tags"):
        combine(sizes, WeakAnnotation(blobs_gt.geometry, NUM_CLASSES, tags={1: False}))
    other = Geometry(blobs_gt.shape, (1.0, 1.0, 1.0))
    with pytest.raises(GeometryMismatchError):
        combine(boxes, WeakAnnotation(other, NUM_CLASSES, boxes=[Box(1, (0, 0, 0), (1, 1, 1))]))
    with pytest.raises(AnnotationError, match="classes"):
        combine(boxes, WeakAnnotation(blobs_gt.geometry, 5, boxes=[Box(1, (0, 0, 0), (1, 1, 1))]))
    with pytest.raises(ValueError):
        combine()


def test_dispatcher_errors(blobs_gt):
    with pytest.raises(ValueError, match="Unknown annotation kind"):
        simulate(blobs_gt, NUM_CLASSES, "lasso")
    with pytest.raises(ValueError, match="jitter_mm"):
        simulate(blobs_gt, NUM_CLASSES, "scribbles", jitter_mm=2.0)
    full = simulate(blobs_gt, NUM_CLASSES, "full", seed=5)
    assert full.is_complete and annotated_fraction(full) == 1.0
