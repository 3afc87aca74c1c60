"""The synthetic phantom: deterministic, anisotropic, nested classes, learnable contrasts, fast."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage

from WeakSegLib.data.dataset import Case, Dataset, load_dataset
from WeakSegLib.data.phantom import PHANTOM_CLASSES, make_phantom, make_phantom_dataset, write_phantom_dataset
from WeakSegLib.data.volume import Volume


@pytest.fixture(scope="module")
def case() -> Case:
    return make_phantom(0)


def test_case_structure_and_geometry(case):
    assert isinstance(case, Case) and case.annotation is None
    assert case.image.array.dtype == np.float32 and case.ground_truth.array.dtype == np.int16
    assert case.image.shape == (24, 96, 96)
    g = case.image.geometry
    assert g.spacing == (1.2, 1.2, 3.0) and g.anisotropy == pytest.approx(2.5)
    assert all(abs(o) > 1.0 for o in g.origin)  # a non-trivial origin
    assert case.ground_truth.geometry == g
    assert set(np.unique(case.ground_truth.array)) == {0, 1, 2, 3}
    assert [c.name for c in PHANTOM_CLASSES] == ["Background", "Outer", "Inner", "Lesion"]
    assert len({c.color for c in PHANTOM_CLASSES}) == 4


def test_deterministic_and_seed_dependent(case):
    again = make_phantom(0)
    np.testing.assert_array_equal(again.image.array, case.image.array)
    np.testing.assert_array_equal(again.ground_truth.array, case.ground_truth.array)
    assert again.image.geometry == case.image.geometry
    other = make_phantom(1)
    assert not np.array_equal(other.ground_truth.array, case.ground_truth.array)


@pytest.mark.parametrize("seed", [0, 5, 17, 123])
def test_anatomy_nested_and_separated(seed):
    gt = make_phantom(seed).ground_truth.array
    counts = np.bincount(gt.ravel(), minlength=4)
    assert counts[1] > counts[3] and counts[2] > counts[3] > 30  # the lesion is small but real
    inner = gt == 2
    # Inner is enclosed by Outer: its neighbours (6-connected) are Inner or Outer only.
    ring = ndimage.binary_dilation(inner) & ~inner
    assert set(np.unique(gt[ring])) <= {1}
    # The lesion touches neither Outer nor Inner and is one compact object.
    lesion = gt == 3
    near = ndimage.binary_dilation(lesion, iterations=2) & ~lesion
    assert set(np.unique(gt[near])) == {0}
    assert ndimage.label(lesion)[1] == 1


@pytest.mark.parametrize("seed", [0, 9])
def test_contrast_is_well_above_noise(seed):
    c = make_phantom(seed)
    image, gt = c.image.array, c.ground_truth.array
    cores = {k: ndimage.binary_erosion(gt == k, iterations=1) for k in (1, 2, 3)}
    body = ndimage.binary_erosion((gt == 0) & (image > 0.2), iterations=2) & \
        ~ndimage.binary_dilation(gt > 0, iterations=3)
    means = {k: float(image[m].mean()) for k, m in cores.items()}
    means[0] = float(image[body].mean())
    noise = float(np.median([image[m].std() for m in list(cores.values())[:2] + [body]]))
    for a, b in ((0, 1), (1, 2), (0, 3)):  # neighbouring regions
        assert abs(means[a] - means[b]) > 3 * noise, (a, b, means, noise)
    assert len({round(v, 2) for v in means.values()}) == 4


def test_generation_is_fast():
    make_phantom(100)  # warm-up
    times = []
    for seed in range(3):
        t = time.perf_counter()
        make_phantom(seed)
        times.append(time.perf_counter() - t)
    assert min(times) < 0.3


def test_other_shapes_and_ill_inputs():
    small = make_phantom(2, shape=(12, 48, 40), spacing=(2.0, 2.0, 4.0))
    assert small.image.shape == (12, 48, 40)
    assert set(np.unique(small.ground_truth.array)) == {0, 1, 2, 3}
    with pytest.raises(ValueError, match="shape"):
        make_phantom(0, shape=(4, 96, 96))
    with pytest.raises(ValueError, match="spacing"):
        make_phantom(0, spacing=(1.0, 0.0, 1.0))


def test_dataset_varied_and_deterministic():
    ds = make_phantom_dataset(3, seed=4)
    assert isinstance(ds, Dataset) and len(ds) == 3 and ds.class_names[1:] == ["Outer", "Inner", "Lesion"]
    assert [c.id for c in ds] == ["phantom_000", "phantom_001", "phantom_002"]
    centroids = [tuple(np.round(ndimage.center_of_mass(c.ground_truth.array == 2), 1)) for c in ds]
    assert len(set(centroids)) == 3
    again = make_phantom_dataset(3, seed=4)
    for a, b in zip(ds, again, strict=True):
        np.testing.assert_array_equal(a.image.array, b.image.array)
    with pytest.raises(ValueError):
        make_phantom_dataset(0)


def test_written_dataset_loads(tmp_path):
    manifest = write_phantom_dataset(tmp_path / "ph", n_cases=2, seed=1, kind="tags+sizes", margin=0.2,
                                     shape=(12, 48, 48))
    ds = load_dataset(manifest.parent)
    assert len(ds) == 2 and ds.num_classes == 4 and ds.name == "phantom"
    for c in ds:
        assert isinstance(c.ground_truth, Volume) and c.annotation is not None
        ml = c.image.geometry.voxel_volume_ml
        for k, (lo, hi) in c.annotation.size_ranges_ml.items():
            size = np.count_nonzero(c.ground_truth.array == k) * ml
            assert lo == pytest.approx(0.8 * size, rel=1e-6) and hi == pytest.approx(1.2 * size, rel=1e-6)
        assert c.annotation.tags == {1: True, 2: True, 3: True}
