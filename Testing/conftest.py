"""Shared pytest fixtures: the real-data folder (skipped with a reason when absent), small volumes."""

from __future__ import annotations

import os
import sys
from pathlib import Path

# WeakSegSlicerLib, the Slicer module's helpers, lives beside the module in WeakSeg/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "WeakSeg"))

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("WEAKSEG_SHARED_DATA", ROOT.parent / "shared" / "data"))

# Keep the suite polite on small CI machines.
os.environ.setdefault("OMP_NUM_THREADS", "2")


DATA_FIXTURES = {"acdc_dir", "la_dir", "brats_dir", "misc_dir"}


def pytest_collection_modifyitems(config, items):
    """Every test that reads ../shared/data carries the ``data`` marker (``-m "not data"`` leaves them out)."""
    for item in items:
        if DATA_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.data)


def _data_dir(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data '{path}' is absent (set WEAKSEG_SHARED_DATA to the shared data folder); "
                    f"this test needs ../shared/data/{name}")
    return path


@pytest.fixture(scope="session")
def acdc_dir() -> Path:
    return _data_dir("acdc")


@pytest.fixture(scope="session")
def la_dir() -> Path:
    return _data_dir("la")


@pytest.fixture(scope="session")
def brats_dir() -> Path:
    return _data_dir("brats")


@pytest.fixture(scope="session")
def misc_dir() -> Path:
    return _data_dir("misc")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def oblique_geometry():
    from WeakSegLib.data.volume import Geometry

    theta = np.deg2rad(20.0)
    c, s = np.cos(theta), np.sin(theta)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.array(
        [[1.0, 0.0, 0.0], [0.0, np.cos(0.3), -np.sin(0.3)], [0.0, np.sin(0.3), np.cos(0.3)]])
    return Geometry((6, 10, 12), (0.7, 0.9, 3.5), (-12.5, 30.25, 7.0), tuple(rot.ravel()))
