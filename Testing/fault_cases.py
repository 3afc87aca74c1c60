"""Helpers of ``test_faults.py``: a small real workspace (phantom dataset, trained models, image files), the
``weakseg`` command run as a real subprocess, checksums of every file, and damaged files made on purpose."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (8, 40, 40)          # (z, y, x) voxels of every phantom case: seconds per training step on one core
TRAIN = ["--iterations", "1", "--progress", "none"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def error_lines(self) -> list[str]:
        """stderr lines that are not log records (``INFO``/``WARNING`` lines of the library)."""
        return [ln for ln in self.stderr.splitlines() if ln.strip() and not ln.startswith(("INFO ", "WARNING ",
                                                                                              "DEBUG "))]


def weakseg(*args: str | os.PathLike, cwd: Path, timeout: float = 300) -> Result:
    """``python -m WeakSegLib ARGS`` in ``cwd``, as a user runs it."""
    proc = subprocess.run([sys.executable, "-m", "WeakSegLib", *map(str, args)], cwd=cwd, env=ENV,
                          capture_output=True, text=True, timeout=timeout)
    return Result(proc.returncode, proc.stdout, proc.stderr)


def checksums(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` (relative path -> digest)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def build_base(folder: Path) -> None:
    """The files every row starts from (copied per row): ``ds/`` a 2-case phantom dataset with scribbles,
    ``ds_boxes/`` the same cases with boxes, ``model/`` a 2D model trained for 2 steps on ``ds``,
    ``model5/`` a model of another class count, ``img.nii.gz`` an image, ``gt.nii.gz`` its ground truth."""
    from WeakSegLib.data.dataset import ClassInfo, Dataset, load_dataset
    from WeakSegLib.data.phantom import write_phantom_dataset
    from WeakSegLib.training import TrainConfig, train

    folder.mkdir(parents=True, exist_ok=True)
    write_phantom_dataset(folder / "ds", n_cases=2, seed=0, shape=SHAPE)
    write_phantom_dataset(folder / "ds_boxes", n_cases=2, seed=0, kind="boxes", shape=SHAPE)
    shutil.copyfile(folder / "ds" / "phantom_000.nii.gz", folder / "img.nii.gz")
    shutil.copyfile(folder / "ds" / "phantom_000_gt.nii.gz", folder / "gt.nii.gz")
    config = TrainConfig(minutes=None, iterations=2, seed=0, dims=2, base_filters=4, batch_size=2,
                         propagate_scribbles=False, checkpoint_every=1, num_threads=1)
    data = load_dataset(folder / "ds")
    train(data, config, folder / "model")
    five = Dataset([*data.classes, ClassInfo(4, "Extra", (1, 2, 3))], data.cases, data.channels, data.modality,
                   {}, "five")
    for case in five.cases:
        case.annotation.num_classes = 5
    train(five, config, folder / "model5")


def write_config(path: Path, options) -> Path:
    path.write_text(json.dumps(options) if not isinstance(options, str) else options)
    return path


def edit_json(path: Path, change) -> None:
    """Apply ``change(data)``, which edits the content in place (its return value is ignored), to a JSON
    file."""
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def uncompressed_copy(src: Path, dst: Path) -> Path:
    """A ``.nii`` copy of a ``.nii.gz`` file (bytes unchanged, only decompressed)."""
    dst.write_bytes(gzip.decompress(src.read_bytes()))
    return dst


def set_nifti_spacing(path: Path, spacing_xyz: tuple[float, float, float], header_only: bool = True) -> None:
    """Write ``spacing_xyz`` into the pixdim of a NIfTI-1 file (``.nii`` or ``.nii.gz``) and, with
    ``header_only``, drop its qform/sform so that readers use pixdim (as old Analyze-style files do)."""
    compressed = path.name.endswith(".gz")
    raw = bytearray(gzip.decompress(path.read_bytes()) if compressed else path.read_bytes())
    struct.pack_into("<3f", raw, 80, *spacing_xyz)
    if header_only:
        struct.pack_into("<hh", raw, 252, 0, 0)
    path.write_bytes(gzip.compress(bytes(raw)) if compressed else bytes(raw))


def write_image(path: Path, array: np.ndarray, spacing=(1.2, 1.2, 3.0)) -> Path:
    from WeakSegLib.data.volume import Geometry, Volume, write_volume

    return write_volume(Volume(array, Geometry(array.shape[:3], spacing)), path)


class RunsCode:
    """Unpickling this would create a folder: a model file must never get that far."""

    def __init__(self, target: str):
        self.target = target

    def __reduce__(self):
        return (os.mkdir, (self.target,))


def start_training(ws: Path, out: str, *extra: str) -> subprocess.Popen:
    write_config(ws / "slow.json", {"checkpoint_every": 2, "base_filters": 4, "propagate_scribbles": False,
                                    "dims": 2})
    return subprocess.Popen([sys.executable, "-m", "WeakSegLib", "train", "--dataset", "ds", "--out", out,
                             "--config", "slow.json", "--progress", "none", *extra], cwd=ws, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(path: Path, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.05)


SAVER = textwrap.dedent("""
    import sys
    from WeakSegLib.data.dataset import default_classes
    from WeakSegLib.model import Model
    from WeakSegLib.networks.planning import Plan, build_network
    from WeakSegLib.transforms.preprocessing import Preprocessing
    models = []
    for k in (3, 5):
        plan = Plan(2, [16, 16], 1, [3.0, 1.0, 1.0], [2, 4, 8], [[1, 1], [2, 2], [2, 2]], [[3, 3]] * 3, 1, k)
        models.append(Model(build_network(plan), plan, Preprocessing("MR", 2, [3.0, 1.0, 1.0]),
                            default_classes([f"c{i}" for i in range(k)])))
    models[0].save(sys.argv[1])
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        models[i % 2].save(sys.argv[1])
""")


class BlowUp:
    """A callback that blows the weights up (finite, 1e8x) at the end of one iteration, as a diverging run."""

    def __init__(self, at: int):
        self.at = at

    def on_iteration_end(self, trainer):
        if trainer.iteration == self.at:
            with torch.no_grad():
                for p in trainer.network.parameters():
                    p.mul_(1e8)
