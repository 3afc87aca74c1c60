"""A trained model: a folder with ``model.json`` (config, plan, preprocessing, classes, training
summary, the SHA-256 of the weights) and ``weights.pt`` (a plain state dict, loaded with
``torch.load(weights_only=True)`` so a model file can never execute code).

A model folder is always consistent: it is written as a whole into a temporary folder beside it and
put in place by one atomic exchange (:func:`replace_folder`), so a reader sees the old model or the
new one, never new weights under an old description.  While a run writes a folder it holds a lock
file beside it (:class:`ModelFolderLock`; a lock whose process is gone is taken over).  Loading checks
that ``model.json`` and the weights agree (digest, classes, plan) with a clear error.

Inference runs through :mod:`WeakSegLib.inference` (sliding window, flip test-time augmentation,
ensembling, largest-component post-processing); ``Model.predict`` is its entry point for one model.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import glob
import hashlib
import json
import logging
import os
import re
import shutil
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
import psutil
import torch

from WeakSegLib.config import TrainConfig
from WeakSegLib.data.dataset import ClassInfo
from WeakSegLib.data.volume import Volume
from WeakSegLib.inference.postprocessing import keep_largest_component
from WeakSegLib.inference.predictor import Prediction, Predictor, predict_ensemble
from WeakSegLib.jobs.protocol import MODEL_JSON
from WeakSegLib.networks.planning import Plan, build_network
from WeakSegLib.transforms.preprocessing import Preprocessing
from WeakSegLib.utils import atomic_write_json, describe_value, is_integer, read_json_object, resolve_device

logger = logging.getLogger(__name__)

WEIGHTS = "weights.pt"
CHECKPOINT = "checkpoint.pt"
HISTORY = "history.json"
FORMAT_VERSION = 1
# What a model folder holds; a folder with anything else is not replaced as a whole (the file managers'
# own files aside).
MODEL_FILES = frozenset({MODEL_JSON, WEIGHTS, CHECKPOINT, HISTORY, ".DS_Store", "Thumbs.db", "desktop.ini"})

# Inference names, re-exported: ``from WeakSegLib.model import predict_ensemble`` and ``WeakSegLib.Prediction``.
__all__ = ["Model", "ModelFolderLock", "Prediction", "keep_largest_component", "predict_ensemble",
           "replace_folder", "save_state_dict_atomic"]


def save_state_dict_atomic(state: dict, path: Path) -> None:
    """``torch.save`` through a temporary file and one rename (a reader never sees half a file)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ------------------------------------------------------------------ the model folder: lock and atomic swap
def _lock_path(folder: Path) -> Path:
    return folder.parent / f".{folder.name}.lock"


def _process_start(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        return None


def _lock_owner_alive(owner: Mapping) -> bool:
    """Whether the process that wrote a lock still runs (same host, same pid, same start time)."""
    if owner.get("host") != socket.gethostname():
        return True                     # another machine: its process cannot be checked; assume it runs
    started = _process_start(int(owner.get("pid", -1)))
    return started is not None and abs(started - float(owner.get("started", 0.0))) < 1.0


def _create_exclusively(path: Path, text: str) -> None:
    """Create ``path`` holding ``text``, or raise ``FileExistsError``; the file never exists empty or half
    written (a kill between creating and writing must not leave a lock that names no owner): the text goes
    to a private file first, which is then hard-linked to ``path`` (a link fails when ``path`` exists).
    Where hard links are not supported, an exclusive create followed by the write."""
    private = path.with_name(f"{path.name}.tmp{os.getpid()}.{threading.get_ident()}")
    try:
        private.write_text(text)
        try:
            os.link(private, path)
            return
        except FileExistsError:
            raise
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK):
                raise
    finally:
        private.unlink(missing_ok=True)
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    with os.fdopen(fd, "w") as f:
        f.write(text)


class ModelFolderLock:
    """``with ModelFolderLock(folder): ...`` while a run writes a model folder.

    The lock is the file ``.<name>.lock`` beside the folder, created exclusively with the owner's pid,
    host and process start time.  A second run on the same folder gets a clear ``FileExistsError``; a lock
    left by a process that no longer runs (killed) is taken over with a warning.  Re-entrant within one
    process.  Creating the lock also proves, before any work, that the folder's parent is writable.
    """

    _held: dict[Path, int] = {}

    def __init__(self, folder: str | os.PathLike):
        self.folder = Path(folder).resolve()
        self.path = _lock_path(self.folder)

    def acquire(self) -> ModelFolderLock:
        if self._held.get(self.path):
            self._held[self.path] += 1
            return self
        parent = self.folder.parent
        if parent.exists() and not parent.is_dir():
            raise ValueError(f"Cannot write the model folder '{self.folder}': '{parent}' is a file.")
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PermissionError(f"Cannot create the model folder '{self.folder}' ({exc.strerror or exc}). "
                                  f"Choose another --out.") from None
        owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": _process_start(os.getpid()),
                 "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(2):
            try:
                _create_exclusively(self.path, json.dumps(owner))
            except FileExistsError:
                try:
                    other = json.loads(self.path.read_text() or "{}")
                except (OSError, ValueError):
                    other = {}
                try:
                    just_created = not other and time.time() - self.path.stat().st_mtime < 10.0
                except OSError:
                    just_created = False
                if just_created or other and _lock_owner_alive(other):
                    raise FileExistsError(
                        f"The model folder '{self.folder}' is being written by another run (pid {other.get('pid')} "
                        f"on {other.get('host')}, since {other.get('since')}). Wait for it to finish or choose "
                        f"another --out (if no such run exists, delete '{self.path}').") from None
                logger.warning("Taking over the lock of '%s' left by a run that no longer runs (pid %s).",
                               self.folder, other.get("pid"))
                self.path.unlink(missing_ok=True)
                continue
            except OSError as exc:
                raise PermissionError(f"Cannot write the model folder '{self.folder}': '{parent}' is not "
                                      f"writable ({exc.strerror or exc}). Choose another --out.") from None
            break
        else:
            raise FileExistsError(f"Could not lock the model folder '{self.folder}' ('{self.path}' keeps "
                                  f"reappearing).")
        self._held[self.path] = 1
        _remove_leftovers(self.folder)
        return self

    def release(self) -> None:
        count = self._held.get(self.path, 0)
        if count > 1:
            self._held[self.path] = count - 1
            return
        self._held.pop(self.path, None)
        self.path.unlink(missing_ok=True)

    def __enter__(self) -> ModelFolderLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def _staging_name(folder: Path, kind: str) -> Path:
    return folder.parent / f".{folder.name}.{kind}-{os.getpid()}"


# Temporary files of atomic writes (``.<name>.tmp<pid>``, see :func:`save_state_dict_atomic`).
_TEMP_FILE = re.compile(r"^\..+\.tmp(\d+)")


def _remove_leftovers(folder: Path) -> None:
    """Temporary folders and files of earlier runs on ``folder`` whose process is gone (killed while
    writing)."""
    for leftover in folder.parent.glob(f".{glob.escape(folder.name)}.*-*"):
        kind, _, pid = leftover.name.rpartition("-")
        if leftover.is_dir() and kind.endswith((".new", ".old")) and pid.isdigit() and (
                int(pid) == os.getpid() or not psutil.pid_exists(int(pid))):
            shutil.rmtree(leftover, ignore_errors=True)
    for leftover in folder.parent.glob(f".{glob.escape(folder.name)}.lock.tmp*"):
        pid = leftover.name.rpartition(".lock.tmp")[2].partition(".")[0]
        if pid.isdigit() and not psutil.pid_exists(int(pid)):
            leftover.unlink(missing_ok=True)      # the private file of a lock whose writer was killed
    if folder.is_dir():
        for leftover in folder.iterdir():
            match = _TEMP_FILE.match(leftover.name)
            if match and leftover.is_file() and not psutil.pid_exists(int(match.group(1))):
                leftover.unlink(missing_ok=True)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``, macOS ``renamex_np``);
    False where the system or file system cannot."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        if sys.platform.startswith("linux") and hasattr(libc, "renameat2"):
            at_fdcwd, rename_exchange = -100, 2
            return libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0
        if sys.platform == "darwin" and hasattr(libc, "renamex_np"):
            rename_swap = 2
            return libc.renamex_np(os.fsencode(a), os.fsencode(b), rename_swap) == 0
    except OSError:
        pass
    return False


def replace_folder(staged: Path, folder: Path) -> None:
    """Put the complete folder ``staged`` in the place of ``folder`` in one atomic step: a reader (or a
    kill at any instant) sees the old folder or the new one.  ``staged`` must lie in ``folder``'s parent."""
    if not folder.exists():
        os.rename(staged, folder)
        return
    if _exchange(staged, folder):
        shutil.rmtree(staged, ignore_errors=True)          # ``staged`` now holds the old folder
        return
    # No atomic exchange here (Windows, some network file systems): two renames; a kill between them leaves
    # ``folder`` absent and both complete versions beside it, which :func:`recover_folder` puts back.
    old = _staging_name(folder, "old")
    os.rename(folder, old)
    os.rename(staged, folder)
    shutil.rmtree(old, ignore_errors=True)


def recover_folder(folder: Path) -> None:
    """After a kill between the two renames of :func:`replace_folder`'s fallback: the newest complete
    version beside an absent ``folder`` goes back in place."""
    if folder.exists():
        return
    candidates = [p for kind in ("new", "old") for p in folder.parent.glob(f".{folder.name}.{kind}-*")
                  if (p / MODEL_JSON).is_file() and (p / WEIGHTS).is_file()]
    if candidates:
        os.rename(candidates[0], folder)
        logger.warning("Restored the model folder '%s' from '%s' (a write was interrupted).", folder,
                       candidates[0].name)


def check_model_folder(folder: str | os.PathLike, what: str = "The model folder") -> Path:
    """``folder`` can be replaced by a model: absent, empty, or holding only model files (never a folder
    of other files, e.g. a dataset or a home folder)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ValueError(f"{what} '{folder}' is a file; give a folder.")
    if folder.is_dir():
        foreign = sorted(p.name for p in folder.iterdir() if p.name not in MODEL_FILES
                         and not _TEMP_FILE.match(p.name))
        if foreign:
            shown = ", ".join(foreign[:4]) + (f" and {len(foreign) - 4} more" if len(foreign) > 4 else "")
            raise ValueError(f"{what} '{folder}' holds files that are not part of a WeakSeg model ({shown}); a "
                             f"model folder is replaced as a whole, so choose a new or empty folder.")
    return folder


def write_model_folder(folder: str | os.PathLike, writers: Mapping[str, Callable[[Path], None]]) -> Path:
    """Write a model folder as a whole: each ``writers[name](path)`` writes one file into a temporary folder
    beside ``folder``, then :func:`replace_folder` puts it in place.  Files of the old folder not in
    ``writers`` (an old checkpoint) are gone with it.  Holds the folder's lock meanwhile."""
    folder = Path(folder).resolve()
    with ModelFolderLock(folder):
        check_model_folder(folder)
        staged = _staging_name(folder, "new")
        if staged.exists():
            shutil.rmtree(staged)
        staged.mkdir()
        try:
            for name, write in writers.items():
                write(staged / name)
            replace_folder(staged, folder)
        finally:
            if staged.exists():
                shutil.rmtree(staged, ignore_errors=True)
    return folder


class Model:
    """Network + plan + preprocessing + classes. ``Model.load(path).predict(volume)``."""

    def __init__(self, network: torch.nn.Module, plan: Plan, preprocessing: Preprocessing,
                 classes: list[ClassInfo], config: TrainConfig | None = None, summary: dict | None = None,
                 calibration: dict | None = None):
        self.network = network
        self.plan = plan
        self.preprocessing = preprocessing
        self.classes = classes
        self.config = config
        self.summary = summary or {}
        # {"offsets": [one per class], ...}: added to the log-probabilities of every prediction
        # (WeakSegLib.inference.calibration, ``weakseg calibrate``); None: the network's own probabilities.
        self.calibration = calibration

    @property
    def class_offsets(self) -> list[float] | None:
        """The calibrated offsets of each class's log-probability, or None."""
        return None if not self.calibration else list(self.calibration["offsets"])

    @property
    def class_names(self) -> list[str]:
        return [c.name for c in self.classes]

    # ------------------------------------------------------------------ persistence
    def metadata(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "classes": [c.to_dict() for c in self.classes],
            "plan": self.plan.to_dict(),
            "preprocessing": self.preprocessing.to_dict(),
            "config": None if self.config is None else self.config.to_dict(),
            "summary": self.summary,
            **({"calibration": self.calibration} if self.calibration else {}),
        }

    def save(self, folder: str | os.PathLike, extra: Mapping[str, Callable[[Path], None]] | None = None) -> Path:
        """Write the model folder as a whole (atomic, see the module docstring); ``extra`` adds files
        (name -> writer of that path), e.g. the trainer's checkpoint and history.  Non-finite weights are
        refused: they would predict nothing."""
        state = {k: v.detach().cpu() for k, v in self.network.state_dict().items()}
        bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise ValueError(f"The model's weights are not finite ({len(bad)} tensor(s), e.g. {bad[0]}); it is "
                             f"not saved.")
        meta = self.metadata()

        def write_weights(path: Path) -> None:
            torch.save(state, path)
            meta["weights_sha256"] = file_sha256(path)

        writers: dict[str, Callable[[Path], None]] = {WEIGHTS: write_weights}
        writers.update(extra or {})
        writers[MODEL_JSON] = lambda path: atomic_write_json(path, meta)    # last: it names the weights' digest
        return write_model_folder(folder, writers)

    @classmethod
    def load(cls, folder: str | os.PathLike, device: str = "cpu") -> Model:
        """Load a model folder.  The weights are read with ``weights_only=True`` (a model file cannot run
        code); ``model.json`` is type-checked and must agree with the weights, else one clear error."""
        folder = Path(folder)
        recover_folder(folder.resolve())
        meta_path = folder / MODEL_JSON
        if not meta_path.exists():
            raise FileNotFoundError(f"'{folder}' is not a WeakSeg model folder (no {MODEL_JSON}). Train one with "
                                    f"'weakseg train' or point to the folder it wrote.")
        meta = read_json_object(meta_path, f"Model description '{meta_path}'")
        version = meta.get("format_version", 0)
        if not is_integer(version):
            raise ValueError(f"'{meta_path}': 'format_version' must be an integer, got {describe_value(version)}.")
        if version > FORMAT_VERSION:
            raise ValueError(f"Model '{folder}' was written by a newer WeakSeg (format {version}); "
                             f"upgrade WeakSegLib.")
        plan, classes, preprocessing, config = _parse_metadata(meta, meta_path)
        weights = folder / WEIGHTS
        if not weights.is_file():
            raise FileNotFoundError(f"Model '{folder}' has no {WEIGHTS}; the folder is incomplete. Train it again.")
        try:
            state = torch.load(weights, map_location="cpu", weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unpickling error means a bad file
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ValueError(f"Could not load weights from '{weights}' (a model file may hold only tensors; "
                             f"{first[:200]}).") from None
        digest = meta.get("weights_sha256")
        if digest is not None and digest != file_sha256(weights):
            raise ValueError(f"'{weights}' is not the file '{meta_path}' describes (its SHA-256 differs): the "
                             f"weights were replaced or damaged. Restore the model folder as a whole or train again.")
        network = build_network(plan)
        _check_weights_match(state, network, plan, len(classes), folder)
        network.load_state_dict(state)
        network.to(resolve_device(device)).eval()
        return cls(network, plan, preprocessing, classes, config, meta.get("summary") or {},
                   _parse_calibration(meta.get("calibration"), len(classes), meta_path))

    # ------------------------------------------------------------------ inference
    def input_warnings(self, volume: Volume, name: str = "image") -> list[str]:
        """What looks wrong about segmenting ``volume`` with this model (one sentence each); a channel
        count the network cannot take is an error."""
        if volume.num_channels != self.plan.in_channels:
            raise ValueError(f"The {name} has {volume.num_channels} channel(s) but the model was trained on "
                             f"{self.plan.in_channels} ({', '.join(self.preprocessing.channel_names or []) or '?'}); "
                             f"give one image per channel with --channels.")
        warnings = []
        if self.plan.dims == 2 and volume.shape[0] > 1:
            tz, ty, tx = self.plan.target_spacing_zyx
            sx, sy, sz = volume.geometry.spacing
            if tz / min(ty, tx) >= 2.0 and sz / min(sx, sy) < 1.5:
                warnings.append(
                    f"The {name} has near-isotropic voxels ({sx:.3g} x {sy:.3g} x {sz:.3g} mm) but the model is 2D, "
                    f"trained on slices {tz:.3g} mm apart: it is segmented slice by slice along z, which may not be "
                    f"what the model learnt. A 3D model fits such volumes better.")
        return warnings

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def to(self, device: str | torch.device) -> Model:
        self.network.to(resolve_device(device) if isinstance(device, str) else device)
        return self

    def predictor(self, sw_batch_size: int = 4, overlap: float = 0.25) -> Predictor:
        """The sliding-window predictor of this model's network (bf16 as the training config asked)."""
        bf16 = self.config.bf16 if self.config is not None else None
        return Predictor(self.network, self.plan, self.device, bf16, sw_batch_size, overlap)

    def network_probabilities(self, image: torch.Tensor, tta: bool = False, sw_batch_size: int = 4,
                              overlap: float = 0.25) -> torch.Tensor:
        """(C_in, z, y, x) on the network grid -> softmax probabilities (K, z, y, x); leaves the network in eval."""
        self.network.eval()
        return self.predictor(sw_batch_size, overlap).probabilities(image, tta=tta)

    def predict(self, volume: Volume, tta: bool = False, return_probabilities: bool = False,
                largest_component: bool | str = False) -> Prediction:
        """Labels (and optionally probabilities) of ``volume`` on its own grid (see :func:`predict_ensemble`)."""
        return predict_ensemble([self], volume, tta, return_probabilities, largest_component)


def _parse_metadata(meta: dict, meta_path: Path) -> tuple[Plan, list[ClassInfo], Preprocessing, TrainConfig | None]:
    """The parts of ``model.json``, type-checked: one line naming the file and the key."""
    where = f"'{meta_path}'"
    for key, kind in (("plan", dict), ("preprocessing", dict), ("classes", list)):
        if not isinstance(meta.get(key), kind):
            raise ValueError(f"{where}: '{key}' must be {'an object' if kind is dict else 'a list'}, got "
                             f"{describe_value(meta.get(key))}; the file is damaged. Train the model again.")
    classes = []
    for i, c in enumerate(meta["classes"]):
        if not (isinstance(c, dict) and is_integer(c.get("id")) and isinstance(c.get("name"), str)
                and isinstance(c.get("color"), list) and len(c["color"]) == 3):
            raise ValueError(f"{where}: classes[{i}] must be {{\"id\": int, \"name\": str, \"color\": [r, g, b]}}, "
                             f"got {describe_value(c)}.")
        classes.append(ClassInfo(int(c["id"]), c["name"], tuple(int(v) for v in c["color"])))
    try:
        plan = Plan.from_dict(meta["plan"])
        preprocessing = Preprocessing.from_dict(meta["preprocessing"])
    except TypeError as exc:
        raise ValueError(f"{where}: the plan or preprocessing has missing or unknown entries ({exc}); the file "
                         f"is damaged or from another program.") from None
    for key in ("dims", "in_channels", "num_classes", "batch_size"):
        if not is_integer(getattr(plan, key)):
            raise ValueError(f"{where}: plan.{key} must be an integer, got {describe_value(getattr(plan, key))}.")
    if plan.num_classes != len(classes):
        raise ValueError(f"{where} lists {len(classes)} classes but its plan has {plan.num_classes} outputs; the file "
                         f"is inconsistent. Train the model again.")
    config = None
    if meta.get("config"):
        config = TrainConfig.from_dict(meta["config"], f"'{meta_path}' (config)")
    return plan, classes, preprocessing, config


def _parse_calibration(calibration, num_classes: int, meta_path: Path) -> dict | None:
    """``model.json``'s ``calibration`` (None when absent), type-checked."""
    if calibration is None:
        return None
    offsets = calibration.get("offsets") if isinstance(calibration, dict) else None
    if not (isinstance(offsets, list) and len(offsets) == num_classes and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) for v in offsets)):
        raise ValueError(f"'{meta_path}': 'calibration' must be {{\"offsets\": [{num_classes} finite numbers], ...}}, "
                         f"got {describe_value(calibration)}; calibrate the model again (weakseg calibrate).")
    return dict(calibration, offsets=[float(v) for v in offsets])


def _check_weights_match(state, network: torch.nn.Module, plan: Plan, num_classes: int, folder: Path) -> None:
    """The weights fit the network ``model.json`` describes (layer names and shapes, class count)."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"'{folder / WEIGHTS}' does not hold a state dict of tensors.")
    expected = network.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if not (missing or unexpected or shapes):
        return
    out_key = next((k for k in shapes if expected[k].shape[0] == num_classes and state[k].ndim >= 3), None)
    outputs = int(state[out_key].shape[0]) if out_key is not None else None
    detail = (f"the weights have {outputs} output classes, model.json lists {num_classes}"
              if outputs is not None and outputs != num_classes else
              f"{len(missing)} layer(s) missing, {len(unexpected)} unexpected, {len(shapes)} of another shape "
              f"than the {plan.dims}D plan")
    raise ValueError(f"The weights in '{folder}' do not belong to its model.json ({detail}): the folder mixes two "
                     f"models. Train it again or restore the whole folder.")
