"""Small shared helpers: seeding, device choice, memory figures (psutil), JSON files read with type checks,
output paths checked before any work, atomic writes."""

from __future__ import annotations

import functools
import json
import logging
import os
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import psutil

logger = logging.getLogger(__name__)


def set_seed(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) — the one seed setter of WeakSeg."""
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def resolve_device(device: str = "auto"):
    """``"auto" | "cpu" | "cuda" | "cuda:N" | "mps"`` -> ``torch.device``; clear error when unavailable."""
    import torch

    device = (device or "auto").lower()
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"Device '{device}' was requested but CUDA is not available on this machine "
                             f"(torch {torch.__version__}). Use --device cpu or auto.")
        return torch.device(device)
    if device == "mps":
        if not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError("Device 'mps' was requested but Apple MPS is not available. Use --device cpu.")
        return torch.device("mps")
    if device == "cpu":
        return torch.device("cpu")
    raise ValueError(f"Unknown device '{device}'; use auto, cpu, cuda, cuda:N or mps.")


def describe_device(device) -> str:
    import torch

    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        return f"{props.name} ({props.total_memory / 2**30:.0f} GiB)"
    return f"CPU ({torch.get_num_threads()} threads)"


def current_rss_mb() -> float:
    """Resident set size of this process now, in MB (psutil: Linux, macOS and Windows)."""
    return psutil.Process().memory_info().rss / 2**20


def peak_rss_mb() -> float:
    """Peak resident set size of this process, in MB: Windows' peak working set, Linux's ``VmHWM``;
    elsewhere (macOS) the current RSS, a lower bound."""
    info = psutil.Process().memory_info()
    peak = getattr(info, "peak_wset", None)
    if peak is not None:
        return peak / 2**20
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return info.rss / 2**20


def read_json_object(path: str | os.PathLike, name: str) -> dict:
    """The JSON object in ``path``.  Errors name the file as ``name``: FileNotFoundError when it is
    absent, ValueError when it is not valid JSON (with the line) or holds something else than an object."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{name} is a folder; give the JSON file.")
    if not path.is_file():
        raise FileNotFoundError(f"{name} is missing ('{path}'); check the path.")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ValueError(f"{name} is not a text file (not UTF-8 JSON).") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name} is corrupted (invalid JSON at line {exc.lineno}: {exc.msg}).") from None
    if not isinstance(data, dict):
        raise ValueError(f"{name} must hold a JSON object {{...}}, got {describe_value(data)}.")
    return data


# ------------------------------------------------------------------------------ values read from files
def describe_value(value) -> str:
    """A JSON value as a message names it: ``the string "20"``, ``the number 64``, ``a list of 2 items``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f'the string "{shown}"'
    if isinstance(value, (int, float, np.integer, np.floating)):
        return f"the number {value}"
    if isinstance(value, (list, tuple)):
        return f"a list of {len(value)} item(s)"
    if isinstance(value, dict):
        return "an object {...}"
    return f"a {type(value).__name__}"


def is_integer(value) -> bool:
    """An integer value (JSON number without fraction), never a boolean."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def is_number(value) -> bool:
    """A finite real number, never a boolean."""
    return (isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))
            and bool(np.isfinite(value)))


def expect(ok: bool, where: str, expected: str, value) -> None:
    """``ValueError("<where> must be <expected>, got <value>.")`` unless ``ok``."""
    if not ok:
        raise ValueError(f"{where} must be {expected}, got {describe_value(value)}.")


# ------------------------------------------------------------------------------ output paths
def _nearest_existing(path: Path) -> Path:
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def probe_writable(folder: Path, what: str) -> None:
    """Create and delete a file in ``folder``: the one reliable test (``os.access`` misses read-only file
    systems and ACLs).  ``PermissionError`` naming ``what`` when it fails."""
    import tempfile

    try:
        with tempfile.TemporaryFile(dir=folder, prefix=".weakseg-probe-"):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise PermissionError(f"Cannot write {what}: '{folder}' is not writable ({reason}). Choose another "
                              f"location or fix its permissions.") from None


def check_output_path(path: str | os.PathLike, what: str, overwrite: bool = False, folder: bool = False,
                      inputs: Sequence[str | os.PathLike] = ()) -> Path:
    """Check, before any work, that ``path`` can be written: it is none of ``inputs`` (never, even with
    ``overwrite``), it does not exist unless ``overwrite`` (an empty folder counts as absent), it is a file
    or a folder as ``folder`` says, and the folder that will hold it is writable.  One-line errors naming
    ``what`` (e.g. "--out")."""
    path = Path(path)
    for source in inputs:
        source = Path(source)
        if source.exists() and path.exists() and os.path.samefile(source, path) or (
                path.resolve() == source.resolve()):
            raise ValueError(f"{what} '{path}' is an input of this command; writing it would destroy the "
                             f"input. Choose another output path.")
    if path.exists():
        if folder and not path.is_dir():
            raise ValueError(f"{what} '{path}' is a file; give a folder.")
        if not folder and path.is_dir():
            raise ValueError(f"{what} '{path}' is a folder; give a file name (e.g. {path / 'out.nii.gz'}).")
        if not overwrite and not (folder and not any(path.iterdir())):
            raise FileExistsError(f"{what} '{path}' exists; pass --overwrite to replace it or choose another "
                                  f"path.")
    anchor = _nearest_existing(path if folder else path.parent)
    if anchor.exists() and not anchor.is_dir():
        raise ValueError(f"{what} '{path}' cannot be created: '{anchor}' is a file, not a folder.")
    probe_writable(anchor, f"{what} '{path}'")
    return path


def check_distinct_outputs(outputs: Sequence[tuple[str, str | os.PathLike]]) -> None:
    """``ValueError`` when two outputs ``(what, path)`` of one command are the same file (one would
    overwrite the other)."""
    seen: dict[Path, str] = {}
    for what, path in outputs:
        key = Path(path).resolve()
        if key in seen:
            raise ValueError(f"{seen[key]} and {what} are both written to '{path}'; one would overwrite the "
                             f"other. Give them different names.")
        seen[key] = what


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` through a temporary file in the same folder and one rename: a reader sees the old
    file or the new one, never a part."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def atomic_write_json(path: str | os.PathLike, data) -> Path:
    return atomic_write_text(path, json.dumps(data, indent=2, default=_json_default))


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, (set, frozenset)):
        return sorted(obj)
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable")


def usable_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, psutil.cpu_count() or 1)


def configure_threads(requested: int | None = None, reserve: int = 0) -> int:
    """Set torch's CPU threads: ``requested`` when given; else ``OMP_NUM_THREADS`` when set (torchrun sets
    it per rank); else :func:`choose_num_threads`.  Returns the number of threads in use."""
    import torch

    if requested:
        torch.set_num_threads(int(requested))
    elif not os.environ.get("OMP_NUM_THREADS"):
        torch.set_num_threads(choose_num_threads(reserve))
    return torch.get_num_threads()


def choose_num_threads(reserve: int = 0, sample_s: float = 0.3) -> int:
    """Threads for torch: the cores not busy with other processes now, minus ``reserve``, at least 1.

    On a small machine, using every core while another process computes makes training several times
    slower than one thread (OpenMP threads wait for the one that shares its core); this counts busy cores
    over ``sample_s`` seconds and leaves them alone.  ``reserve`` keeps cores free for a GUI (Slicer).
    """
    cores = usable_cores()
    busy = psutil.cpu_percent(interval=sample_s) / 100.0 * (psutil.cpu_count() or cores)
    free = cores - int(busy + 0.5)
    threads = max(1, min(cores, free) - max(0, reserve))
    logger.debug("Threads: %d of %d cores (%.1f busy, %d reserved)", threads, cores, busy, reserve)
    return threads


@functools.cache
def cpu_supports_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slower."""
    import torch

    for probe in ("_is_avx512_bf16_supported", "_is_amx_tile_supported"):
        check = getattr(torch.cpu, probe, None)
        try:
            if check is not None and check():
                return True
        except RuntimeError:  # pragma: no cover - a probe missing from this torch build
            continue
    return False
